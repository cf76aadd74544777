"""CS-Flow (its conformance runs in test_conformance.py): the cross-scale flow's invertibility and exact
log-determinant, bad input."""

from __future__ import annotations

import pytest
import torch

from ad_core.building import build_model
from ad_flow.csflow import CrossScaleFlow, CSFlow

TINY = {"backbone": "efficientnet_b0", "stage": 4, "hidden_channels": 32, "n_coupling_blocks": 2,
        "num_epochs": 2, "batch_size": 8, "lr": 1e-3}


def tiny_flow() -> tuple[CrossScaleFlow, list[torch.Tensor]]:
    torch.manual_seed(0)
    flow = CrossScaleFlow(6, 2, 8, [3, 5], clamp=3.0, leaky_slope=0.1)
    for block in flow.blocks:  # leave the identity start, so the test sees real couplings
        for net in (block.net_first, block.net_second):
            net.gamma.data.normal_()
    xs = [torch.randn(1, 6, 4, 4), torch.randn(1, 6, 2, 2), torch.randn(1, 6, 1, 1)]
    return flow, xs


def test_cross_scale_flow_is_invertible() -> None:
    flow, xs = tiny_flow()
    zs, _ = flow(xs)
    for x, back in zip(xs, flow.inverse(zs)):
        torch.testing.assert_close(back, x, rtol=1e-4, atol=1e-5)


def test_log_determinant_is_exact() -> None:
    flow, xs = tiny_flow()
    shapes = [x.shape for x in xs]

    def as_list(v: torch.Tensor) -> list[torch.Tensor]:
        return [part.view(s) for part, s in zip(v.split([s.numel() for s in shapes]), shapes)]

    flat = torch.cat([x.flatten() for x in xs])
    jacobian = torch.autograd.functional.jacobian(lambda v: torch.cat([z.flatten() for z in flow(as_list(v))[0]]), flat)
    _, log_det = flow(xs)
    torch.testing.assert_close(log_det[0].double(), torch.linalg.slogdet(jacobian.double())[1], rtol=1e-4, atol=1e-4)


def test_product_map_mode() -> None:
    model, _ = build_model("csflow", **{**TINY, "pretrained": False, "map_mode": "product"})
    model.mark_fitted()
    pred = model.predict(torch.rand(2, 3, 64, 64))
    assert pred.anomaly_map.shape == (2, 64, 64) and (pred.anomaly_map >= 0).all()


def test_image_size_must_align_the_scales() -> None:
    model, _ = build_model("csflow", **{**TINY, "pretrained": False})
    model.mark_fitted()
    with pytest.raises(ValueError, match="multiples of 64"):
        model.predict(torch.rand(1, 3, 96, 96))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"backbone": "resnet18"}, "EfficientNet-style"), ({"stage": 9}, "stage must lie"),
     ({"map_mode": "max"}, "map_mode"), ({"kernel_sizes": [3]}, "one size per coupling block")],
)
def test_bad_settings_are_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CSFlow(**{**{k: v for k, v in TINY.items() if k not in ("num_epochs", "batch_size")}, "pretrained": False,
                  **kwargs})
