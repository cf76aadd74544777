"""Reverse Distillation: the decoder mirrors the encoder, the loss and map of the paper and the authors' code."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ad_kd.reverse_distillation import ReverseDistillation, reconstruction_loss

from ad_core.components.maps import gaussian_blur
from ad_core.components.reverse_decoder import DecoderBasicBlock, DecoderBottleneck
from ad_core.training import TrainingPlan

PLAN = TrainingPlan(total_steps=20, steps_per_epoch=20, num_epochs=1, max_steps=None)


@pytest.fixture(scope="module")
def r18() -> ReverseDistillation:
    torch.manual_seed(0)
    return ReverseDistillation(backbone="resnet18", pretrained=False).eval()


@pytest.mark.parametrize("backbone,block,channels,depths", [
    ("resnet18", DecoderBasicBlock, [64, 128, 256], [2, 2, 2]),
    ("wide_resnet50_2", DecoderBottleneck, [256, 512, 1024], [3, 4, 6]),
])
def test_decoder_mirrors_the_encoder(backbone, block, channels, depths) -> None:
    torch.manual_seed(0)
    model = ReverseDistillation(backbone=backbone, pretrained=False).eval()
    assert [len(stage) for stage in model.decoder.stages] == depths  # the authors' de_resnet stage depths
    assert all(isinstance(b, block) for stage in model.decoder.stages for b in stage)
    for stage in model.decoder.stages:  # each stage doubles the grid with transposed 2x2 convolutions
        first = stage[0]
        upsampler = first.conv1 if block is DecoderBasicBlock else first.conv2
        assert isinstance(upsampler, torch.nn.ConvTranspose2d) and upsampler.stride == (2, 2)
        assert isinstance(first.upsample[0], torch.nn.ConvTranspose2d)
    with torch.no_grad():
        encoded, decoded = model(torch.randn(2, 3, 64, 64))
        embedding = model.bottleneck(encoded)
    assert [tuple(e.shape[1:]) for e in encoded] == [(c, 16 >> i, 16 >> i) for i, c in enumerate(channels)]
    assert [d.shape for d in decoded] == [e.shape for e in encoded]
    assert tuple(embedding.shape[1:]) == (channels[2] * 2, 2, 2)  # layer4's channels at half layer3's grid


def test_bottleneck_fuses_the_three_scales(r18) -> None:
    """Changing any one encoder scale changes the one-class embedding (multi-scale fusion)."""
    torch.manual_seed(1)
    features = [torch.randn(1, 64, 16, 16), torch.randn(1, 128, 8, 8), torch.randn(1, 256, 4, 4)]
    with torch.no_grad():
        base = r18.bottleneck(features)
        for i in range(3):
            changed = [f.clone() for f in features]
            changed[i] += 1.0
            assert not torch.allclose(r18.bottleneck(changed), base)


def test_loss_is_the_authors_flattened_cosine_loss() -> None:
    g = torch.Generator().manual_seed(2)
    encoded = [torch.randn(3, c, s, s, generator=g) for c, s in [(8, 16), (16, 8), (32, 4)]]
    decoded = [torch.randn_like(e) for e in encoded]
    expected = sum(torch.mean(1 - F.cosine_similarity(e.view(3, -1), d.view(3, -1))) for e, d in zip(encoded, decoded))
    torch.testing.assert_close(reconstruction_loss(encoded, decoded), expected)
    scaled = [2.5 * e for e in encoded]  # cosine: the scale of the reconstruction does not matter
    assert float(reconstruction_loss(encoded, scaled)) < 1e-6


def test_map_is_the_smoothed_sum_of_per_scale_cosine_distances(r18) -> None:
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    r18.mark_fitted()
    pred = r18.predict(images)
    with torch.no_grad():
        encoded, decoded = r18(images)
    total = torch.zeros(2, 64, 64)
    for e, d in zip(encoded, decoded):
        layer = (1 - F.cosine_similarity(e, d, dim=1)).unsqueeze(1)
        total += F.interpolate(layer, size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    expected = gaussian_blur(total, 4.0)
    torch.testing.assert_close(pred.anomaly_map, expected)
    torch.testing.assert_close(pred.score, expected.flatten(1).max(1).values)


def test_only_bottleneck_and_decoder_train(r18) -> None:
    optimizer = r18.configure_optimizers(PLAN)
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["lr"] == 0.005
    assert optimizer.defaults["betas"] == (0.5, 0.999)
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in [*r18.bottleneck.parameters(), *r18.decoder.parameters()]}
    assert not any(p.requires_grad for p in r18.encoder.parameters())
    r18.train()
    try:
        assert not r18.encoder.training and r18.decoder.training and r18.bottleneck.training
    finally:
        r18.eval()


def test_image_sides_must_be_multiples_of_32(r18) -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        with torch.no_grad():
            r18(torch.randn(1, 3, 80, 80))


def test_unsupported_backbone_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="ResNet"):
        ReverseDistillation(backbone="efficientnet_b0", pretrained=False)


def _scramble_batchnorm(model: ReverseDistillation, seed: int) -> None:
    """Statistics and affine parameters away from their identity initialisation, so folding them is not trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in [*model.bottleneck.modules(), *model.decoder.modules()]:
            if isinstance(module, torch.nn.BatchNorm2d):
                for tensor, low, high in [(module.running_mean, -1, 1), (module.running_var, 0.5, 2),
                                          (module.weight, 0.5, 1.5), (module.bias, -0.5, 0.5)]:
                    tensor.copy_(torch.empty_like(tensor).uniform_(low, high, generator=g))


