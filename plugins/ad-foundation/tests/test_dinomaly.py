"""Dinomaly's pieces against direct computation: the hard-mining loss and its gradient, linear attention, the
top-1 % score, the smoothing kernel, the schedules and the encoder blocks per size."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ad_core.building import resolve_config
from ad_foundation.dinomaly import (
    Dinomaly,
    LinearAttention,
    WarmCosine,
    hard_mining_cosine_loss,
    mining_ratio,
    top_mean,
)

TINY = {"depth": 10, "embed_dim": 32, "num_heads": 2}


def tiny_model(**kwargs) -> Dinomaly:
    torch.manual_seed(0)
    return Dinomaly(backbone="vit_small_patch14_reg4_dinov2", pretrained=False, vit_overrides=TINY, **kwargs)


def test_loss_is_one_cosine_per_image_and_group() -> None:
    torch.manual_seed(0)
    enc = [torch.randn(3, 5, 4, 4) for _ in range(2)]
    dec = [torch.randn(3, 5, 4, 4) for _ in range(2)]
    expected = sum(
        sum(1 - float(e[b].flatten() @ d[b].flatten() / (e[b].norm() * d[b].norm())) for b in range(3)) / 3
        for e, d in zip(enc, dec)) / 2
    assert float(hard_mining_cosine_loss(enc, dec, ratio=0.9, factor=0.1)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.9])
def test_easy_points_get_their_gradient_scaled_by_the_factor(ratio: float) -> None:
    torch.manual_seed(1)
    enc = torch.randn(2, 6, 5, 5)
    base = torch.randn(2, 6, 5, 5)

    def grad(factor: float) -> torch.Tensor:
        dec = base.clone().requires_grad_(True)
        hard_mining_cosine_loss([enc], [dec], ratio, factor).backward()
        return dec.grad

    plain, mined = grad(1.0), grad(0.1)
    distance = 1 - F.cosine_similarity(enc, base, dim=1)
    k = max(1, int(distance.numel() * (1 - ratio)))
    easy = distance < distance.flatten().sort(descending=True).values[k - 1]  # all but the k hardest points
    assert int(easy.sum()) == distance.numel() - k
    easy = easy.unsqueeze(1).expand_as(plain)
    torch.testing.assert_close(mined[easy], 0.1 * plain[easy])
    torch.testing.assert_close(mined[~easy], plain[~easy])
    assert (plain[~easy] != 0).any()


def test_mining_ratio_ramps_to_its_final_value() -> None:
    assert [mining_ratio(s, 0.9, 1000) for s in (0, 500, 1000, 5000)] == pytest.approx([0.0, 0.45, 0.9, 0.9])
    assert mining_ratio(0, 0.9, 0) == 0.9


def test_linear_attention_equals_its_direct_sum() -> None:
    torch.manual_seed(2)
    attention = LinearAttention(dim=8, num_heads=2)
    x = torch.randn(2, 5, 8)
    q, k, v = attention.qkv(x).reshape(2, 5, 3, 2, 4).unbind(2)  # [B, N, heads, d] each
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    out = torch.zeros(2, 5, 2, 4)
    for b in range(2):
        for h in range(2):
            for s in range(5):
                weights = torch.stack([phi_q[b, s, h] @ phi_k[b, t, h] for t in range(5)])
                out[b, s, h] = (weights[:, None] * v[b, :, h]).sum(0) / (weights.sum() + attention.eps)
    torch.testing.assert_close(attention(x), attention.proj(out.reshape(2, 5, 8)), rtol=1e-5, atol=1e-6)
    assert attention.eps == 1e-6


def test_top_mean_averages_the_top_one_percent() -> None:
    values = torch.randperm(1000).float()
    maps = torch.stack([values, -values]).reshape(2, 25, 40)
    assert top_mean(maps, 0.01).tolist() == pytest.approx([sum(range(990, 1000)) / 10, -sum(range(10)) / 10])
    assert top_mean(torch.arange(50.0).reshape(1, 5, 10), 0.01).item() == 49.0  # at least one value


def test_smoothing_is_the_authors_five_tap_sigma_4_kernel_with_zero_padding() -> None:
    model = tiny_model(map_size=32)
    impulse = torch.zeros(1, 32, 32)
    impulse[0, 16, 16] = 1.0
    blurred = model.smooth(impulse)[0]
    taps = torch.exp(-torch.arange(-2, 3.0) ** 2 / 32)
    torch.testing.assert_close(blurred[14:19, 14:19], torch.outer(taps, taps) / taps.sum() ** 2)
    assert float(blurred.sum()) == pytest.approx(1.0) and int((blurred > 0).sum()) == 25
    corner = torch.zeros(1, 32, 32)
    corner[0, 0, 0] = 1.0
    assert float(model.smooth(corner).sum()) == pytest.approx(float((taps[2:].sum() / taps.sum()) ** 2))


def test_smoothing_resizes_the_short_side_to_map_size() -> None:
    assert tiny_model(map_size=64).smooth(torch.rand(2, 28, 56)).shape == (2, 64, 128)


def test_warm_cosine_follows_the_authors_schedule() -> None:
    total, warmup, final = 12, 4, 0.1
    ramp = [i / (warmup - 1) for i in range(warmup)]  # numpy's linspace(0, 1, warmup)
    rest = total - warmup
    cosine = [final + 0.5 * (1 - final) * (1 + math.cos(math.pi * i / rest)) for i in range(rest)]
    schedule = WarmCosine(total, warmup, final)
    assert [schedule(s) for s in range(total + 2)] == pytest.approx(ramp + cosine + [final, final])
    assert [WarmCosine(3, 0, final)(s) for s in range(3)] == pytest.approx(
        [1.0, final + 0.5 * (1 - final) * 1.5, final + 0.5 * (1 - final) * 0.5])


def test_encoder_groups_are_the_means_of_the_token_maps_and_the_decoder_sees_prefix_tokens() -> None:
    model = tiny_model().eval()
    images = torch.rand(2, 3, 42, 56)
    encoded, decoded = model(images)
    maps = model.encoder(images)
    torch.testing.assert_close(encoded[0], torch.stack(maps[:4]).mean(0))
    torch.testing.assert_close(encoded[1], torch.stack(maps[4:]).mean(0))
    assert decoded[0].shape == encoded[0].shape == (2, 32, 3, 4)
    tokens = model.encoder.tokens(images)
    assert tokens[0].shape[1] == 5 + 12 and model.encoder.blocks == [2, 3, 4, 5, 6, 7, 8, 9]


@pytest.mark.parametrize(("size", "blocks"), [("small", [2, 3, 4, 5, 6, 7, 8, 9]), ("base", [2, 3, 4, 5, 6, 7, 8, 9]),
                                              ("large", [4, 6, 8, 10, 12, 14, 16, 18])])
def test_encoder_blocks_and_input_sizes_per_variant(size: str, blocks: list[int]) -> None:
    for crop, resize in ((224, 256), (392, 448), (448, 448)):
        config = resolve_config(f"dinomaly-{size}-{crop}")
        assert config.run["image_size"] == resize and config.run["center_crop"] == crop
        assert config.hyperparameters["backbone"] == f"vit_{size}_patch14_reg4_dinov2"
    model = Dinomaly(backbone=f"vit_{size}_patch14_reg4_dinov2", pretrained=False, vit_overrides={**TINY, "depth": 19})
    assert model.encoder.blocks == blocks


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="pass target_layers"):
        Dinomaly(backbone="vit_small_patch14_dinov2", pretrained=False, vit_overrides=TINY)
    with pytest.raises(ValueError, match="8 encoder blocks"):
        tiny_model(target_layers=[1, 2, 3])
    with pytest.raises(ValueError, match="top_ratio"):
        tiny_model(top_ratio=0.0)


def test_trainable_layers_start_from_a_truncated_normal_of_std_0_01() -> None:
    model = tiny_model()
    weights = torch.cat([m.weight.detach().flatten() for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)])
    assert float(weights.abs().max()) <= 0.03 and float(weights.std()) == pytest.approx(0.01, rel=0.1)
    assert all(not m.bias.detach().any() for m in model.bottleneck.modules() if isinstance(m, torch.nn.Linear))
