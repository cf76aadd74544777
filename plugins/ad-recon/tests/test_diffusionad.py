"""DiffusionAD's pieces against direct computation: the DDPM closed forms, the norm-guided combination, the
UNet's layout, the score, the mask loss, the noise loss on normal images only, the segmentation rate's schedule,
and resume (the synthesis: test_diffusionad_synthesis.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ad_core.plugin_api import Batch, GradientTrainer, StepContext, TrainingPlan, normal_batch, seed_everything
from ad_recon.diffusion_schedule import LinearSchedule
from ad_recon.diffusion_unet import AttentionBlock, GuidedDiffusionUNet, timestep_embedding
from ad_recon.diffusionad import DiffusionAD, SegmentationSubNetwork, cosine_factor, mask_loss, top_k_mean

TINY = {"base_channels": 32, "channel_mults": [1, 2], "num_res_blocks": 1, "attention_downsample": [],
        "num_heads": 2, "seg_base_channels": 4}


def alpha_bar(t: int, timesteps: int = 1000, start: float = 1e-4, end: float = 0.02) -> float:
    """ᾱ_t = Π_{s≤t} (1 − β_s) with β linear from `start` to `end`, by a plain loop."""
    product = 1.0
    for s in range(t + 1):
        product *= 1.0 - (start + (end - start) * s / (timesteps - 1))
    return product


def context() -> StepContext:
    return StepContext(optimizers=[], schedulers=[], scaler=None, grad_clip=None)


# -- the closed forms ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("t", [0, 199, 299, 400, 999])
def test_q_sample_and_x0_estimate_match_the_formulas(t: int) -> None:
    schedule = LinearSchedule()
    g = torch.Generator().manual_seed(t)
    x0, eps = torch.rand(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    steps = torch.full((2,), t)
    a = alpha_bar(t)
    xt = schedule.q_sample(x0, steps, eps)
    torch.testing.assert_close(xt, math.sqrt(a) * x0 + math.sqrt(1 - a) * eps)
    torch.testing.assert_close(schedule.predict_x0(xt, steps, eps), (xt - math.sqrt(1 - a) * eps) / math.sqrt(a),
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(schedule.predict_x0(xt, steps, eps), x0, rtol=1e-4, atol=1e-4)


def test_guided_noise_matches_the_formula_per_sample() -> None:
    schedule = LinearSchedule()
    g = torch.Generator().manual_seed(0)
    eps, xt, guide = (torch.randn(2, 3, 4, 4, generator=g) for _ in range(3))
    steps = torch.tensor([10, 250])
    out = schedule.guided_noise(eps, xt, guide, steps, 0.7)
    for i, t in enumerate(steps.tolist()):
        torch.testing.assert_close(out[i], eps[i] - 0.7 * math.sqrt(1 - alpha_bar(t)) * (guide[i] - xt[i]))


def test_bad_schedules_are_refused() -> None:
    with pytest.raises(ValueError, match="timesteps"):
        LinearSchedule(timesteps=1)
    with pytest.raises(ValueError, match="beta_start < beta_end"):
        LinearSchedule(beta_start=0.02, beta_end=1e-4)


class AffineNoise(nn.Module):
    """A stand-in for the UNet with a known answer: ε̂(x, t) = 0.3 x + t / 1000."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.3 * x + t.float()[:, None, None, None] / 1000


def test_norm_guided_x0_is_the_guided_one_step_estimate() -> None:
    model = DiffusionAD(**TINY, condition_w=0.5)
    model.unet = AffineNoise()
    g = torch.Generator().manual_seed(1)
    x0, n_a, n_b = torch.rand(1, 3, 4, 4, generator=g), torch.randn(1, 3, 4, 4, generator=g), torch.randn(
        1, 3, 4, 4, generator=g)
    ta, tb = 120, 640
    out, eps_a, eps_b = model.norm_guided_x0(x0, torch.tensor([ta]), torch.tensor([tb]), n_a, n_b)
    aa, ab = alpha_bar(ta), alpha_bar(tb)
    x_a = math.sqrt(aa) * x0 + math.sqrt(1 - aa) * n_a
    x_b = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * n_b
    e_a, e_b = 0.3 * x_a + ta / 1000, 0.3 * x_b + tb / 1000
    x0_b = ((x_b - math.sqrt(1 - ab) * e_b) / math.sqrt(ab)).clamp(-1, 1)
    guide = math.sqrt(aa) * x0_b + math.sqrt(1 - aa) * e_a
    e_hat = e_a - 0.5 * math.sqrt(1 - aa) * (guide - x_a)
    expected = ((x_a - math.sqrt(1 - aa) * e_hat) / math.sqrt(aa)).clamp(-1, 1)
    torch.testing.assert_close(eps_a, e_a)
    torch.testing.assert_close(eps_b, e_b)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


