"""Same weights, same outputs? Load anomalib's randomly initialised STFPM, FastFlow, EfficientAD, GANomaly and DRAEM
weights into ours and compare the training losses and the test-time maps and scores on the same images.

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
                str(REPO / "plugins/ad-recon/src")]
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
    loss_ours = ours.training_step(type("B", (), {"image": images})()).item()
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
    authors) with zeros: for the comparison our SSIM runs on reflection-padded images, its map cropped back."""
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
    theirs.eval()
    ours.eval()
    with torch.no_grad():
        out = theirs(images)
        score, amap = ours.compute(images)
        ours.score_pooling = 21
        pooled, _ = ours.compute(images)
    return {
        "loss_anomalib": float(loss_t), "loss_ours": float(loss_as_anomalib),
        "loss_rel_diff": abs(float(loss_t) - float(loss_as_anomalib)) / max(abs(float(loss_t)), 1e-12),
        "loss_ours_authors_form": float(loss_ours),
        "reconstruction_max_abs_diff": float((reconstruction_t - reconstruction).abs().max()),
        "score_max_abs_diff": float((out.pred_score.flatten() - score).abs().max()),
        "score_pooled_21_vs_anomalib_max_abs_diff": float((out.pred_score.flatten() - pooled).abs().max()),
        "map_max_abs_diff": float((out.anomaly_map.reshape(amap.shape) - amap).abs().max()),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_path", type=Path)
    parser.add_argument("--models", nargs="+", default=["stfpm", "fastflow", "efficientad", "ganomaly", "draem"])
    args = parser.parse_args()
    import anomalib

    torch.manual_seed(args.seed)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size)
    record = {"anomalib": anomalib.__version__, "torch": torch.__version__, "image_size": args.image_size,
              "batch": args.batch, "seed": args.seed, "models": {}}
    checks = {"stfpm": stfpm, "fastflow": fastflow, "efficientad": efficientad, "ganomaly": ganomaly,
              "draem": draem}
    for name, check in ((n, checks[n]) for n in args.models):
        torch.manual_seed(args.seed)
        record["models"][name] = row = check(images)
        print(f"{name:11s} loss {row['loss_anomalib']:.6g} vs {row['loss_ours']:.6g} (rel. diff {row['loss_rel_diff']:.1e}); "
              f"max |score diff| {row['score_max_abs_diff']:.1e}; max |map diff| {row['map_max_abs_diff']:.1e} "
              f"(map values up to {row['map_max_abs']:.3g})")
    if args.json_path:
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        args.json_path.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
