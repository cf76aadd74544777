"""Micro-benchmark of fit and predict on the CPU (random-weight backbone, synthetic textures).

    python plugins/ad-memory/benchmarks/bench_fit_predict.py --model patchcore --threads 2 --train 60 --size 256

Prints fit seconds (update + finalize, as the feature-bank trainer runs them), for PatchCore the time
spent in the greedy coreset, predict images/s, peak RSS of the process (after the imports, after the
fit, at the end), and the image AUROC on pasted synthetic defects (a sanity check only: the backbone
has random weights). Run one model per fresh process: peak RSS is the process maximum.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def textures(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth random colour textures with fine grain, ImageNet-normalised-ish ([-2, 2] range)."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.normal(size=(n, 3, 16, 16)).astype(np.float32))
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    images += 0.3 * torch.from_numpy(rng.normal(size=(n, 3, size, size)).astype(np.float32))
    return images.clamp_(-2.5, 2.5)


def with_defects(images: torch.Tensor, seed: int) -> torch.Tensor:
    """Paste a bright square or a strong noise patch on each image."""
    rng = np.random.default_rng(seed)
    out = images.clone()
    size = images.shape[-1]
    for i in range(len(out)):
        side = size // 6
        y, x = rng.integers(0, size - side, size=2)
        if i % 2:
            out[i, :, y : y + side, x : x + side] = 2.5
        else:
            out[i, :, y : y + side, x : x + side] = torch.from_numpy(
                rng.normal(scale=2.0, size=(3, side, side)).astype(np.float32))
    return out


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    order = np.argsort(scores)
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    pos = labels == 1
    return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train", type=int, default=60)
    parser.add_argument("--test", type=int, default=20, help="normal and defective test images each")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--model", default="patchcore", choices=["patchcore", "padim", "dfkde"])
    parser.add_argument("--backbone", default=None, help="default: the model's own default backbone")
    parser.add_argument("--set", default="{}", help='model keyword arguments as JSON, e.g. \'{"coreset_ratio": 0.01}\'')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import importlib

    from ad_memory import patchcore as pc

    factories = {"patchcore": "PatchCore", "padim": "Padim", "dfkde": "Dfkde"}
    factory = getattr(importlib.import_module(f"ad_memory.{args.model}"), factories[args.model])
    kwargs = {"pretrained": False, **json.loads(args.set)}
    if args.backbone is not None:
        kwargs["backbone"] = args.backbone

    coreset_seconds = []
    original = pc.greedy_coreset

    def timed_coreset(*a, **k):
        start = time.perf_counter()
        out = original(*a, **k)
        coreset_seconds.append(time.perf_counter() - start)
        return out

    pc.greedy_coreset = timed_coreset
    baseline_mb = peak_rss_mb()
    torch.manual_seed(0)
    model = factory(**kwargs)

    # Batches are made on the fly, as a data loader reading files would: the harness holds no dataset.
    def batches(count: int, seed: int, defects: bool = False):
        for i, start in enumerate(range(0, count, args.batch)):
            images = textures(min(args.batch, count - start), args.size, seed=1000 * seed + i)
            yield with_defects(images, seed=1000 * seed + i) if defects else images

    start = time.perf_counter()
    with torch.no_grad():
        for images in batches(args.train, seed=0):
            model.update(images)
        model.finalize()
    fit_seconds = time.perf_counter() - start
    fit_peak_mb = peak_rss_mb()

    model.predict(textures(2, args.size, seed=99))  # warm-up
    scores, labels, predict_seconds = [], [], 0.0
    for label, seed in ((0, 1), (1, 2)):
        for images in batches(args.test, seed=seed, defects=bool(label)):
            start = time.perf_counter()
            scores.append(model.predict(images).score)
            predict_seconds += time.perf_counter() - start
            labels += [label] * len(images)
    scores_np, labels_np = torch.cat(scores).numpy(), np.array(labels)
    print(json.dumps({
        "model": args.model, "options": json.loads(args.set), "backbone": model.backbone.name, "image_size": args.size, "train_images": args.train, "threads": args.threads,
        "fit_seconds": round(fit_seconds, 2), "coreset_seconds": round(sum(coreset_seconds), 2),
        "memory_bank": list(model.memory_bank.shape) if args.model == "patchcore" else None,
        "predict_images_per_second": round(len(labels) / predict_seconds, 2),
        "peak_rss_mb": {"after_imports": round(baseline_mb), "fit": round(fit_peak_mb), "total": round(peak_rss_mb())}, "auroc_synthetic": round(auroc(scores_np, labels_np), 3),
    }))


if __name__ == "__main__":
    main()