# -- the networks ----------------------------------------------------------------------------------------
def test_timestep_embedding_matches_the_formula() -> None:
    emb = timestep_embedding(torch.tensor([0, 7, 500]), 8)
    for row, t in zip(emb, (0, 7, 500)):
        freqs = [math.exp(-math.log(10000) * i / 4) for i in range(4)]
        expected = [math.sin(t * f) for f in freqs] + [math.cos(t * f) for f in freqs]
        torch.testing.assert_close(row, torch.tensor(expected), rtol=1e-5, atol=1e-4)


def test_unet_layout_of_the_authors_256_px_configuration() -> None:
    """Six levels, attention after every block at downsampling 8, 16 and 32 and in the middle: 3 levels × (2 down
    + 3 up blocks) + 1 = 16 attention blocks; five down- and five up-sampling residual blocks."""
    unet = GuidedDiffusionUNet(base_channels=32)  # the 128-channel layout at a quarter of the width
    blocks = list(unet.modules())
    assert sum(isinstance(b, AttentionBlock) for b in blocks) == 16
    assert sum(getattr(b, "resample", None) == "down" for b in blocks) == 5
    assert sum(getattr(b, "resample", None) == "up" for b in blocks) == 5
    assert unet.downsample_factor == 32


def test_unet_starts_as_zero_and_keeps_the_shape() -> None:
    unet = GuidedDiffusionUNet(**{k: v for k, v in TINY.items() if k != "seg_base_channels"})
    x = torch.randn(2, 3, 16, 24)
    out = unet(x, torch.tensor([5, 900]))
    assert out.shape == x.shape and torch.count_nonzero(out) == 0  # the zero-initialised output conv
    with pytest.raises(ValueError, match="divisible by 2"):
        unet(torch.randn(1, 3, 15, 16), torch.tensor([1]))


def test_attention_block_matches_per_head_softmax_attention() -> None:
    torch.manual_seed(0)
    block = AttentionBlock(64, num_heads=2)
    nn.init.normal_(block.proj.weight)
    x = torch.randn(1, 64, 3, 3)
    qkv = block.qkv(block.norm(x.reshape(1, 64, 9)))[0]  # [192, 9]: per head its q, k, v of 32 channels
    heads = []
    for h in range(2):
        q, k, v = qkv[h * 96:(h + 1) * 96].split(32)
        heads.append(v @ torch.softmax(q.T @ k / math.sqrt(32), dim=-1).T)
    expected = x.reshape(1, 64, 9) + block.proj(torch.cat(heads)[None])
    torch.testing.assert_close(block(x), expected.reshape(1, 64, 3, 3), rtol=1e-4, atol=1e-4)


def test_segmentation_network_outputs_one_probability_per_pixel() -> None:
    net = SegmentationSubNetwork(6, 4).eval()
    out = net(torch.rand(2, 6, 64, 32))
    assert out.shape == (2, 1, 64, 32) and bool(((out >= 0) & (out <= 1)).all())


# -- score, loss, synthesis -----------------------------------------------------------------------------------
def test_top_k_mean_is_the_mean_of_the_largest_values() -> None:
    maps = torch.rand(3, 10, 10)
    expected = torch.stack([m.flatten().sort(descending=True).values[:50].mean() for m in maps])
    torch.testing.assert_close(top_k_mean(maps, 50), expected)
    torch.testing.assert_close(top_k_mean(maps, 1000), maps.flatten(1).mean(1))


