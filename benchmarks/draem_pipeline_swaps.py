#!/usr/bin/env python3
"""DRAEM's training pipeline against anomalib 2.7's, one piece at a time (controlled swaps).

`dump` (run with the python of a venv that has anomalib) draws the training batches of a run with anomalib's
`PerlinAnomalyGenerator` at DRAEM's settings (probability 0.5, opacity (0.1, 1.0)) and writes them as
safetensors: the clean images, the augmented images, the masks, in the order the run sees them (a seeded
shuffle per epoch). `train` (our venv) trains our DRAEM for that many steps on either those batches or our own
synthesis of the same clean images, with the authors' focal loss or anomalib's (kornia, alpha=1, mean over
classes x pixels), with our schedule (x0.2 at 80 % and 90 % of the steps) or a constant learning rate, then
prints image AUROC (21x21 pooled and plain max) and pixel AUROC on the test split, and appends them to a file.
With our synthesis, `train` also takes anomalib's regime as options (`--rotation 0 --retries 10 --opacity 0.1 1.0`)
and swaps in the two remaining pieces of anomalib's augmenter one at a time: its torchvision texture augmentations
instead of the authors' list (`--augmenters anomalib`) and its rescaling of a Perlin noise that never exceeds the
threshold (`--empty-noise rescale`).

    ANOMALIB_PY benchmarks/draem_pipeline_swaps.py dump --train DEMO/weave/train/good --textures GRAIN --seed 0 \
        --out batches_s0.safetensors
    python benchmarks/draem_pipeline_swaps.py train --category-dir DEMO/weave --textures GRAIN --seed 0 \
        --batches batches_s0.safetensors --synthesis anomalib --focal anomalib --schedule constant

`score-maps` (our venv) checks that both sides' pixel AUROC rank the same pixels: it reads the test batches that
`anomalib_synthesis_models.py --save-maps` wrote, compares anomalib's pre-processed images and ground-truth masks
with the ones our runner's MVTec reader gives for the same files (size, pixel values, anomalous pixels), and scores
anomalib's maps three ways: the exact AUROC of its normalised maps (what it reports), the exact AUROC of its raw
maps, and our runner's metric (`ad_core.metrics.MapMetrics`, binned) on the raw maps. `--ours RUN ...` rescores
our runs' test maps (from their checkpoints) exactly, against the pixel AUROC the runner reported.

    python benchmarks/draem_pipeline_swaps.py score-maps --root DEMO --category weave anomalib_s0.npz ...
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torchvision.io import ImageReadMode, read_image


def read_rgb(path: Path) -> torch.Tensor:
    return read_image(str(path), ImageReadMode.RGB).float() / 255


def dump(args: argparse.Namespace) -> None:
    from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator

    torch.manual_seed(args.seed)
    files = sorted(Path(args.train).glob("*.png"))
    images = torch.stack([read_rgb(f) for f in files])
    augmenter = PerlinAnomalyGenerator(anomaly_source_path=args.textures, blend_factor=(0.1, 1.0))
    order: list[int] = []
    while len(order) < args.steps * args.batch_size:
        order += torch.randperm(len(files)).tolist()
    parts: dict[str, list[torch.Tensor]] = {"images": [], "augmented": [], "masks": []}
    for step in range(args.steps):
        clean = images[order[step * args.batch_size:(step + 1) * args.batch_size]]
        augmented, masks = augmenter(clean)
        parts["images"].append(clean)
        parts["augmented"].append(augmented)
        parts["masks"].append(masks[:, 0])
    save_file({k: torch.stack(v).contiguous() for k, v in parts.items()}, args.out)


def dump_weights(args: argparse.Namespace) -> None:
    """anomalib's initial DRAEM weights for a seed, drawn as benchmarks/anomalib_synthesis_models.py draws them
    (seed_everything, the model with its augmenter, then sub-networks of the given widths)."""
    import timm
    from anomalib.models import Draem
    from anomalib.models.image.draem.torch_model import DiscriminativeSubNetwork, ReconstructiveSubNetwork
    from lightning.pytorch import seed_everything

    create = timm.create_model
    timm.create_model = lambda *a, **kw: create(*a, **{**kw, "pretrained": False})
    torch.set_num_threads(1)
    seed_everything(args.seed, workers=True, verbose=False)
    model = Draem(dtd_dir=args.textures, visualizer=False,
                  pre_processor=Draem.configure_pre_processor(image_size=(args.image_size, args.image_size)))
    model.model.reconstructive_subnetwork = ReconstructiveSubNetwork(base_width=args.widths[0])
    model.model.discriminative_subnetwork = DiscriminativeSubNetwork(in_channels=6, out_channels=2,
                                                                     base_width=args.widths[1])
    state = {}
    for prefix, network in (("r", model.model.reconstructive_subnetwork), ("d", model.model.discriminative_subnetwork)):
        state.update({f"{prefix}.{i:04d}": v.contiguous() for i, v in enumerate(network.state_dict().values())})
    save_file(state, args.out)


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Mann-Whitney AUROC with tied scores sharing their mean rank."""
    scores, labels = scores.flatten().double(), labels.flatten().bool()
    ranks = torch.empty_like(scores)
    ranks[scores.argsort()] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    _, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    ranks = (torch.zeros(len(counts), dtype=torch.float64).index_add_(0, inverse, ranks) / counts)[inverse]
    positives = int(labels.sum())
    negatives = len(labels) - positives
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def load_in_order(model: torch.nn.Module, path: str) -> None:
    """anomalib's sub-network states (`r.NNNN`, `d.NNNN` in registration order, as `dump-weights` writes them)
    into ours; anomalib's discriminative network reads (input, reconstruction), ours the other way round."""
    state = load_file(path)
    for prefix, mine in (("r", model.reconstructive), ("d", model.discriminative)):
        values = [state[k] for k in sorted(state) if k.startswith(prefix + ".")]
        if prefix == "d":
            values[0] = values[0][:, [3, 4, 5, 0, 1, 2]]
        target = mine.state_dict()
        mine.load_state_dict({k: v.view_as(target[k]) for k, v in zip(target, values, strict=True)})


