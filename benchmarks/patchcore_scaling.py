"""PatchCore's fit against the training-set size: time, memory and the bank's quality, grouped vs one-shot coreset.

    python benchmarks/patchcore_scaling.py --data PATH/magnetic_tile --sizes 50,100,200,400,800 --exact-up-to 200
    python benchmarks/patchcore_scaling.py --demo-only        # image/pixel AUROC on the demo set only
    python benchmarks/patchcore_scaling.py --demo-only --auroc-data PATH/magnetic_tile --demo-size 128

For each size, one fresh process per fit (peak RSS is a process maximum) runs `update` on batches of 32 and
`finalize`, as the feature-bank trainer does, and reports: fit seconds, the seconds spent in the greedy coreset
and in seeding the groups' greedy with their distances to the bank,
peak RSS above the import floor (RSS once torch, timm and the model are imported, before any data), the bank size,
and the covering radius: the largest distance of a training patch to its nearest bank item, in the 128-d random
projection the greedy works in (over every training patch when that costs at most `--radius-budget` multiply-adds,
else over a fixed random sample of them, marked `sampled`). Modes: "seeded" is the default streaming (groups of
`max_pending_patches`, each group's greedy continuing from the bank so far), "grouped" the same with each group
reduced on its own (`seed_groups=0`), "exact" a single group (the one-shot greedy coreset, quadratic). The
fit-time exponent is the least-squares slope of log(time) on log(images). Training images are the normal training images of an
MVTec-layout folder (`--data`, resized to a square, horizontal flips appended past its count) or, without it,
the synthetic demo generator. The AUROC comparison trains `patchcore-r18` through the runner (default settings
but the mode) on every demo category, or on the category folder `--auroc-data`, in each mode, and prints the
image/pixel AUROCs side by side.
A JSON record goes under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ONE_GROUP = 1 << 40
MODES = {"seeded": {}, "grouped": {"seed_groups": 0},
         "exact": {"max_pending_patches": ONE_GROUP}}
RESULTS = Path(__file__).resolve().parent / "results"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def training_images(data: str | None, count: int, size: int):
    """[count, 3, size, size] ImageNet-normalised training images (real folder, or the demo generator)."""
    import numpy as np
    import torch

    if data is None:
        from ad_core.data.synthetic import DEMO_CATEGORIES, render

        cats = list(DEMO_CATEGORIES)
        arrays = [render(cats[i % len(cats)], "train-None", i // len(cats), size)[0] for i in range(count)]
    else:
        from PIL import Image

        files = sorted((Path(data) / "train" / "good").iterdir())
        arrays = []
        for i in range(count):
            with Image.open(files[i % len(files)]) as img:
                array = np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR), np.float32) / 255
            arrays.append(array[:, ::-1] if (i // len(files)) % 2 else array)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return (images - mean) / std


def one_fit(args: argparse.Namespace) -> dict:
    """Fit one PatchCore in this process and measure it (the child's job)."""
    import torch

    from ad_memory import patchcore as pc

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # the same random backbone in every process, so the fits compare
    model = pc.PatchCore(backbone=args.backbone, pretrained=False, **MODES[args.mode]).eval()
    seconds = {"greedy": 0.0, "seeding": 0.0}

    def timed(function, key):
        def run(*a, **k):
            start = time.perf_counter()
            out = function(*a, **k)
            seconds[key] += time.perf_counter() - start
            return out
        return run

    pc.greedy_coreset = timed(pc.greedy_coreset, "greedy")
    pc.squared_distance_to = timed(pc.squared_distance_to, "seeding")
    floor = current_rss_mb()
    images = training_images(args.data, args.one, args.size)
    data_mb = images.numel() * 4 / 2**20
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(images), 32):
            model.update(images[i : i + 32])
        model.finalize()
    fit_seconds = time.perf_counter() - start
    peak = peak_rss_mb()
    # covering radius in the projection the greedy works in
    with torch.inference_mode():
        projected = torch.cat([model.embed(images[i : i + 4])[0] @ model.projection for i in range(0, len(images), 4)])
        bank = model.memory_bank @ model.projection
        patches = int(projected.shape[0])
        sampled = projected.shape[0] * bank.shape[0] * bank.shape[1] > args.radius_budget
        if sampled:
            rows = args.radius_budget // (bank.shape[0] * bank.shape[1])
            projected = projected[torch.randperm(len(projected), generator=torch.Generator().manual_seed(0))[:rows]]
        from ad_core.components.knn import brute_force_neighbours

        dist, _ = brute_force_neighbours(projected, bank)
    return {"images": args.one, "mode": args.mode,
            "fit_seconds": round(fit_seconds, 2), "greedy_seconds": round(seconds["greedy"], 2),
            "seeding_seconds": round(seconds["seeding"], 2),
            "peak_rss_above_floor_mb": round(peak - floor - data_mb, 1), "import_floor_mb": round(floor, 1),
            "bank": int(model.memory_bank.shape[0]), "patches": patches,
            "covering_radius": round(float(dist.max()), 4), "mean_distance": round(float(dist.mean()), 4),
            "radius_sampled": bool(sampled)}