def test_mask_loss_is_five_binary_focal_plus_smooth_l1() -> None:
    p = torch.rand(2, 1, 8, 8) * 0.98 + 0.01
    target = (torch.rand(2, 1, 8, 8) > 0.7).float()
    p_t = torch.where(target > 0, p, 1 - p)
    focal = (0.5 * (1 - p_t) ** 4 * -torch.log(p_t)).mean()  # the authors' binary focal loss, α 0.5, γ 4
    smooth_l1 = torch.where((p - target).abs() < 1, 0.5 * (p - target) ** 2, (p - target).abs() - 0.5).mean()
    torch.testing.assert_close(mask_loss(p, target, 5.0, 0.5, 4.0), 5 * focal + smooth_l1, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("probability", [0.0, 1.0])
def test_noise_is_learnt_on_normal_images_only(probability: float) -> None:
    seed_everything(0)
    model = DiffusionAD(**TINY, anomaly_probability=probability)
    ctx = context()
    loss = model.training_step(normal_batch(torch.rand(2, 3, 32, 32)), ctx)
    # the zero-initialised UNet predicts ε̂ = 0, so on normal images the noise loss is E[ε²] per branch (≈ 2)
    if probability == 0.0:
        assert 1.5 < ctx.logged["noise_loss"] < 2.5
    else:
        assert ctx.logged["noise_loss"] == 0.0
    assert loss.item() == pytest.approx(ctx.logged["noise_loss"] + ctx.logged["mask_loss"], rel=1e-5)


# -- the segmentation rate -------------------------------------------------------------------------------------
def plan(total_steps: int) -> TrainingPlan:
    return TrainingPlan(total_steps=total_steps, steps_per_epoch=5, num_epochs=None, max_steps=total_steps)


def test_segmentation_rate_follows_the_authors_cosine_stepped_every_batch() -> None:
    """The authors' `CosineAnnealingLR(T_max=10)` stepped after every batch: down to 0 in 10 steps, back up in 10,
    and so on; the UNet's rate stays constant."""
    model = DiffusionAD(**TINY)
    (unet, entry) = model.configure_optimizers(plan(1000))
    seg, scheduler = entry["optimizer"], entry["scheduler"]
    reference_opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=1e-5)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(reference_opt, T_max=10, eta_min=0)
    for step in range(45):
        assert seg.param_groups[0]["lr"] == pytest.approx(reference_opt.param_groups[0]["lr"], abs=1e-12), step
        assert seg.param_groups[0]["lr"] == pytest.approx(1e-5 * (1 + math.cos(math.pi * step / 10)) / 2, abs=1e-15)
        assert unet.param_groups[0]["lr"] == 1e-4
        for optimizer in (reference_opt, seg):
            optimizer.step()  # no gradients: only the order torch expects before a scheduler step
        reference.step()
        scheduler.step()
    assert cosine_factor(10, 10) == pytest.approx(0.0) and cosine_factor(20, 10) == pytest.approx(1.0)


def test_without_a_period_the_segmentation_rate_anneals_once_over_the_run() -> None:
    model = DiffusionAD(**TINY, seg_cosine_steps=None)
    _, entry = model.configure_optimizers(plan(40))
    for _ in range(20):
        entry["optimizer"].step()
        entry["scheduler"].step()
    assert entry["optimizer"].param_groups[0]["lr"] == pytest.approx(0.5e-5)
    for _ in range(20):
        entry["optimizer"].step()
        entry["scheduler"].step()
    assert entry["optimizer"].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-15)


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="normal_t_range"):
        DiffusionAD(**TINY, normal_t_range=1000)
    with pytest.raises(ValueError, match="seg_cosine_steps"):
        DiffusionAD(**TINY, seg_cosine_steps=0)
    with pytest.raises(ValueError, match="multiple of 32"):
        GuidedDiffusionUNet(base_channels=16)


# -- resume --------------------------------------------------------------------------------------------------
class Killed(RuntimeError):
    pass


def test_resume_after_a_kill_continues_to_the_straight_runs_weights(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    data = [normal_batch(torch.rand(2, 3, 32, 32, generator=g)) for _ in range(3)]

    def fresh() -> DiffusionAD:
        seed_everything(0)
        return DiffusionAD(**TINY, lr=1e-3, seg_lr=1e-3)

    straight = fresh()
    GradientTrainer(device="cpu", progress=False, max_steps=3).fit(straight, data)

    dying, calls = fresh(), []
    step = dying.training_step

    def killed_on_third(batch: Batch, ctx: StepContext) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 3:
            raise Killed
        return step(batch, ctx)

    dying.training_step = killed_on_third
    with pytest.raises(Killed):
        GradientTrainer(device="cpu", progress=False, max_steps=3, checkpoint_dir=tmp_path,
                        checkpoint_every=1).fit(dying, data)
    resumed = fresh()
    GradientTrainer(device="cpu", progress=False, max_steps=3, checkpoint_dir=tmp_path, resume=True).fit(resumed, data)
    expected = straight.state_dict()
    for name, tensor in resumed.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