def anomalib_texture_augmenter():
    """anomalib 2.7's texture augmentation in place of the authors' list: three distinct transforms out of its
    ten torchvision ones, in the drawn order; the solarize threshold is drawn once, when the augmenter is built
    (as anomalib builds it); every draw comes from torch's global generator (seeded by `train`)."""
    from torchvision.transforms import v2

    pool = [v2.ColorJitter(contrast=(0.5, 2.0)),
            v2.RandomPhotometricDistort(brightness=(0.8, 1.2), contrast=(1.0, 1.0), saturation=(1.0, 1.0),
                                        hue=(0.0, 0.0), p=1.0),
            v2.RandomAdjustSharpness(sharpness_factor=2.0, p=1.0),
            v2.ColorJitter(hue=[-50 / 360, 50 / 360], saturation=[0.5, 1.5]),
            v2.RandomSolarize(threshold=float(torch.empty(1).uniform_(32 / 255, 128 / 255)), p=1.0),
            v2.RandomPosterize(bits=4, p=1.0), v2.RandomInvert(p=1.0), v2.AutoAugment(), v2.RandomEqualize(p=1.0),
            v2.RandomAffine(degrees=(-45, 45), interpolation=v2.InterpolationMode.BILINEAR, fill=0)]

    def augment(texture: torch.Tensor, generator: torch.Generator, count: int = 3) -> torch.Tensor:
        chosen = torch.multinomial(torch.ones(len(pool)), count).tolist()
        return v2.Compose([pool[i] for i in chosen])(texture).clamp(0, 1)

    return augment


def mask_rescaling_empty_noise(size: tuple[int, int], generator: torch.Generator, min_scale: int = 0,
                               max_scale: int = 6, threshold: float = 0.5, empty_retries: int = 0) -> torch.Tensor:
    """`rotated_perlin_mask` with anomalib 2.7's rule for a noise that never exceeds the threshold: it is
    rescaled to [-1, 1] before the rotation (so its top quarter becomes the mask) instead of giving an empty mask;
    the draws are otherwise ours, in the same order."""
    from ad_core.plugin_api import components as C
    from ad_recon.draem_synthesis import _uniform

    for _ in range(empty_retries + 1):
        exponents = torch.randint(min_scale, max_scale, (2,), generator=generator)
        noise = C.perlin_noise(size, (2 ** int(exponents[0]), 2 ** int(exponents[1])), generator)
        if not bool((noise > threshold).any()):
            span = noise.max() - noise.min()
            noise = ((noise - noise.min()) / span if span > 0 else torch.zeros_like(noise)) * 2 - 1
        noise = C.rotate(noise.unsqueeze(0), _uniform(generator, -90, 90))[0]
        mask = (noise > threshold).float()
        if mask.any():
            break
    return mask