def exponent(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of log(seconds) on log(images)."""
    if len(points) < 2:
        return None
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(t) for _, t in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def scaling(args: argparse.Namespace, record: dict) -> list[dict]:
    rows = record.setdefault("fits", [])
    for n in args.sizes:
        modes = [m for m in args.modes if m != "exact" or n <= args.exact_up_to]
        for mode in modes:
            cmd = [sys.executable, __file__, "--one", str(n), "--mode", mode, "--size", str(args.size),
                   "--backbone", args.backbone, "--threads", str(args.threads),
                   "--radius-budget", str(args.radius_budget)] + (["--data", args.data] if args.data else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            rows.append(row)
            print(f"{n:5d} images {mode:8s} fit {row['fit_seconds']:8.1f} s (greedy {row['greedy_seconds']:7.1f} s,"
                  f" seeding {row['seeding_seconds']:6.1f} s)"
                  f"  peak RSS +{row['peak_rss_above_floor_mb']:7.0f} MB  bank {row['bank']:7d}"
                  f"  radius {row['covering_radius']:.4f}{' (sampled)' if row['radius_sampled'] else ''}", flush=True)
            summarise(record)
            write(record, args)
    return rows


def summarise(record: dict) -> None:
    """Fit-time exponents per mode and the streamed / exact covering-radius ratio per size."""
    rows = record["fits"]
    for mode in MODES:
        record[f"{mode}_exponent"] = exponent([(r["images"], r["fit_seconds"]) for r in rows if r["mode"] == mode])
        if mode != "exact":
            record[f"radius_ratio_{mode}_over_exact"] = {
                r["images"]: round(g["covering_radius"] / r["covering_radius"], 4)
                for r in rows if r["mode"] == "exact"
                for g in rows if g["mode"] == mode and g["images"] == r["images"]}


def write(record: dict, args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    if args.demo_only:
        source = Path(args.auroc_data).name if args.auroc_data else "demo"
        name = f"patchcore_auroc_{source}_{args.demo_size}px.json"
    else:
        name = f"patchcore_scaling_{args.backbone}_{args.size}px.json"
    (RESULTS / name).write_text(json.dumps(record, indent=1) + "\n")


def demo_auroc(args: argparse.Namespace, record: dict) -> list[dict]:
    """patchcore-r18 through the runner on every demo category (or one category folder), in each mode."""
    import warnings

    from ad_core.data.synthetic import DEMO_CATEGORIES
    from ad_core.runner import run_one

    if args.auroc_data:
        root = Path(args.auroc_data)
        jobs = [("mvtec", root.name, root.parent)]
    else:
        jobs = [("demo", category, None) for category in args.categories or DEMO_CATEGORIES]
    rows = record.setdefault("demo", [])
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dataset, category, root in jobs:
            row = {"category": category}
            rows.append(row)
            for mode in args.modes:
                start = time.perf_counter()
                options = {**({"max_pending_patches": args.demo_group} if args.demo_group else {}), **MODES[mode]}
                result = run_one(dataset, category, "patchcore-r18", root=root, output_dir=tmp,
                                 image_size=args.demo_size, pretrained=False, write_maps=False, **options)
                row[mode] = {"image_auroc": round(result.image_auroc, 4), "pixel_auroc": round(result.pixel_auroc, 4),
                             "wall_seconds": round(time.perf_counter() - start, 1),
                             "group_patches": options.get("max_pending_patches", "default")}
                print(f"{category:14s} {mode:8s} image/pixel AUROC {row[mode]['image_auroc']:.4f} / "
                      f"{row[mode]['pixel_auroc']:.4f}  ({row[mode]['wall_seconds']} s)", flush=True)
                write(record, args)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="MVTec-layout category folder (default: demo generator)")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[50, 100, 200, 400, 800])
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--exact-up-to", type=int, default=200, help="largest size fitted with one group too")
    parser.add_argument("--radius-budget", type=int, default=3 * 10**11, help="multiply-adds for the radius")
    parser.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES), help="of " + ",".join(MODES))
    parser.add_argument("--demo-group", type=int, default=0,
                        help="max_pending_patches of the streamed modes in the AUROC comparison (0: the default)")
    parser.add_argument("--demo-size", type=int, default=256, help="image size of the AUROC comparison")
    parser.add_argument("--categories", type=lambda s: s.split(","), default=None,
                        help="demo categories of the AUROC comparison (default: all)")
    parser.add_argument("--auroc-data", default=None, help="MVTec-layout category folder for the AUROC comparison")
    parser.add_argument("--demo-only", action="store_true")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="seeded", choices=list(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_fit(args)))
        return
    record = {"benchmark": "patchcore_scaling", "machine": platform.processor() or platform.machine(),
              "threads": args.threads, "backbone": args.backbone, "image_size": args.size,
              "data": args.data or "demo generator"}
    if not args.demo_only:
        scaling(args, record)
        for mode in MODES:
            if record[f"{mode}_exponent"] is not None:
                print(f"{mode}: fit time ~ images^{record[f'{mode}_exponent']:.2f}")
            if mode != "exact":
                print(f"covering radius {mode} / exact:", record[f"radius_ratio_{mode}_over_exact"])
    if not args.skip_demo:
        record["demo_settings"] = {"image_size": args.demo_size, "data": args.auroc_data or "demo",
                                   "model": "patchcore-r18", "pretrained": False}
        demo_auroc(args, record)
    write(record, args)
    print("record written under", RESULTS)

if __name__ == "__main__":
    main()
