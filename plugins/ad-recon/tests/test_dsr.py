"""DSR (its conformance runs in test_conformance.py): the vector quantiser and the feature-space anomalies against
direct computation, the phases, the VQ weights (refusal, loading, the offline training command)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ad_core.plugin_api import MissingWeightsError, StepContext, TrainingPlan
from ad_core.plugin_api import components as C
from ad_recon.dsr import Dsr, Phase1Draws
from ad_recon.dsr_anomalies import candidate_count, feature_anomalies
from ad_recon.dsr_networks import DualSubspaceVQ, VectorQuantizer, vq_state_from_authors
from ad_recon.dsr_vq import VQWeightsError, load_vq_weights

TINY = {"embedding_dim": 8, "num_embeddings": 32, "hidden_channels": 8, "residual_channels": 4,
        "residual_layers": 1, "detection_width": 4, "image_size": 64}
VQ_TINY = {"embedding_dim": 8, "num_embeddings": 32, "hidden": 8, "res_hidden": 4, "res_layers": 1}


def quantizer_with(codes: torch.Tensor) -> VectorQuantizer:
    quantizer = VectorQuantizer(codes.shape[0], codes.shape[1])
    quantizer.codebook.weight.data.copy_(codes)
    return quantizer


def test_quantiser_picks_the_nearest_code_and_passes_gradients_straight_through() -> None:
    codes = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    z = torch.tensor([[0.9, 0.2], [0.1, 1.2], [-0.2, 0.1]]).t().reshape(1, 2, 1, 3).requires_grad_(True)
    out = quantizer_with(codes)(z)
    assert out.indices.flatten().tolist() == [1, 2, 0]
    assert torch.equal(out.quantized.detach(), codes[[1, 2, 0]].t().reshape(1, 2, 1, 3))
    weights = torch.arange(6.0).reshape(1, 2, 1, 3)
    (out.quantized * weights).sum().backward()
    assert torch.equal(z.grad, weights)  # d(quantized)/dz is the identity


def test_commitment_loss_is_a_quarter_of_the_squared_distance_to_the_code() -> None:
    codes = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    z = torch.tensor([[0.9, 0.2], [0.1, 1.2], [-0.2, 0.1]]).t().reshape(1, 2, 1, 3).requires_grad_(True)
    out = quantizer_with(codes)(z)
    squared = ((0.9 - 1) ** 2 + 0.2 ** 2 + 0.1 ** 2 + (1.2 - 2) ** 2 + 0.2 ** 2 + 0.1 ** 2) / 6
    assert out.commitment.item() == pytest.approx(0.25 * squared, rel=1e-6)
    out.commitment.backward()
    assert quantizer_with(codes).codebook.weight.grad is None  # codes move by EMA only


def test_ema_update_moves_a_code_to_the_mean_of_its_features() -> None:
    quantizer = VectorQuantizer(2, 1, decay=0.0, epsilon=0.0)
    z = torch.tensor([1.0, 3.0, 10.0]).view(1, 1, 1, 3)
    quantizer.ema_update(z, torch.tensor([0, 0, 1]).view(1, 1, 3))
    assert quantizer.codes.flatten().tolist() == pytest.approx([2.0, 10.0])


def test_candidate_count_follows_the_authors_rule() -> None:
    assert candidate_count(torch.tensor(0.5), 4096) == 2049
    assert candidate_count(torch.tensor(1.0), 4096) == 4095  # never the whole codebook
    assert candidate_count(torch.tensor(0.0), 10) == 1


def test_feature_anomalies_draw_distant_codes_inside_the_mask_only() -> None:
    codes = torch.arange(40.0).view(40, 1)  # code k lies at distance k from a feature at 0
    features = torch.zeros(1, 1, 4, 4)
    quantized = torch.full((1, 1, 4, 4), -1.0)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8, :4] = 1  # touches feature cells (0..1, 0): max-pooled by 4
    out = feature_anomalies(features, quantized, codes, mask, torch.tensor([0.5]), C.seeded_generator(0))
    inside = torch.zeros(4, 4, dtype=torch.bool)
    inside[:2, 0] = True
    assert torch.equal(out[0, 0][~inside], quantized[0, 0][~inside])
    # strength 0.5: the 21 nearest codes are ranked and the nearest 2 (5 % of 40) skipped
    picked = out[0, 0][inside]
    assert ((picked >= 2) & (picked <= 20)).all()
    many = feature_anomalies(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16), codes, torch.ones(1, 1, 16, 16),
                             torch.tensor([0.5]), C.seeded_generator(1))
    assert set(many.flatten().tolist()) == set(range(2, 21))  # every candidate is drawn, none other


def test_phase_one_targets_the_cells_of_the_subspace_that_got_anomalies() -> None:
    torch.manual_seed(0)
    model = Dsr(vq_weights="random", **TINY)
    images = torch.rand(2, 3, 64, 64)
    masks = torch.zeros(2, 1, 64, 64)
    masks[..., 20:22, 20:22] = 1
    ones = torch.ones(2, 1, 1, 1)
    draws = Phase1Draws(*model.draw_strengths(2, C.seeded_generator(0)), use_both=0 * ones, use_lo=ones)
    lo = model.phase1(images, masks, C.seeded_generator(0), draws).target
    draws = draws._replace(use_lo=0 * ones)
    hi = model.phase1(images, masks, C.seeded_generator(0), draws).target
    assert lo.sum() == 2 * 8 * 8 and hi.sum() == 2 * 4 * 4  # the stride-8 and stride-4 cells holding the pixels
    assert lo[0, 0, 16:24, 16:24].all() and hi[0, 0, 20:24, 20:24].all()


def test_each_phase_trains_only_its_modules(as_batch) -> None:
    torch.manual_seed(0)
    model = Dsr(vq_weights="random", **TINY)
    optimizers = model.configure_optimizers(TrainingPlan(total_steps=6, steps_per_epoch=3, num_epochs=2,
                                                         max_steps=None))
    assert model.phase1_steps == 4
    ctx = StepContext([o["optimizer"] for o in optimizers], [], None, None)
    images = torch.rand(2, 3, 64, 64)
    model.on_fit_start([as_batch(images)])
    for step, trained, frozen in ((3, model.detection, model.upsampling), (4, model.upsampling, model.detection)):
        before = {n: p.clone() for n, p in model.named_parameters()}
        ctx.step = step
        model.training_step(as_batch(images), ctx)
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert any(n.startswith(trained_name(model, trained)) for n in changed)
        assert not any(n.startswith(trained_name(model, frozen)) for n in changed)
        assert not any(n.startswith("vq.") for n in changed)


def trained_name(model: Dsr, module: torch.nn.Module) -> str:
    return next(name for name, m in model.named_children() if m is module) + "."


def test_training_without_vq_weights_is_refused_with_both_ways_out() -> None:
    model = Dsr(**TINY)
    with pytest.raises(MissingWeightsError, match=r"dsr-train-vq(.|\n)*vq_weights=\"random\""):
        model.on_fit_start([])


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="normalize"):
        Dsr(normalize=True, **TINY)
    with pytest.raises(ValueError, match="multiples of 32 and at least 64"):
        Dsr(**{**TINY, "image_size": 32})


def test_vq_weights_load_from_the_authors_layout(tmp_path) -> None:
    assert vq_state_from_authors({"_encoder_b._residual_stack._layers.0._block.3.weight": torch.zeros(1)}) == {
        "encoder_hi.residual.layers.0.block.2.weight": torch.zeros(1)}
    source = DualSubspaceVQ(**VQ_TINY)
    ours_to_authors = {
        "encoder_hi.": "_encoder_b.", "encoder_lo.": "_encoder_t.", "pre_vq_hi.": "_pre_vq_conv_bot.",
        "pre_vq_lo.": "_pre_vq_conv_top.", "quantizer_hi.": "_vq_vae_bot.", "quantizer_lo.": "_vq_vae_top.",
        "general_decoder.": "_decoder_b.", "upsample_lo.": "upsample_t.",
        "residual.layers.": "_residual_stack._layers.",
        ".block.0.": "._block.1.", ".block.2.": "._block.3.", "deconv1.": "_conv_trans_1.",
        "deconv2.": "_conv_trans_2.", "conv1.": "_conv_1.", "conv2.": "_conv_2.", "conv3.": "_conv_3.",
        "codebook.weight": "_embedding.weight", "ema_cluster_size": "_ema_cluster_size", "ema_weight": "_ema_w"}
    authors = {}
    for key, value in source.state_dict().items():
        for ours, theirs in ours_to_authors.items():
            key = key.replace(ours, theirs)
        authors[key] = value
    torch.save(authors, tmp_path / "vq.pckl")
    target = DualSubspaceVQ(**VQ_TINY)
    load_vq_weights(target, tmp_path / "vq.pckl")
    for key, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], tensor), key
    with pytest.raises(VQWeightsError, match="embedding_dim"):
        load_vq_weights(DualSubspaceVQ(**{**VQ_TINY, "embedding_dim": 16}), tmp_path / "vq.pckl")
    torch.save({"weights": authors, "code": object()}, tmp_path / "unsafe.pckl")
    with pytest.raises(VQWeightsError, match="cannot be read safely"):
        load_vq_weights(target, tmp_path / "unsafe.pckl")
    with pytest.raises(MissingWeightsError, match="does not exist"):
        load_vq_weights(target, tmp_path / "missing.safetensors")


def test_train_vq_command_writes_weights_dsr_loads(tmp_path) -> None:
    from ad_core.cli import main

    (tmp_path / "images").mkdir()
    for index in range(2):
        pixels = np.random.default_rng(index).integers(0, 255, (20, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "images" / f"{index}.png")
    out = tmp_path / "vq.safetensors"
    args = ["dsr-train-vq", "--images", str(tmp_path / "images"), "--out", str(out), "--steps", "2",
            "--batch-size", "2", "--image-size", "16", "--embedding-dim", "8", "--num-embeddings", "32",
            "--hidden-channels", "8", "--residual-channels", "4", "--residual-layers", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    model = Dsr(vq_weights=str(out), **TINY)
    model.on_fit_start([])
    assert any("loaded from" in note for note in model.fit_notes())
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, [*args[:2], str(tmp_path / "empty"), *args[3:]])
    assert result.exit_code != 0 and "--images" in result.output and "Traceback" not in result.output


def test_untrained_vq_codebooks_are_drawn_from_features(as_batch) -> None:
    torch.manual_seed(0)
    model = Dsr(vq_weights="random", **TINY)
    model.on_fit_start([as_batch(torch.rand(2, 3, 64, 64))])
    indices = model.vq(torch.rand(2, 3, 64, 64)).quantized_lo.indices
    assert indices.unique().numel() > 1  # N(0, 1) codes would take every small feature to one code
