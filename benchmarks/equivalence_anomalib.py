"""Same weights, same outputs? Load anomalib's randomly initialised STFPM, FastFlow, EfficientAD, DFM and CFA weights
into ours and compare the training losses and the test-time maps and scores on the same images.

With random backbone weights, side-by-side accuracy depends on the draw of the weights (see the seed sweeps in
the plugin READMEs); this script takes the draw out of the comparison. It must run in an environment where
anomalib is installed; it imports ad-core and the plugins from this checkout.

    <anomalib venv>/bin/python benchmarks/equivalence_anomalib.py --json benchmarks/results/equivalence_anomalib.json
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins/ad-kd/src"), str(REPO / "plugins/ad-flow/src"),
                 str(REPO / "plugins/ad-adapt/src"),
                 str(REPO / "plugins/ad-synth/src"),
                 str(REPO / "plugins/ad-recon/src"),
                 str(REPO / "plugins/ad-foundation/src")]
warnings.filterwarnings("ignore")

import timm  # noqa: E402
import torch  # noqa: E402

_create = timm.create_model
timm.create_model = lambda *a, **kw: _create(*a, **{**kw, "pretrained": False})  # offline: random weights


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def stfpm(images: torch.Tensor) -> dict[str, float]:
    from anomalib.models.image.stfpm.loss import STFPMLoss
    from anomalib.models.image.stfpm.torch_model import STFPMModel

    from ad_kd.stfpm import Stfpm, pyramid_loss

    theirs = STFPMModel(layers=["layer1", "layer2", "layer3"], backbone="resnet18")
    ours = Stfpm(pretrained=False)
    teacher = _strip(theirs.teacher_model.state_dict(), "feature_extractor.")
    ours.networks.teacher.load_state_dict({"model." + k: v for k, v in teacher.items()})
    ours.networks.student.load_state_dict(_strip(theirs.student_model.state_dict(), "feature_extractor."))
    theirs.train()
    theirs.teacher_model.eval()
    ours.train()
    loss_theirs = STFPMLoss()(*theirs(images)).item()
    loss_ours = pyramid_loss(*ours.networks(images)).item()
    return _compare(theirs, ours, images, loss_theirs, loss_ours)


def fastflow(images: torch.Tensor) -> dict[str, float]:
    from anomalib.models.image.fastflow.loss import FastflowLoss
    from anomalib.models.image.fastflow.torch_model import FastflowModel

    from ad_flow.fastflow import FastFlow

    size = images.shape[-1]
    theirs = FastflowModel(input_size=(size, size), backbone="resnet18", pre_trained=False, flow_steps=8,
                           conv3x3_only=False, hidden_ratio=1.0)
    ours = FastFlow(pretrained=False, image_size=size, conv3x3_only=False)
    backbone = _strip(theirs.feature_extractor.state_dict(), "")
    ours.backbone.load_state_dict({"model." + k: v for k, v in backbone.items()})
    ours.norms.load_state_dict(theirs.norms.state_dict())
    with torch.no_grad():
        for flow_ours, flow_theirs in zip(ours.flows, theirs.fast_flow_blocks):
            for block, node in zip(flow_ours.blocks, flow_theirs.module_list):
                channels = block.channels
                block.subnet.load_state_dict(node.subnet.state_dict())
                block.global_scale.copy_(node.global_scale.view(1, channels))
                block.global_offset.copy_(node.global_offset.view(1, channels))
                index = node.w_perm.view(channels, channels).argmax(1)
                block.perm_index.copy_(index)
                block.perm_inverse.copy_(torch.argsort(index))
    theirs.train()
    ours.train()
    loss_theirs = FastflowLoss()(*theirs(images)).item()
    from ad_core.plugin_api import Batch, StepContext

    batch = Batch(images, torch.zeros(len(images), dtype=torch.long), None, [""] * len(images), [""] * len(images))
    ctx = StepContext(optimizers=[], schedulers=[], scaler=None, grad_clip=None)  # automatic mode: counters only
    loss_ours = ours.training_step(batch, ctx).item()
    return _compare(theirs, ours, images, loss_theirs, loss_ours)


def efficientad(images: torch.Tensor) -> dict[str, float]:
    """EfficientAD-S without padding (anomalib's default), the same teacher statistics and map quantiles."""
    from anomalib.models.image.efficient_ad.torch_model import EfficientAdModel

    from ad_kd.efficientad.model import EfficientAD

    size = images.shape[-1]
    theirs = EfficientAdModel(teacher_out_channels=384, model_size="small", padding=False, pad_maps=True)
    ours = EfficientAD(size="small", image_size=size, pretrained=False, padding=False)
    ours.teacher.load_state_dict(theirs.teacher.state_dict())
    ours.student.load_state_dict(theirs.student.state_dict())
    encoder = [getattr(theirs.ae.encoder, f"enconv{i}") for i in range(1, 7)]
    decoder = [getattr(theirs.ae.decoder, f"deconv{i}") for i in range(1, 8)]
    for mine, other in zip([*ours.ae.encoder, *ours.ae.decoder], encoder + decoder):
        mine.load_state_dict(other.state_dict())
    ours.ae.head.load_state_dict(theirs.ae.decoder.deconv8.state_dict())
    generator = torch.Generator().manual_seed(1)
    mean, std = torch.randn(1, 384, 1, 1, generator=generator), torch.rand(1, 384, 1, 1, generator=generator) + 0.5
    with torch.no_grad():
        theirs.mean_std["mean"].copy_(mean)
        theirs.mean_std["std"].copy_(std)
    ours.set_teacher_statistics(mean, std)
    augmented = (images * 1.1).clamp(0, 1)
    penalty = torch.rand(images.shape, generator=generator)
    theirs.choose_random_aug_image = lambda image: augmented  # the same draw on both sides
    theirs.train()
    ours.train()
    ours.ae.dropout.p = theirs.ae.decoder.dropout1.p = 0.0  # dropout's draws differ between the two
    for name in ("dropout2", "dropout3", "dropout4", "dropout5", "dropout6"):
        getattr(theirs.ae.decoder, name).p = 0.0
    loss_st, loss_ae, loss_stae = theirs(images, penalty)
    mine = ours.losses(images, augmented, penalty)
    loss_theirs = float(loss_st + loss_ae + loss_stae)
    ours.eval()
    with torch.no_grad():
        ours.set_map_quantiles(*ours.raw_maps(images))
        (sa, sb), (aa, ab) = ours.st_quantiles, ours.ae_quantiles
        for key, value in (("qa_st", sa), ("qb_st", sb), ("qa_ae", aa), ("qb_ae", ab)):
            theirs.quantiles[key].copy_(value)
    return _compare(theirs, ours, images, loss_theirs, float(mine["loss"]))


def _dfm(images: torch.Tensor, score_type: str) -> dict[str, float]:
    """DFM fitted on the same training images by both; anomalib's component count is given to ours (see below)."""
    from anomalib.models.components import PCA
    from anomalib.models.image.dfm.torch_model import DFMModel, SingleClassGaussian

    from ad_adapt.dfm import Dfm
    from ad_core.types import Batch

    train = torch.randn(8, *images.shape[1:], generator=torch.Generator().manual_seed(2))
    theirs = DFMModel(backbone="resnet18", layer="layer3", pre_trained=False, pooling_kernel_size=2,
                      score_type=score_type)
    row: dict[str, float | str] = {}
    if score_type == "nll":
        # As shipped, anomalib 2.7's NLL does not run on current torch (`torch.mean(..., device=...)` in
        # SingleClassGaussian.fit), and its PCA.fit centres the memory bank in place before DFMModel.fit projects
        # it, so its Gaussian would be fitted to the coordinates of x - 2 mean but score those of x - mean. Both
        # are patched for the comparison.
        row["as_shipped"] = _fit_dfm(theirs, train) or "fits"
        pca_fit = PCA.fit
        PCA.fit = lambda self, dataset: pca_fit(self, dataset.clone())
        SingleClassGaussian.fit = _gaussian_fit
        theirs = DFMModel(backbone="resnet18", layer="layer3", pre_trained=False, pooling_kernel_size=2,
                          score_type=score_type)
    error = _fit_dfm(theirs, train)
    if error:
        raise RuntimeError(error)
    # anomalib keeps the components *before* the one at which the cumulative ratio reaches 0.97 (one fewer than
    # the paper's rule), so ours is given anomalib's count for the comparison.
    k = int(theirs.pca_model.num_components)
    row["n_components"] = k
    ours = Dfm(backbone="resnet18", pretrained=False, pooling_kernel_size=2, n_components=k, score_type=score_type)
    ours.backbone.load_state_dict({"model." + key: v for key, v in
                                   _strip(theirs.feature_extractor.state_dict(), "feature_extractor.").items()})
    ours.on_fit_start([])
    ours.update(Batch(train, torch.zeros(len(train), dtype=torch.long), None, [""] * len(train), [""] * len(train)))
    ours.finalize()
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        score, amap = ours.compute(images)
        out = theirs(images.clone())
    row["score_max_abs_diff"] = float((out.pred_score.flatten() - score).abs().max())
    row["score_max_abs"] = float(out.pred_score.abs().max())
    if amap is not None:
        row["map_max_abs_diff"] = float((out.anomaly_map[:, 0] - amap).abs().max())
        row["map_max_abs"] = float(out.anomaly_map.abs().max())
    return row


def _fit_dfm(model, train: torch.Tensor) -> str | None:
    """anomalib's DFM fitted on `train`; the error it raises, if any."""
    model.train()
    with torch.no_grad():
        model(train.clone())
        try:
            model.fit()
        except TypeError as exc:
            return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


def _gaussian_fit(self, dataset: torch.Tensor) -> None:
    """anomalib's SingleClassGaussian.fit without the `device` argument current torch.mean rejects."""
    self.mean_vec = dataset.mean(dim=1)
    centred = (dataset - self.mean_vec[:, None]) / dataset.shape[1] ** 0.5
    self.u_mat, self.sigma_mat, _ = torch.linalg.svd(centred, full_matrices=False)


def dfm(images: torch.Tensor) -> dict[str, float]:
    return _dfm(images, "fre")


def dfm_nll(images: torch.Tensor) -> dict[str, float]:
    return _dfm(images, "nll")


def cfa(images: torch.Tensor) -> dict[str, float]:
    """CFA-R18 (γ_c = γ_d = 1): the same bank from the same images, then the loss, scores and maps."""
    import torchvision
    from anomalib.models.image.cfa import torch_model as cfa_module
    from anomalib.models.image.cfa.loss import CfaLoss
    from torchvision.models.feature_extraction import create_feature_extractor

    from ad_adapt.cfa import Cfa
    from ad_core.types import Batch

    def random_extractor(backbone: str, return_nodes: list[str]):  # offline: torchvision without weights
        return create_feature_extractor(getattr(torchvision.models, backbone)(weights=None), return_nodes).eval()

    cfa_module.get_feature_extractor = random_extractor
    theirs = cfa_module.CfaModel(backbone="resnet18", gamma_c=1, gamma_d=1, num_nearest_neighbors=3,
                                 num_hard_negative_features=3, radius=1e-5)
    ours = Cfa(backbone="resnet18", pretrained=False)
    ours.backbone.load_state_dict({"model." + key: v for key, v in theirs.feature_extractor.state_dict().items()})
    ours.descriptor.load_state_dict(theirs.descriptor.layer.conv2d.state_dict())
    batch = Batch(images, torch.zeros(len(images), dtype=torch.long), None, [""] * len(images), [""] * len(images))
    theirs.initialize_centroid([batch])
    ours.on_fit_start([batch])
    bank_diff = float((theirs.memory_bank.T - ours.memory_bank).abs().max())
    theirs.train()
    ours.train()
    loss_theirs = float(CfaLoss(3, 3, 1e-5)(theirs(images)))
    loss_ours = float(ours.training_step(batch, None))
    ours.finalize()
    theirs.eval()
    ours.eval()
    with torch.no_grad():
        out = theirs(images)
        score, amap = ours.compute(images)
        # anomalib takes the square root of |f|^2 + |c|^2 - 2 f.c in float32, which cancels for near items; ours
        # measures the nearest items' distances directly. anomalib with its distances in float64 is the referee.
        features = theirs.descriptor(list(theirs.feature_extractor(images).values()))
        bank = theirs.memory_bank
        theirs.memory_bank = bank.double()
        distance = theirs.compute_distance(features.double())
        theirs.memory_bank = bank
        generator = theirs.anomaly_map_generator
        reference = generator.compute_anomaly_map(generator.compute_score(distance, features.shape[-2:]).float(),
                                                  image_size=images.shape[-2:])[:, 0]
    return {
        "map_max_abs_diff_to_float64": float((reference - amap).abs().max()),
        "anomalib_map_max_abs_diff_to_float64": float((reference - out.anomaly_map).abs().max()),
        "bank_max_abs_diff": bank_diff,
        "loss_anomalib": loss_theirs,
        "loss_ours": loss_ours,
        "loss_rel_diff": abs(loss_theirs - loss_ours) / max(abs(loss_theirs), 1e-12),
        "score_max_abs_diff": float((out.pred_score.flatten() - score).abs().max()),
        "map_max_abs_diff": float((out.anomaly_map - amap).abs().max()),
        "map_max_abs": float(out.anomaly_map.abs().max()),
    }


def _compare(theirs, ours, images: torch.Tensor, loss_theirs: float, loss_ours: float) -> dict[str, float]:
    """Both models in eval mode on the same images: how far apart are their scores and maps?"""
    theirs.eval()
    ours.eval()
    with torch.no_grad():
        out = theirs(images)
        score, amap = ours.compute(images)
    map_theirs = out.anomaly_map[:, 0]
    return {
        "loss_anomalib": loss_theirs,
        "loss_ours": loss_ours,
        "loss_rel_diff": abs(loss_theirs - loss_ours) / max(abs(loss_theirs), 1e-12),
        "score_max_abs_diff": float((out.pred_score.flatten() - score).abs().max()),
        "map_max_abs_diff": float((map_theirs - amap).abs().max()),
        "map_max_abs": float(map_theirs.abs().max()),
    }


def supersimplenet(images: torch.Tensor) -> dict[str, float]:
    """Unsupervised SuperSimpleNet on ResNet-18 with the same feature noise and Perlin masks on both sides.

    The training forward and loss must agree exactly; the map differs only by the blur's kernel (anomalib cuts the
    sigma-4 Gaussian at 3 sigma, ad-core at 4 sigma), so the raw map logits are compared as well."""
    import anomalib.models.image.supersimplenet.torch_model as their_module
    from anomalib.models.image.supersimplenet.loss import SSNLoss

    from ad_synth.supersimplenet import SuperSimpleNet, ssn_loss

    theirs = their_module.SupersimplenetModel(backbone="resnet18")
    ours = SuperSimpleNet(backbone="resnet18", pretrained=False)
    backbone = _strip(theirs.feature_extractor.feature_extractor.state_dict(), "feature_extractor.")
    ours.features.backbone.model.load_state_dict(backbone)
    ours.adaptor.load_state_dict(_strip(theirs.adaptor.state_dict(), "projection."))
    ours.segdec.load_state_dict(theirs.segdec.state_dict())
    theirs.train()
    ours.train()
    b = images.shape[0]
    features = ours.features(images)
    noise, perlin = ours.draws(b, features.shape[1], tuple(features.shape[-2:]))
    theirs.anomaly_generator.generate_perlin = lambda *_: perlin
    real_normal = torch.normal
    torch.normal = lambda *a, **kw: noise / 0.015 * kw["std"]
    try:
        labels = torch.zeros(b)
        out_theirs = theirs(images, masks=None, labels=labels)
    finally:
        torch.normal = real_normal
    loss_theirs = SSNLoss()(*out_theirs).item()
    masks = torch.zeros(b, *images.shape[-2:])
    out_ours = ours.forward_train(features, masks, labels, noise, perlin)
    loss_ours = ssn_loss(*out_ours).item()
    row = _compare(theirs, ours, images, loss_theirs, loss_ours)
    row["train_map_logits_max_abs_diff"] = float((out_theirs[0] - out_ours[0]).abs().max())
    row["train_score_logits_max_abs_diff"] = float((out_theirs[1] - out_ours[1]).abs().max())
    with torch.no_grad():
        their_features = theirs.feature_extractor(images)
        their_map = theirs.segdec(theirs.adaptor(their_features), their_features)[0]
        row["eval_map_logits_max_abs_diff"] = float((their_map - ours.logits(images)[0]).abs().max())
    return row


def glass(images: torch.Tensor) -> dict[str, float]:
    """GLASS on ResNet-18, 1536-d, with the same LAS images and masks, Gaussian draws and centre on both sides,
    for the manifold and the hypersphere projection: patch features, the three losses, scores and maps."""
    from anomalib.models.image.glass.torch_model import GlassModel

    from ad_synth.glass import Glass

    size = tuple(images.shape[-2:])
    theirs = GlassModel(input_shape=size, backbone="resnet18", pre_trained=True)  # random weights (timm patched)
    ours = Glass(backbone="resnet18", pretrained=False)
    backbone = _strip(theirs.forward_modules["feature_aggregator"].state_dict(), "feature_extractor.")
    ours.backbone.model.load_state_dict(backbone)
    ours.projection.load_state_dict(_strip(theirs.projection.state_dict(), "layers.0fc."))
    disc = {k: v.clone() for k, v in theirs.discriminator.state_dict().items()}
    ours.discriminator.load_state_dict({k.replace("body.block1.", "body."): v for k, v in disc.items()})
    with torch.no_grad():
        embed_diff = float((theirs.generate_embeddings(images, evaluation=True)[0]
                            - ours.embedder(ours.backbone(images))[0]).abs().max())
    pixels = ours._pixels(images)
    generator = torch.Generator().manual_seed(1)
    masks = (torch.rand(images.shape[0], 1, *size, generator=generator) > 0.7).float()
    aug_pixels = pixels * (1 - masks) + torch.rand(pixels.shape, generator=generator) * masks
    aug = (aug_pixels - theirs._img_mean) / theirs._img_std
    row: dict[str, float] = {"embedding_max_abs_diff": embed_diff}
    for name, hypersphere in (("manifold", False), ("hypersphere", True)):
        theirs.discriminator.load_state_dict(disc)  # the same BatchNorm statistics before each branch
        ours.discriminator.load_state_dict({k.replace("body.block1.", "body."): v for k, v in disc.items()})
        with torch.no_grad():
            feats, grid = ours.embed(images)
            center = feats.view(images.shape[0], grid[0] * grid[1], -1).mean(0)
        theirs.center, theirs.svd = center, int(hypersphere)
        ours.hypersphere.fill_(hypersphere)
        ours.train()
        theirs.train()
        true_feats, grid = ours.embed(images)
        noise = torch.randn(true_feats.shape, generator=generator) * 0.015
        theirs.augmentor.forward = lambda _: (aug_pixels, masks)
        real_randn_like = torch.randn_like
        torch.randn_like = lambda _: noise / 0.015  # noqa: B023  (used within this iteration)
        try:
            loss_theirs = theirs(images)
        finally:
            torch.randn_like = real_randn_like
        fake_feats, _ = ours.embed(aug)
        patch_masks = torch.nn.functional.adaptive_max_pool2d(masks, grid).flatten()
        loss_ours = ours.glass_loss(true_feats, fake_feats, patch_masks, noise,
                                    center.repeat(images.shape[0], 1))
        for key, theirs_value in zip(("true_loss", "gaus_loss", "focal_loss", "loss"),
                                     (loss_theirs[0], loss_theirs[1], loss_theirs[3], loss_theirs[4])):
            row[f"{name}_{key}_anomalib"] = float(theirs_value)
            row[f"{name}_{key}_ours"] = float(loss_ours[key])
        row[f"{name}_loss_rel_diff"] = abs(float(loss_theirs[4]) - float(loss_ours["loss"])) / float(loss_theirs[4])
    theirs.eval()
    ours.eval()
    with torch.no_grad():
        out = theirs(images)
        score, amap = ours.compute(images)
    row["score_max_abs_diff"] = float((out.pred_score.flatten() - score).abs().max())
    row["map_max_abs_diff"] = float((out.anomaly_map.reshape(amap.shape) - amap).abs().max())
    row["loss_rel_diff"] = max(row["manifold_loss_rel_diff"], row["hypersphere_loss_rel_diff"])
    row["loss_anomalib"], row["loss_ours"] = row["manifold_loss_anomalib"], row["manifold_loss_ours"]
    row["map_max_abs"] = float(out.anomaly_map.abs().max())
    return row


def _copy_in_order(mine: torch.nn.Module, other: torch.nn.Module) -> None:
    """Copy `other`'s state into `mine` entry by entry (both register their layers in the same order)."""
    theirs = list(other.state_dict().values())
    target = mine.state_dict()
    assert len(theirs) == len(target), (len(theirs), len(target))
    mine.load_state_dict({k: v.view_as(target[k]) for k, v in zip(target, theirs)})


def ganomaly(images: torch.Tensor) -> dict[str, float]:
    """GANomaly's networks with anomalib's first-layer padding (4; the authors' 1 is ours by default), the
    discriminator loss and the score. The generator losses differ by design (anomalib: MSE of the discriminator's
    outputs and a smooth-L1 latent loss; ours, as the authors: feature matching and an L2 latent loss), so the
    anomalib generator loss is also computed on our outputs to show the networks agree."""
    from anomalib.models.image.ganomaly.loss import DiscriminatorLoss, GeneratorLoss
    from anomalib.models.image.ganomaly.torch_model import GanomalyModel

    from ad_recon.ganomaly import Ganomaly, discriminator_loss, generator_loss

    size = images.shape[-1]
    theirs = GanomalyModel(input_size=(size, size), num_input_channels=3, n_features=16, latent_vec_size=100)
    ours = Ganomaly(image_size=size, n_features=16)
    for encoder in (ours.generator.encoder1, ours.generator.encoder2, ours.discriminator.features):
        encoder[0].padding = (4, 4)  # anomalib's first convolution
    _copy_in_order(ours.generator, theirs.generator)
    _copy_in_order(ours.discriminator, theirs.discriminator)
    theirs.train()
    ours.train()
    _, fake_t, z_t, zh_t = theirs(images)
    pred_real, _ = theirs.discriminator(images)
    pred_fake, _ = theirs.discriminator(fake_t)
    g_theirs = GeneratorLoss()(z_t, zh_t, images, fake_t, pred_real, pred_fake)
    d_theirs = DiscriminatorLoss()(pred_real, pred_fake)
    fake, z, zh = ours.generator(images)
    logit_real, feat_real = ours.discriminator(images)
    logit_fake, feat_fake = ours.discriminator(fake)
    g_ours, _ = generator_loss(images, fake, z, zh, feat_real, feat_fake, *ours.weights)
    g_anomalib_on_ours = GeneratorLoss()(z, zh, images, fake, torch.sigmoid(logit_real), torch.sigmoid(logit_fake))
    d_ours = discriminator_loss(logit_real, logit_fake)
    theirs.eval()
    ours.eval()
    with torch.no_grad():
        score_t = theirs(images).pred_score
        score, _ = ours.compute(images)
    return {
        "loss_anomalib": float(g_theirs), "loss_ours": float(g_anomalib_on_ours),
        "loss_rel_diff": abs(float(g_theirs) - float(g_anomalib_on_ours)) / max(abs(float(g_theirs)), 1e-12),
        "generator_loss_ours_authors_form": float(g_ours),
        "discriminator_loss_rel_diff": abs(float(d_theirs) - float(d_ours)) / max(abs(float(d_theirs)), 1e-12),
        "reconstruction_max_abs_diff": float((fake_t - fake).abs().max()),
        "score_max_abs_diff": float((score_t.flatten() - score).abs().max()),
        "map_max_abs_diff": 0.0, "map_max_abs": 0.0,  # image-level scores only
    }


def draem(images: torch.Tensor) -> dict[str, float]:
    """DRAEM at the paper's widths. Ours feeds the discriminative network (reconstruction, input), anomalib
    (input, reconstruction): the first convolution's input channels are swapped when copying. Scores are
    compared with `score_pooling=1` (anomalib's plain maximum) and, as the intended deviation, with the authors'
    21x21 pooling. Loss terms: L2 is the same; anomalib's focal loss is kornia's with alpha=1 (the background class
    weighted 0, the mean taken over classes x pixels), compared with half of ours at alpha=1 and no smoothing; anomalib's SSIM pads by reflection, ours (as the
    authors) with zeros: for the comparison our SSIM runs on reflection-padded images, its map cropped back.
    Then one Adam step on each side from that loss: the updated weights must agree too (the training step is
    the same; what differs between the two pipelines is the data they are given)."""
    from anomalib.models.image.draem.loss import DraemLoss
    from anomalib.models.image.draem.torch_model import DraemModel

    from ad_core.components.losses import focal_loss, ssim, ssim_loss
    from ad_recon.draem import Draem

    theirs = DraemModel()
    ours = Draem(image_size=list(images.shape[-2:]), score_pooling=1)
    _copy_in_order(ours.reconstructive, theirs.reconstructive_subnetwork)
    state = dict(theirs.discriminative_subnetwork.state_dict())
    first = next(iter(state))
    state[first] = state[first][:, [3, 4, 5, 0, 1, 2]]
    helper = type(theirs.discriminative_subnetwork)(in_channels=6, out_channels=2)
    helper.load_state_dict(state)
    _copy_in_order(ours.discriminative, helper)
    generator = torch.Generator().manual_seed(2)
    clean = torch.rand(images.shape, generator=generator)
    masks = (torch.rand(images.shape[0], *images.shape[-2:], generator=generator) > 0.8).float()
    augmented = torch.where(masks.bool().unsqueeze(1), torch.rand(images.shape, generator=generator), clean)
    theirs.train()
    ours.train()
    reconstruction_t, logits_t = theirs(augmented)
    loss_t = DraemLoss()(clean, reconstruction_t, masks.unsqueeze(1), logits_t)
    reconstruction, logits = ours(augmented)
    l2 = torch.nn.functional.mse_loss(reconstruction, clean)
    pad = lambda t: torch.nn.functional.pad(t, (5, 5, 5, 5), mode="reflect")  # noqa: E731
    ssim_reflect = 1 - ssim(pad(reconstruction), pad(clean))[1][..., 5:-5, 5:-5].mean()
    # kornia averages its focal map over classes x pixels: half the per-pixel mean with two classes
    loss_as_anomalib = l2 + ssim_reflect + 0.5 * focal_loss(torch.softmax(logits, 1), masks, alpha=1.0, smooth=0.0)
    loss_ours = l2 + ssim_loss(reconstruction, clean) + focal_loss(torch.softmax(logits, 1), masks)  # `Draem.loss`
    ours.focal_alpha = 1.0  # the option `focal_alpha=1` against kornia's loss on the same logits (smoothing aside)
    focal_option, focal_kornia = ours.focal(torch.softmax(logits, 1), masks), DraemLoss().focal_loss(logits, masks.long())
    ours.focal_alpha = None
    theirs.eval()
    ours.eval()
    with torch.no_grad():
        out = theirs(images)
        score, amap = ours.compute(images)
        ours.score_pooling = 21
        pooled, _ = ours.compute(images)
    step_diff = _draem_adam_step_diff(theirs, ours, loss_t, loss_as_anomalib)
    return {
        "loss_anomalib": float(loss_t), "loss_ours": float(loss_as_anomalib),
        "loss_rel_diff": abs(float(loss_t) - float(loss_as_anomalib)) / max(abs(float(loss_t)), 1e-12),
        "loss_ours_authors_form": float(loss_ours),
        "focal_alpha_1_option_vs_kornia_rel_diff": abs(float(focal_option) - float(focal_kornia)) / float(focal_kornia),
        "reconstruction_max_abs_diff": float((reconstruction_t - reconstruction).abs().max()),
        "score_max_abs_diff": float((out.pred_score.flatten() - score).abs().max()),
        "score_pooled_21_vs_anomalib_max_abs_diff": float((out.pred_score.flatten() - pooled).abs().max()),
        "map_max_abs_diff": float((out.anomaly_map.reshape(amap.shape) - amap).abs().max()),
        "map_max_abs": float(out.anomaly_map.abs().max()),
        **step_diff,
    }


def _draem_adam_step_diff(theirs: torch.nn.Module, ours: torch.nn.Module, loss_theirs: torch.Tensor,
                          loss_ours: torch.Tensor) -> dict[str, float]:
    """One Adam step (lr 1e-4) on each side from the same weights, batch and loss form. Gradients are compared
    directly; updated states (weights and batch-norm statistics) too, except where a gradient is numerical noise
    (below 1e-6: the convolution biases in front of a batch norm, whose true gradient is 0; Adam turns the
    noise's sign into a step of +-lr, so those entries may differ by 2 lr; so may any entry whose gradient is
    tiny, Adam's first step being lr times the gradient's sign: the share of differing weight entries is given)."""
    for model, loss in ((theirs, loss_theirs), (ours, loss_ours)):
        model.zero_grad()
        loss.backward()
    pairs = [(theirs.reconstructive_subnetwork, ours.reconstructive),
             (theirs.discriminative_subnetwork, ours.discriminative)]
    grads = []
    for index, (other, mine) in enumerate(pairs):
        for k, ((_, p_t), (_, p_o)) in enumerate(zip(other.named_parameters(), mine.named_parameters())):
            g_t = p_t.grad[:, [3, 4, 5, 0, 1, 2]] if index == 1 and k == 0 else p_t.grad
            grads.append((g_t.reshape(p_o.shape), p_o.grad))
    grad_diff = max(float((a - b).abs().max()) for a, b in grads)
    grad_max = max(float(a.abs().max()) for a, _ in grads)
    noise = [float(a.abs().max()) < 1e-6 for a, _ in grads]
    grad_rel = max(float((a - b).abs().max() / a.abs().max()) for (a, b), n in zip(grads, noise) if not n)
    for model in (theirs, ours):
        torch.optim.Adam(model.parameters(), lr=1e-4).step()
    diff, k, flipped, entries = 0.0, 0, 0, 0
    for index, (other, mine) in enumerate(pairs):
        names = {name for name, _ in mine.named_parameters()}
        values = list(other.state_dict().values())
        if index == 1:  # the discriminative network's first convolution sees (input, reconstruction) in anomalib
            values[0] = values[0][:, [3, 4, 5, 0, 1, 2]]
        for (name, our_value), theirs_value in zip(mine.state_dict().items(), values):
            if name in names:
                k += 1
                if noise[k - 1]:
                    continue
            delta = (theirs_value.double() - our_value.double().view_as(theirs_value)).abs()
            diff = max(diff, float(delta.max()))
            if name in names:
                flipped, entries = flipped + int((delta > 1e-6).sum()), entries + delta.numel()
    return {"grad_max_abs_diff": grad_diff, "grad_max_abs": grad_max, "grad_max_rel_diff_per_tensor": grad_rel,
            "noise_gradient_tensors": float(sum(noise)), "adam_step_state_max_abs_diff": diff,
            "adam_step_weight_entries_differing": flipped / entries}


def _blur_reflect(amap: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """anomalib's score path: the map resized to 256 px, blurred by the same 5-tap kernel with reflect padding."""
    x = torch.nn.functional.interpolate(amap.unsqueeze(1), size=256, mode="bilinear", align_corners=False)
    x = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    x = torch.nn.functional.conv2d(x, kernel.view(1, 1, -1, 1))
    return torch.nn.functional.conv2d(x, kernel.view(1, 1, 1, -1))[:, 0]


def dinomaly(images: torch.Tensor) -> dict[str, float]:
    """Dinomaly on a random ViT-S/14-reg4 at the largest multiple of 14 that fits, after 500 steps (mining ratio
    0.45). Dropout is off on both sides (their draws differ). Intended deviations, measured separately:
    anomalib's decoder and bottleneck MLPs have no biases (the authors' have; ours are loaded as zeros),
    anomalib's linear attention has no ε (ours: the authors' 1e-6; the exact rows use ε = 0, `eps_*` rows
    measure it), anomalib returns the map before smoothing and blurs the score's 256-px map with reflect padding
    (ours: the authors' zero padding, and the smoothed map is the output)."""
    from anomalib.models.image.dinomaly.torch_model import DinomalyModel

    from ad_foundation.dinomaly import Dinomaly, hard_mining_cosine_loss, mining_ratio, top_mean

    side = images.shape[-1] // 14 * 14
    images = images[..., :side, :side]
    theirs = DinomalyModel(encoder_name="vit_small_patch14_reg4_dinov2")
    ours = Dinomaly(backbone="vit_small_patch14_reg4_dinov2", pretrained=False)
    encoder = theirs.encoder.feature_extractor.state_dict()
    ours.encoder.model.load_state_dict({k: v for k, v in encoder.items() if k in ours.encoder.model.state_dict()})
    linears = [m for m in [*ours.bottleneck.modules(), *ours.decoder.modules()] if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for linear in linears:
            linear.bias.zero_()
    mapped = {f"bottleneck.{o}.weight": theirs.bottleneck[0].state_dict()[f"{t}.weight"]
              for o, t in ((1, "fc1"), (4, "fc2"))}
    for key, value in theirs.decoder.state_dict().items():
        key = key.replace("mlp.fc1.", "mlp.0.").replace("mlp.fc2.", "mlp.3.")
        mapped[f"decoder.{key}"] = value
    missing, unexpected = ours.load_state_dict(mapped, strict=False)
    assert not unexpected and all(k.startswith("encoder.") or k.endswith(".bias") or k == "fitted"
                                  for k in missing), missing
    for module in [*theirs.modules(), *ours.modules()]:
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    attention_eps = [block.attn for block in ours.decoder]
    for attention in attention_eps:
        attention.eps = 0.0

    step = 500
    theirs.train()
    ours.train()
    loss_theirs = theirs(images, global_step=step)
    loss_theirs.backward()
    encoded, decoded = ours(images)
    loss_ours = hard_mining_cosine_loss(encoded, decoded, mining_ratio(step, 0.9, 1000), 0.1)
    loss_ours.backward()
    own = dict(ours.decoder.named_parameters())
    grads = [(a.grad, own[name.replace("mlp.fc1.", "mlp.0.").replace("mlp.fc2.", "mlp.3.")].grad)
             for name, a in theirs.decoder.named_parameters()]
    grad_diff = max(float((a - b).abs().max()) for a, b in grads)
    grad_scale = max(float(a.abs().max()) for a, _ in grads)

    theirs.eval()
    ours.eval()
    with torch.no_grad():
        en_t, de_t = theirs.get_encoder_decoder_outputs(images)
        en_o, de_o = ours(images)
        out = theirs(images)
        raw = ours.raw_map(images)
        score, _ = ours.compute(images)
        score_reflect = top_mean(_blur_reflect(raw, ours.blur_kernel), ours.top_ratio)
        for attention in attention_eps:
            attention.eps = 1e-6
        raw_eps = ours.raw_map(images)
    map_theirs = out.anomaly_map[:, 0]
    return {
        "loss_anomalib": loss_theirs.item(),
        "loss_ours": loss_ours.item(),
        "loss_rel_diff": abs(loss_theirs.item() - loss_ours.item()) / max(abs(loss_theirs.item()), 1e-12),
        "decoder_grad_max_abs_diff": grad_diff,
        "decoder_grad_max_abs": grad_scale,
        "encoder_max_abs_diff": max(float((a - b).abs().max()) for a, b in zip(en_t, en_o)),
        "decoder_max_abs_diff": max(float((a - b).abs().max()) for a, b in zip(de_t, de_o)),
        "map_max_abs_diff": float((map_theirs - raw).abs().max()),
        "score_max_abs_diff": float((out.pred_score.flatten() - score_reflect).abs().max()),
        "map_max_abs": float(map_theirs.abs().max()),
        "eps_raw_map_max_abs_diff": float((map_theirs - raw_eps).abs().max()),
        "zero_padding_score_max_abs_diff": float((out.pred_score.flatten() - score).abs().max()),
    }



def _uninet_state(theirs) -> dict[str, torch.Tensor]:
    """anomalib's UniNet state under our names: teachers as they are, the bottleneck's fusion convolutions into
    `fuse1`/`fuse2`, each block's 3x3 branch (`conv3x3`, `bn2`, `conv3x3_`, `bn5`) and biased branch
    (`conv7x7`, `bn4`, `conv7x7_`, `bn6`; 3x3 after the authors' merge at initialisation) into `plain`/`biased`,
    the decoder's `layerN` into `stages.N-1`, `thetaN` into `thetas.N-1`. Their unused `conv4`, `bn4` and
    per-block `bn7` (and the `fc` of their classification head) have no counterpart."""
    fusion = {"conv1": "fuse1.0", "bn1": "fuse1.1", "conv2": "fuse1.3", "bn2": "fuse1.4", "conv3": "fuse2.0",
              "bn3": "fuse2.1"}
    block = {"conv3x3": "plain.0", "bn2": "plain.1", "conv3x3_": "plain.3", "bn5": "plain.4", "conv7x7": "biased.0",
             "bn4": "biased.1", "conv7x7_": "biased.3", "bn6": "biased.4", "conv3": "expand", "bn3": "bn",
             "downsample": "downsample"}
    state = {}
    for key, value in theirs.state_dict().items():
        parts = key.split(".")
        if parts[0] == "teachers":
            owner = {"source_teacher": "source.model", "target_teacher": "target.model"}[parts[1]]
            state[f"{owner}.{'.'.join(parts[2:])}"] = value
        elif parts[0] == "bottleneck" and parts[1] == "bn_layer":  # bn_layer.0.<block>.<module>...
            if parts[4] in block:
                state[f"bottleneck.embed.{parts[3]}.{block[parts[4]]}.{'.'.join(parts[5:])}"] = value
        elif parts[0] == "bottleneck" and parts[1] in fusion:
            state[f"bottleneck.{fusion[parts[1]]}.{'.'.join(parts[2:])}"] = value
        elif parts[0] == "student":
            state[f"student.stages.{int(parts[1][len('layer'):]) - 1}.{'.'.join(parts[2:])}"] = value
        elif parts[0] == "dfs":
            state[f"selection.thetas.{int(parts[1][len('theta'):]) - 1}"] = value
    return state


def uninet(images: torch.Tensor) -> dict[str, float]:
    """UniNet on Wide-ResNet-50-2 with anomalib's bottleneck width (64 per group; the authors' 128 is ours by
    default) and its temperature (0.1; the authors' default 2 is ours). The training forward (teacher and
    student features after feature selection), the loss without anomalib's extra classification head, and the
    anomaly map must agree. The image score differs by design: anomalib takes the maximum of a 5x5-kernel blur of
    the map, the authors' weighted decision (ours) the mean of its top k pixels after a sigma-4 blur; the
    script checks anomalib's score against its own rule applied to our map."""
    import torchvision
    from anomalib.models.components.filters import GaussianBlur2d
    from anomalib.models.image.uninet import torch_model
    from anomalib.models.image.uninet.components import UniNetLoss
    from torchvision.models.feature_extraction import create_feature_extractor

    from ad_foundation.uninet import UniNet, uninet_loss

    def random_teacher(backbone: str):  # anomalib downloads ImageNet weights here; offline, random ones
        model = getattr(torchvision.models, backbone)(weights=None)
        return create_feature_extractor(model, return_nodes=["layer3", "layer2", "layer1"])

    torch_model.Teachers._get_teacher = staticmethod(random_teacher)
    theirs = torch_model.UniNetModel("wide_resnet50_2", "wide_resnet50_2", UniNetLoss(temperature=0.1))
    ours = UniNet(pretrained=False, temperature=0.1, bottleneck_base_width=64)
    missing, unexpected = ours.load_state_dict(_uninet_state(theirs), strict=False)
    assert missing == ["fitted"] and not unexpected, (missing, unexpected)  # `fitted`: the core's own flag
    labels = torch.zeros(len(images))
    theirs.train()
    theirs.teachers.source_teacher.eval()  # the authors keep the source teacher in eval mode while training
    ours.train()
    teachers_t, bottleneck_in = theirs.teachers(images)
    decoded = theirs.student(theirs.bottleneck(bottleneck_in))
    halves = [d.chunk(2) for d in decoded]
    students_t = theirs._feature_selection(teachers_t, [h[0] for h in halves] + [h[1] for h in halves])
    loss_theirs = float(theirs._compute_loss(students_t, teachers_t, label=labels))
    head = theirs.avgpool(decoded[0]).flatten(1)
    logits = theirs.fc(head).squeeze().chunk(2)
    bce_head = float(theirs.bce_loss(logits[0], labels) + theirs.bce_loss(logits[1], labels))
    teachers_o, students_o = ours(images)
    students_o = ours.selection(students_o, teachers_o)
    loss_ours = float(uninet_loss(students_o, teachers_o, ours.temperature, ours.lambda_weight, ours.margin))
    # Relative to each tensor's largest value: [source 1-3, target 1-3, selected students 1-6].
    features_diff = [float((a - b).abs().max() / a.abs().max()) for a, b in zip([*teachers_t, *students_t],
                                                                               [*teachers_o, *students_o])]
    theirs.eval()
    ours.eval()
    with torch.no_grad():
        out = theirs(images)
        score, amap = ours.compute(images)
        blur = GaussianBlur2d(sigma=4.0, kernel_size=(5, 5), channels=1)
        their_rule_on_ours = blur(amap.unsqueeze(1)).flatten(1).amax(dim=1)
    return {
        "features_max_rel_diff": max(features_diff),
        "features_rel_diffs": features_diff,
        "loss_anomalib": loss_theirs,
        "loss_ours": loss_ours,
        "loss_rel_diff": abs(loss_theirs - loss_ours) / max(abs(loss_theirs), 1e-12),
        "anomalib_classification_head_bce": bce_head,
        "map_max_abs_diff": float((out.anomaly_map - amap).abs().max()),
        "map_max_abs": float(amap.abs().max()),
        "anomalib_score_rule_on_our_map_max_abs_diff": float((out.pred_score.flatten() - their_rule_on_ours).abs().max()),
        "score_max_abs_diff_by_design": float((out.pred_score.flatten() - score).abs().max()),
    }


class _Replay:
    """torch.rand / torch.randint answered from one seeded generator, whatever generator the caller names: two
    implementations that draw the same shapes in the same order then draw the same numbers."""

    def __init__(self, seed: int) -> None:
        self.seed, self.rand, self.randint = seed, torch.rand, torch.randint

    def __enter__(self):
        shared = torch.Generator().manual_seed(self.seed)
        rand, randint = self.rand, self.randint
        torch.rand = lambda *a, generator=None, **kw: rand(*a, generator=shared, **kw)  # noqa: E731
        torch.randint = lambda *a, generator=None, **kw: randint(*a, generator=shared, **kw)  # noqa: E731
        return self

    def __exit__(self, *exc) -> None:
        torch.rand, torch.randint = self.rand, self.randint


def dsr(images: torch.Tensor) -> dict[str, float]:
    """DSR at the paper's widths (codebooks of 4096 x 128). anomalib's VQ weights go through our key mapping of the
    authors' checkpoint layout; the other modules are copied in order. The feature-space anomalies draw the same
    numbers on both sides (`_Replay`) from one shared Perlin-like mask. Intended deviation in the losses: anomalib
    applies kornia's focal loss (alpha=1) to softmax *probabilities* (a second softmax inside kornia), ours the
    authors' focal loss on the probabilities; so the networks' outputs (restored features, images, segmentations,
    targets) are compared directly, the MSE terms exactly, and anomalib's loss is also computed on our outputs."""
    from anomalib.models.image.dsr.loss import DsrSecondStageLoss, DsrThirdStageLoss
    from anomalib.models.image.dsr.torch_model import DsrModel

    from ad_recon.dsr import Dsr
    from ad_recon.dsr_networks import vq_state_from_authors

    images = images[:2].sigmoid()  # DSR reads [0, 1] images
    theirs = DsrModel()
    ours = Dsr(image_size=list(images.shape[-2:]), vq_weights="random")
    ours.vq.load_state_dict(vq_state_from_authors(theirs.discrete_latent_model.state_dict()))
    _copy_in_order(ours.specific_decoder, theirs.image_reconstruction_network)
    _copy_in_order(ours.restriction_hi, theirs.subspace_restriction_module_hi)
    _copy_in_order(ours.restriction_lo, theirs.subspace_restriction_module_lo)
    _copy_in_order(ours.detection, theirs.anomaly_detection_module)
    _copy_in_order(ours.upsampling, theirs.upsampling_module)
    generator = torch.Generator().manual_seed(3)
    masks = torch.zeros(images.shape[0], 1, *images.shape[-2:])
    masks[:, :, 8:40, 16:56] = (torch.rand(images.shape[0], 1, 32, 40, generator=generator) > 0.3).float()
    theirs.train()
    ours.train()
    with _Replay(7):
        out_t = theirs(images, masks)
    with _Replay(7):
        out = ours.phase1(images, masks, torch.Generator())
    loss_t = DsrSecondStageLoss()(out_t["recon_feat_hi"], out_t["recon_feat_lo"], out_t["embedding_bot"],
                                  out_t["embedding_top"], images, out_t["obj_spec_image"], out_t["anomaly_map"],
                                  out_t["true_anomaly_map"])
    mse_t = loss_t - DsrSecondStageLoss().focal_loss(out_t["anomaly_map"], out_t["true_anomaly_map"].squeeze(1).long())
    mse_ours = out.parts["features_hi"] + out.parts["features_lo"] + out.parts["image"]
    loss_anomalib_on_ours = mse_ours + DsrSecondStageLoss().focal_loss(out.segmentation, out.target.squeeze(1).long())
    smudged = images.clone()
    smudged[masks.expand_as(images).bool()] = 0.3
    up_t = theirs(smudged)["anomaly_map"]
    _, up = ours.upsampled(smudged)
    phase2_t = DsrThirdStageLoss()(up_t, masks)
    phase2_anomalib_on_ours = DsrThirdStageLoss()(up, masks)
    theirs.eval()
    ours.eval()
    with torch.no_grad():  # ours scores image by image (see `Dsr.forward`): anomalib too, for the same kernels
        preds = [theirs(image) for image in images.split(1)]
        pred_score = torch.cat([p.pred_score.flatten() for p in preds])
        pred_map = torch.cat([p.anomaly_map.reshape(1, *images.shape[-2:]) for p in preds])
        score, amap = ours(images)
    rel = lambda a, b: abs(float(a) - float(b)) / max(abs(float(a)), 1e-12)  # noqa: E731
    return {
        "loss_anomalib": float(loss_t), "loss_ours": float(loss_anomalib_on_ours),
        "loss_rel_diff": rel(loss_t, loss_anomalib_on_ours),
        "phase1_mse_terms_rel_diff": rel(mse_t, mse_ours),
        "loss_ours_authors_form": float(out.loss),
        "phase1_segmentation_max_abs_diff": float((out_t["anomaly_map"] - out.segmentation).abs().max()),
        "phase1_target_max_abs_diff": float((out_t["true_anomaly_map"] - out.target).abs().max()),
        "phase2_loss_anomalib": float(phase2_t), "phase2_loss_anomalib_on_ours": float(phase2_anomalib_on_ours),
        "phase2_loss_rel_diff": rel(phase2_t, phase2_anomalib_on_ours),
        "phase2_loss_ours_authors_form": float(ours.phase2(smudged, masks)),
        "score_max_abs_diff": float((pred_score - score).abs().max()),
        "map_max_abs_diff": float((pred_map - amap).abs().max()),
        "map_max_abs": float(pred_map.abs().max()),
    }


CHECKS = {"stfpm": stfpm, "fastflow": fastflow, "efficientad": efficientad, "dfm": dfm, "dfm-nll": dfm_nll,
          "cfa": cfa,
          "supersimplenet": supersimplenet, "glass": glass,
          "ganomaly": ganomaly, "draem": draem, "dsr": dsr, "dinomaly": dinomaly, "uninet": uninet}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_path", type=Path)
    parser.add_argument("--models", nargs="+", choices=sorted(CHECKS), default=sorted(CHECKS),
                        help="the models to compare (default: all)")
    args = parser.parse_args()
    import anomalib

    torch.manual_seed(args.seed)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size)
    record = {"anomalib": anomalib.__version__, "torch": torch.__version__, "image_size": args.image_size,
              "batch": args.batch, "seed": args.seed, "models": {}}
    for name in args.models:
        check = CHECKS[name]
        torch.manual_seed(args.seed)
        record["models"][name] = row = check(images)
        if "loss_anomalib" not in row or "score_max_abs_diff" not in row:
            print(f"{name:11s} " + "; ".join(f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}"
                                             for key, value in row.items()))
            continue
        print(f"{name:11s} loss {row['loss_anomalib']:.6g} vs {row['loss_ours']:.6g} (rel. diff {row['loss_rel_diff']:.1e}); "
              f"max |score diff| {row['score_max_abs_diff']:.1e}; max |map diff| {row['map_max_abs_diff']:.1e} "
              f"(map values up to {row['map_max_abs']:.3g})")
    if args.json_path:
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        args.json_path.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