def train(args: argparse.Namespace) -> None:
    import torch.nn.functional as F

    from ad_core.plugin_api import components as C
    from ad_recon import draem_synthesis
    from ad_recon.draem import Draem, pooled_max

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    batches = load_file(args.batches)
    # One piece of anomalib's augmenter at a time in our synthesis (module attributes DraemSynthesis looks up)
    if args.augmenters == "anomalib":
        draem_synthesis.augment_texture = anomalib_texture_augmenter()
    if args.empty_noise == "rescale":
        draem_synthesis.rotated_perlin_mask = mask_rescaling_empty_noise
    model = Draem(args.image_size, anomaly_source_dir=args.textures, reconstructive_width=args.widths[0],
                  discriminative_width=args.widths[1], rotation_probability=args.rotation, seed=args.seed,
                  empty_mask_retries=args.retries, opacity_range=tuple(args.opacity))
    if args.initial_weights:
        load_in_order(model, args.initial_weights)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    milestones = [int(0.8 * args.steps), int(0.9 * args.steps)] if args.schedule == "ours" else []
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, 0.2)
    model.train()
    start = time.perf_counter()
    seen: list[torch.Tensor] = []  # the training masks, for the share of images and pixels with an anomaly
    for step in range(args.steps):
        clean = batches["images"][step]
        if args.synthesis == "anomalib":
            images, augmented, masks = clean, batches["augmented"][step], batches["masks"][step]
        else:
            images, augmented, masks = model.synthesis(clean, C.seeded_generator(args.seed * 1_000_003 + step))
        seen.append(masks.detach() > 0.5)
        reconstruction, logits = model(augmented)
        probabilities = torch.softmax(logits, 1)
        focal = (C.focal_loss(probabilities, masks) if args.focal == "authors"
                 else 0.5 * C.focal_loss(probabilities, masks, alpha=1.0))
        loss = F.mse_loss(reconstruction, images) + C.ssim_loss(reconstruction, images) + focal
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    fit_s = time.perf_counter() - start
    model.eval()
    root = Path(args.category_dir)
    maps, labels, truths = [], [], []
    with torch.no_grad():
        for path in sorted((root / "test").glob("*/*.png")):
            _, amap = model.compute(read_rgb(path)[None])
            maps.append(amap[0])
            normal = path.parent.name == "good"
            labels.append(0 if normal else 1)
            truths.append(torch.zeros_like(amap[0]) if normal else
                          (read_rgb(root / "ground_truth" / path.parent.name / f"{path.stem}_mask.png")[0] > 0).float())
    stacked, truth, label = torch.stack(maps), torch.stack(truths), torch.tensor(labels)
    row = {"seed": args.seed, "synthesis": args.synthesis, "focal": args.focal, "schedule": args.schedule,
           "initial_weights": "anomalib" if args.initial_weights else "ours",
           "rotation_probability": args.rotation, "empty_mask_retries": args.retries, "opacity_range": args.opacity,
           "augmenters": args.augmenters, "empty_noise": args.empty_noise,
           "steps": args.steps, "widths": list(args.widths),
           "image_auroc_pooled_21": auroc(pooled_max(stacked, 21), label),
           "image_auroc_max": auroc(stacked.amax((1, 2)), label), "pixel_auroc": auroc(stacked, truth),
           "fit_s": fit_s, "mask_pixel_share": float(torch.cat(seen).float().mean()),
           "anomalous_image_share": float(torch.cat(seen).flatten(1).any(1).float().mean())}
    print(json.dumps(row))
    if args.append:
        with open(args.append, "a") as handle:
            handle.write(json.dumps(row) + "\n")


def score_maps(args: argparse.Namespace) -> None:
    import numpy as np

    from ad_core.data import get_dataset
    from ad_core.metrics.maps import MapMetrics

    score_our_maps(args)
    for name in args.files:
        saved = np.load(name, allow_pickle=False)
        maps, raw = torch.from_numpy(saved["maps"]).float(), torch.from_numpy(saved["raw_maps"]).float()
        masks = torch.from_numpy(saved["masks"]).reshape(maps.shape).float()
        size = tuple(maps.shape[-2:])
        ours = get_dataset("mvtec", args.category, "test", image_size=size, root=args.root)
        by_path = {str(Path(r.path).resolve()): i for i, r in enumerate(ours.records)}
        order = [by_path[str(Path(p).resolve())] for p in saved["paths"]]
        samples = [ours[i] for i in order]
        our_images = torch.stack([s.image for s in samples])
        our_masks = torch.stack([s.mask for s in samples])
        metric = MapMetrics()
        metric.update(raw, our_masks, torch.tensor([s.label for s in samples]))
        row = {"file": Path(name).name, "test_images": len(order), "same_images": len(order) == len(ours),
               "map_size": list(size), "our_mask_size": list(our_masks.shape[-2:]),
               "image_max_abs_difference": float((torch.from_numpy(saved["images"]) - our_images).abs().max()),
               "mask_pixels_differing": int(((masks > 0.5) != (our_masks > 0.5)).sum()),
               "anomalous_pixels": int((our_masks > 0.5).sum()),
               "labels_equal": bool((torch.from_numpy(saved["labels"]).long() == torch.tensor(
                   [s.label for s in samples])).all()),
               "pixel_auroc_anomalib_normalised_exact": auroc(maps, masks),
               "pixel_auroc_raw_exact": auroc(raw, masks),
               "pixel_auroc_raw_our_metric": float(metric.compute()["pixel_auroc"])}
        print(json.dumps(row))
        if args.append:
            with open(args.append, "a") as handle:
                handle.write(json.dumps(row) + "\n")


