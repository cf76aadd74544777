"""FastFlow and CFlow specifics: variants, subnet layout, the transformer path, the positional encoding, the
learning-rate schedule and clear errors on bad input."""

from __future__ import annotations

import math

import pytest
import torch

from ad_core.building import build_model, resolve_config
from ad_core.training import GradientTrainer, seed_everything
from ad_core.plugin_api import Batch, normal_batch
from ad_flow.cflow import CFlow, WarmupCosine, positional_encoding_2d
from ad_flow.fastflow import FastFlow


def batch(n: int = 4, size: int = 64) -> Batch:
    images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    return normal_batch(images)


@pytest.mark.parametrize(("variant", "expected"), [
    ("fastflow", {"backbone": "resnet18", "flow_steps": 8, "hidden_ratio": 1.0, "conv3x3_only": True}),
    ("fastflow-wrn50", {"backbone": "wide_resnet50_2", "flow_steps": 8, "conv3x3_only": False}),
    ("fastflow-cait", {"backbone": "cait_m48_448", "feature_block": 40, "image_size": 448, "flow_steps": 20,
                       "hidden_ratio": 0.16, "conv3x3_only": False}),
    ("fastflow-deit", {"backbone": "deit_base_distilled_patch16_384", "feature_block": 7, "image_size": 384,
                       "flow_steps": 20, "hidden_ratio": 0.16, "conv3x3_only": False}),
    ("cflow", {"backbone": "wide_resnet50_2", "coupling_blocks": 8, "clamp_alpha": 1.9, "condition_dim": 128,
               "fiber_batch_size": 256, "lr": 2e-4}),
])
def test_variants_carry_the_papers_settings(variant: str, expected: dict) -> None:
    hyper = resolve_config(variant).hyperparameters
    assert {k: hyper[k] for k in expected} == expected


def test_fastflow_alternates_3x3_and_1x1_subnets() -> None:
    model = FastFlow(image_size=64, flow_steps=4, conv3x3_only=False, hidden_ratio=0.5, pretrained=False)
    kernels = [block.subnet[0].kernel_size[0] for block in model.flows[0].blocks]
    assert kernels == [3, 1, 3, 1]
    assert model.flows[0].blocks[0].subnet[0].out_channels == 32 // 2  # hidden = ratio * (64 - 64 // 2)


def test_fastflow_on_a_transformer_token_map() -> None:
    seed_everything(0)
    model, _ = build_model("fastflow-deit", backbone="deit_tiny_distilled_patch16_224", feature_block=2,
                           image_size=64, flow_steps=2, pretrained=False)
    assert model.norms is None and len(model.flows) == 1
    GradientTrainer(device="cpu", max_steps=1, progress=False).fit(model, [batch()])
    prediction = model.predict(batch().image)
    assert prediction.anomaly_map.shape == (4, 64, 64) and torch.isfinite(prediction.score).all()


def test_fastflow_size_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="too small"):
        FastFlow(image_size=8, pretrained=False)
    model = FastFlow(image_size=64, flow_steps=1, pretrained=False)
    model.mark_fitted()
    with pytest.raises(ValueError, match="image_size=96"):
        model.predict(torch.rand(1, 3, 96, 96))


def test_positional_encoding_separates_x_and_y() -> None:
    encoding = positional_encoding_2d(8, 3, 5)
    assert encoding.shape == (8, 3, 5) and encoding.abs().max() <= 1
    assert torch.equal(encoding[:4], encoding[:4, :1].expand(-1, 3, -1))  # first half: x only
    assert torch.equal(encoding[4:], encoding[4:, :, :1].expand(-1, -1, 5))  # second half: y only
    assert torch.allclose(encoding[0, 0], torch.sin(torch.arange(5.0)))  # lowest frequency is 1
    with pytest.raises(ValueError, match="multiple of 4"):
        positional_encoding_2d(6, 2, 2)


def test_lr_schedule_warms_up_then_decays() -> None:
    schedule = WarmupCosine(num_epochs=200, meta_epochs=25)  # the reference: 25 meta epochs of 8 epochs
    factors = [schedule(e) for e in range(200)]
    assert factors[0] == pytest.approx(0.1 + (0.5 / 16) * (schedule.cosine(2) - 0.1))
    assert all(a < b for a, b in zip(factors[:15], factors[1:16]))  # warm-up over the first 16 epochs
    assert max(factors) == pytest.approx(schedule.cosine(2)) and factors.index(max(factors)) == 16
    assert factors[-1] == pytest.approx(1e-3 + (1 - 1e-3) * (1 + math.cos(math.pi * 24 / 25)) / 2)
    assert all(a >= b for a, b in zip(factors[16:], factors[17:]))
    short = WarmupCosine(num_epochs=5)  # a short run keeps the shape: no warm-up epoch left, then the cosine
    assert short(0) == pytest.approx(short.cosine(2)) and short(1) == pytest.approx(short.cosine(5))
    assert short(4) < short(1)


def count_optimizer_steps(model: CFlow) -> list[int]:
    """A list that grows by one at every step of the optimiser the trainer gets from the model."""
    steps: list[int] = []
    configure = model.configure_optimizers

    def counting_optimizer(plan):
        optimizer = configure(plan)
        optimizer.register_step_post_hook(lambda *_: steps.append(1))
        return optimizer

    model.configure_optimizers = counting_optimizer
    return steps


def test_cflow_takes_one_step_per_fiber_batch_and_normalises_by_training_fibers() -> None:
    seed_everything(0)
    model = CFlow(backbone="resnet18", coupling_blocks=1, fiber_batch_size=16, soft_permutation=False, pretrained=False)
    steps = count_optimizer_steps(model)
    GradientTrainer(device="cpu", max_steps=1, progress=False).fit(model, [batch()])
    # 4 images of 64 px give 8x8, 4x4 and 2x2 fibers each: 256/16 + 64/16 + 16/16 fiber batches.
    assert len(steps) == 16 + 4 + 1
    assert bool(torch.isfinite(model.log_prob_max).all()) and bool((model.log_prob_max != 0).all())
    assert torch.isfinite(model.predict(batch().image).score).all()


def test_cflow_image_batch_with_fewer_fibers_than_a_fiber_batch_takes_one_step_per_layer() -> None:
    seed_everything(0)
    model = CFlow(backbone="resnet18", coupling_blocks=1, fiber_batch_size=4096, soft_permutation=False,
                  pretrained=False)
    steps = count_optimizer_steps(model)
    GradientTrainer(device="cpu", max_steps=1, progress=False).fit(model, [batch(1)])
    assert len(steps) == 3


def test_fastflow_map_from_the_scoring_path_equals_the_training_path_latents() -> None:
    """The map runs the flows without log-determinants; it is the one the likelihood of the training path's z gives."""
    torch.manual_seed(3)
    model = FastFlow(image_size=64, flow_steps=2, pretrained=False).eval()
    with torch.no_grad():
        for p in model.flows.parameters():
            p.add_(0.1 * torch.randn_like(p))
    images = torch.randn(2, 3, 64, 64)
    with torch.enable_grad():
        latents = [z.detach() for z, _ in model.latents(images)]
    expected = torch.stack([torch.nn.functional.interpolate(-torch.exp(-0.5 * z.pow(2).mean(1, keepdim=True)),
                                                            size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
                            for z in latents]).mean(0)
    with torch.inference_mode():
        score, amap = model.compute(images)
    torch.testing.assert_close(amap, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(score, expected.amax(dim=(-2, -1)))