@pytest.mark.parametrize("backbone", ["resnet18", "wide_resnet50_2"])
def test_predict_path_folds_batchnorm_and_matches_the_training_path(backbone) -> None:
    torch.manual_seed(4)
    model = ReverseDistillation(backbone=backbone, pretrained=False).eval()
    _scramble_batchnorm(model, 5)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        encoded, decoded = model(images)
        folded = model.folded_reconstruction()
        fast = folded(encoded)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert all(f.is_contiguous(memory_format=torch.channels_last) for f in fast)
    for reference, result in zip(decoded, fast):
        torch.testing.assert_close(result, reference, rtol=1e-5, atol=1e-5 * float(reference.abs().max()))
    # the modules training uses keep their BatchNorm layers
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.decoder.modules()) > 0


def test_folded_predict_path_follows_weight_changes(r18) -> None:
    """A weight changed after a prediction (an optimiser step, a loaded checkpoint) is seen by the next one."""
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    r18.mark_fitted()
    before = r18.predict(images).anomaly_map
    assert r18.folded_reconstruction() is r18.folded_reconstruction()  # unchanged weights: built once
    saved = {k: v.clone() for k, v in r18.state_dict().items()}
    try:
        _scramble_batchnorm(r18, 8)
        changed = r18.predict(images).anomaly_map
        with torch.no_grad():
            encoded, decoded = r18(images)
        expected = sum(F.interpolate((1 - F.cosine_similarity(e, d, dim=1)).unsqueeze(1), size=(64, 64),
                                     mode="bilinear", align_corners=False)[:, 0] for e, d in zip(encoded, decoded))
        torch.testing.assert_close(changed, gaussian_blur(expected, 4.0), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(changed, before)
    finally:
        r18.load_state_dict(saved)
    torch.testing.assert_close(r18.predict(images).anomaly_map, before)


def test_compute_in_training_mode_uses_the_batch_statistics(r18) -> None:
    """In training mode BatchNorm has no fixed statistics to fold: compute runs the training modules."""
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    saved = {k: v.clone() for k, v in r18.state_dict().items()}  # training mode moves the running statistics
    r18.train()
    try:
        with torch.no_grad():
            scores, amap = r18.compute(images)
            encoded, decoded = r18(images)
    finally:
        r18.eval()
        r18.load_state_dict(saved)
    expected = sum(F.interpolate((1 - F.cosine_similarity(e, d, dim=1)).unsqueeze(1), size=(64, 64),
                                 mode="bilinear", align_corners=False)[:, 0] for e, d in zip(encoded, decoded))
    torch.testing.assert_close(amap, gaussian_blur(expected, 4.0), rtol=1e-4, atol=1e-5)
