"""The invertible building blocks: exact inverse, log-det against a numerical Jacobian, equivalence with
FrEIA's AllInOneBlock, training through a Tanh-ended subnet, safetensors and pickle round-trips."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
from safetensors.torch import load, save
from torch import nn

from ad_flow.coupling import AffineCouplingBlock, SequentialFlow


def conv_subnet(in_channels: int, out_channels: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, out_channels, 3, padding=1))


def tanh_subnet(in_channels: int, out_channels: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_channels, 8), nn.ReLU(), nn.Linear(8, out_channels), nn.Tanh())


def map_flow(channels: int = 5, soft: bool = False, seed: int = 0) -> SequentialFlow:
    torch.manual_seed(seed)
    return SequentialFlow(AffineCouplingBlock(channels, conv_subnet, soft_permutation=soft, seed=seed + i)
                          for i in range(3))


def randomise(module: nn.Module) -> None:
    """Move parameters off their initial values so the checks exercise non-trivial scales and shifts."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))


@pytest.mark.parametrize("soft", [False, True])
def test_inverse_recovers_input(soft: bool) -> None:
    flow = map_flow(soft=soft)
    randomise(flow)
    x = torch.randn(2, 5, 4, 4)
    z, log_det = flow(x)
    x_back, log_det_back = flow(z, reverse=True)
    assert not torch.allclose(z, x)
    torch.testing.assert_close(x_back, x, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(log_det_back, -log_det, rtol=1e-4, atol=1e-4)


def finite_difference_jacobian(f, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Central differences of f at x (flat float64 vectors)."""
    columns = []
    for i in range(x.numel()):
        step = torch.zeros_like(x)
        step[i] = eps
        columns.append((f(x + step) - f(x - step)) / (2 * eps))
    return torch.stack(columns, 1)


@pytest.mark.parametrize("soft", [False, True])
def test_log_det_matches_numerical_jacobian(soft: bool) -> None:
    flow = map_flow(channels=4, soft=soft).double()
    randomise(flow)
    x = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        jacobian = finite_difference_jacobian(lambda v: flow(v.view(1, 4, 2, 2))[0].reshape(-1), x.reshape(-1))
        _, expected = torch.linalg.slogdet(jacobian)
        _, log_det = flow(x)
    # The stored rotation is float32, so its determinant is 1 only to about 1e-7 per block.
    torch.testing.assert_close(log_det[0], expected, rtol=0, atol=1e-5)


def test_conditional_vectors_invert_and_use_the_condition() -> None:
    torch.manual_seed(0)
    block = AffineCouplingBlock(6, tanh_subnet, condition_channels=3, clamp=1.9, seed=1)
    randomise(block)
    x, c = torch.randn(7, 6), torch.randn(7, 3)
    z, log_det = block(x, c)
    torch.testing.assert_close(block(z, c, reverse=True)[0], x, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(block(x, torch.randn(7, 3))[0], z)
    with pytest.raises(ValueError, match="condition"):
        block(x)


def test_matches_freia_all_in_one_block() -> None:
    from FrEIA.modules import AllInOneBlock

    torch.manual_seed(0)
    ours = AffineCouplingBlock(5, conv_subnet, clamp=2.0, seed=3)
    randomise(ours)
    theirs = AllInOneBlock([(5, 4, 4)], subnet_constructor=conv_subnet, affine_clamping=2.0, permute_soft=False)
    weight = torch.zeros(5, 5)
    weight[torch.arange(5), ours.perm_index] = 1.0
    with torch.no_grad():
        theirs.subnet.load_state_dict(ours.subnet.state_dict())
        theirs.global_scale.copy_(ours.global_scale.view(1, 5, 1, 1))
        theirs.global_offset.copy_(ours.global_offset.view(1, 5, 1, 1))
        theirs.w_perm.copy_(weight.view(5, 5, 1, 1))
        theirs.w_perm_inv.copy_(weight.t().contiguous().view(5, 5, 1, 1))
    x = torch.randn(3, 5, 4, 4)
    (y_ref,), log_det_ref = theirs([x])
    y, log_det = ours(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(log_det, log_det_ref, rtol=1e-5, atol=1e-4)


def test_trains_through_a_tanh_subnet_and_round_trips_through_safetensors() -> None:
    """FrEIA's in-place scaling of the subnet output breaks this backward pass; ours must not."""
    torch.manual_seed(0)
    flow = SequentialFlow(AffineCouplingBlock(6, tanh_subnet, condition_channels=2, seed=i) for i in range(4))
    optimiser = torch.optim.Adam(flow.parameters(), lr=1e-2)
    x, c = torch.randn(32, 6) * 3 + 1, torch.randn(32, 2)
    losses = []
    for _ in range(20):
        z, log_det = flow(x, c)
        loss = (0.5 * z.pow(2).sum(1) - log_det).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]

    blob = save({k: v.contiguous() for k, v in flow.state_dict().items()})
    fresh = SequentialFlow(AffineCouplingBlock(6, tanh_subnet, condition_channels=2, seed=100 + i) for i in range(4))
    fresh.load_state_dict(load(blob))
    with torch.no_grad():
        assert torch.equal(fresh(x, c)[0], flow(x, c)[0])
        assert torch.equal(fresh(x, c)[1], flow(x, c)[1])


def test_state_is_plain_tensors_and_the_flow_pickles() -> None:
    flow = map_flow(soft=True)
    for name, tensor in flow.state_dict().items():
        assert tensor.is_contiguous(), name
    save(flow.state_dict())  # safetensors refuses shared or non-contiguous storage
    buffer = io.BytesIO()
    pickle.dump(flow, buffer)
    x = torch.randn(1, 5, 3, 3)
    torch.testing.assert_close(pickle.loads(buffer.getvalue())(x)[0], flow(x)[0])


def test_equal_seeds_build_equal_permutations() -> None:
    a, b = AffineCouplingBlock(16, conv_subnet, seed=4), AffineCouplingBlock(16, conv_subnet, seed=4)
    c = AffineCouplingBlock(16, conv_subnet, seed=5)
    assert torch.equal(a.perm_index, b.perm_index)
    assert not torch.equal(a.perm_index, c.perm_index)


def test_rejects_wrong_channels() -> None:
    block = AffineCouplingBlock(4, conv_subnet)
    with pytest.raises(ValueError, match=r"\[N, 4"):
        block(torch.randn(1, 3, 2, 2))


@pytest.mark.parametrize("soft,vectors", [(False, False), (True, False), (False, True), (True, True)])
def test_scoring_path_without_gradients_matches_the_training_path(soft: bool, vectors: bool) -> None:
    """Without autograd the block runs its element-wise steps in place and skips the concatenation; the map,
    its log-determinant and the latent-only `transform` stay those of the differentiable path."""
    torch.manual_seed(7)
    if vectors:
        flow = SequentialFlow(AffineCouplingBlock(6, tanh_subnet, condition_channels=3, clamp=1.9,
                                                  soft_permutation=soft, seed=20 + i) for i in range(3))
        x, condition = torch.randn(11, 6), torch.randn(11, 3)
    else:
        flow, condition = map_flow(soft=soft, seed=5), None
        x = torch.randn(2, 5, 6, 7)
    randomise(flow)  # also moves the global affine off scale 1, offset 0
    with torch.enable_grad():
        reference, reference_log_det = flow(x, condition)
    assert reference.requires_grad
    with torch.inference_mode():
        y, log_det = flow(x, condition)
        z = flow.transform(x, condition)
    torch.testing.assert_close(y, reference.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(log_det, reference_log_det.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(z, reference.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(flow(y, condition, reverse=True)[0], x, rtol=1e-5, atol=1e-5)