def score_our_maps(args: argparse.Namespace) -> None:
    """Our saved run's test maps (its checkpoint, our MVTec reader): exact pixel AUROC against the runner's."""
    from ad_core import load_model
    from ad_core.data import get_dataset
    from ad_core.metrics.maps import MapMetrics

    for folder in args.ours:
        detector = load_model(folder)
        reported = json.loads((Path(folder) / "results.json").read_text())["pixel"]["auroc"]
        size = int(json.loads((Path(folder) / "results.json").read_text())["run"]["image_size"])
        test = get_dataset("mvtec", args.category, "test", image_size=size, root=args.root)
        samples = [test[i] for i in range(len(test))]
        maps = detector.predict(torch.stack([s.image for s in samples])).anomaly_map
        masks = torch.stack([s.mask for s in samples])
        metric = MapMetrics()
        metric.update(maps, masks, torch.tensor([s.label for s in samples]))
        row = {"run": str(folder), "test_images": len(samples), "map_size": list(maps.shape[-2:]),
               "pixel_auroc_reported": reported, "pixel_auroc_our_metric": float(metric.compute()["pixel_auroc"]),
               "pixel_auroc_exact": auroc(maps, masks)}
        print(json.dumps(row))
        if args.append:
            with open(args.append, "a") as handle:
                handle.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump", help="anomalib's synthesised batches (run in anomalib's venv)")
    d.add_argument("--train", required=True, help="folder of the normal training images (PNG)")
    d.add_argument("--out", required=True)
    w = sub.add_parser("dump-weights", help="anomalib's initial weights for a seed (run in anomalib's venv)")
    w.add_argument("--out", required=True)
    t = sub.add_parser("train", help="train and test our DRAEM on one pipeline variant")
    t.add_argument("--category-dir", required=True, help="MVTec-layout category folder (test/, ground_truth/)")
    t.add_argument("--batches", required=True, help="the dump's file (its clean images are used either way)")
    t.add_argument("--synthesis", choices=["ours", "anomalib"], default="ours")
    t.add_argument("--focal", choices=["authors", "anomalib"], default="authors")
    t.add_argument("--schedule", choices=["ours", "constant"], default="ours")
    t.add_argument("--rotation", type=float, default=0.3, help="our synthesis' rotation_probability")
    t.add_argument("--retries", type=int, default=0, help="our synthesis' empty_mask_retries (anomalib: 10)")
    t.add_argument("--opacity", type=float, nargs=2, default=(0.2, 1.0), metavar=("LOW", "HIGH"),
                   help="our synthesis' opacity_range (anomalib: 0.1 1.0)")
    t.add_argument("--augmenters", choices=["authors", "anomalib"], default="authors",
                   help="texture augmentations in our synthesis: the authors' list or anomalib's torchvision list")
    t.add_argument("--empty-noise", choices=["keep", "rescale"], default="keep",
                   help="a Perlin noise that never exceeds the threshold: an empty mask (ours) or rescaled "
                        "(anomalib)")
    t.add_argument("--initial-weights", help="anomalib's initial weights for the seed (`dump-weights`)")
    m = sub.add_parser("score-maps", help="score anomalib's saved test maps with our metric and our masks")
    m.add_argument("files", nargs="*", help="`anomalib_synthesis_models.py --save-maps` files")
    m.add_argument("--ours", nargs="*", default=[], metavar="RUN",
                   help="our runs' model folders (OUT/mvtec/CATEGORY/draem): their test maps rescored exactly")
    m.add_argument("--root", required=True, help="the MVTec-layout root both sides read")
    m.add_argument("--category", required=True)
    for p in (t, m):
        p.add_argument("--append", help="JSON-lines file to append the result to")
    for p in (w, t):
        p.add_argument("--widths", type=int, nargs=2, default=(32, 16), metavar=("RECON", "DISCR"))
        p.add_argument("--image-size", type=int, default=64)
    for p in (d, w, t):
        p.add_argument("--textures", required=True, help="texture folder (anomaly source)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--steps", type=int, default=50)
        p.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    if args.command == "train" and args.synthesis == "anomalib" and (args.augmenters, args.empty_noise) != (
            "authors", "keep"):
        parser.error("--augmenters and --empty-noise change our synthesis; with --synthesis anomalib the batches "
                     "are anomalib's as dumped")
    {"dump": dump, "dump-weights": dump_weights, "train": train, "score-maps": score_maps}[args.command](args)


if __name__ == "__main__":
    main()
