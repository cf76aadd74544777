"""PatchCore's fit against the training-set size: time, memory and the bank's quality, streamed vs one-shot coreset.

    python benchmarks/patchcore_scaling.py --data PATH/magnetic_tile --sizes 100,200,400,800,1600 --exact-up-to 100
    python benchmarks/patchcore_scaling.py --data PATH/magnetic_tile --sizes 50 --exact-up-to 50 --merge  # add rows
    python benchmarks/patchcore_scaling.py --demo-only        # image/pixel AUROC on the demo set only
    python benchmarks/patchcore_scaling.py --demo-only --auroc-data PATH/magnetic_tile --demo-size 128

For each size, one fresh process per fit runs `update` on batches of 32 images made batch by batch (as a loader
would) and `finalize`, as the feature-bank trainer does, and reports: fit seconds, the seconds spent in the greedy
coreset and in seeding the groups' greedy with their distances to the bank; peak RSS above the import floor (the
resident high-water mark, reset once torch, timm and the model are imported and built and one image has gone
through it, less the RSS then), beside the anonymous memory's peak above its own floor (`RssAnon` sampled every
10 ms: heap and tensors, without library pages, which the kernel maps in and out under memory pressure), and the
bank's own float32 size; the bank size; and the covering radius: the largest distance of a training patch to
its nearest bank item, in the 128-d random projection the greedy works in (over every training image when that
costs at most `--radius-budget` multiply-adds, else over an evenly spaced subset of the images, marked `sampled`:
a lower bound). Modes: "seeded" is the default streaming (groups of `max_pending_patches`, each group's greedy
continuing from the bank so far and from the patches earlier groups left worst covered, with a reserve for the last
group), "fixed" the same without carry and reserve (each group keeps exactly its share: the default before them),
"grouped" each group reduced on its own (`seed_groups=0`, no carry),
"exact" a single group (the one-shot greedy coreset, quadratic). The fit-time exponents are the least-squares slopes
of log(time) on log(images), of the wall time and of the process's CPU time (which, for a one-thread fit, does not
swing with the load of a shared machine), over the sizes recorded beside them. Training images are the normal
training images of an MVTec-layout folder (`--data`, resized to a square; past its count, copies flipped horizontally, vertically or
both) or, without it, the synthetic demo generator. The fits stream them in file-name order (then the copies), the harder case for the
streamed shares; the runner shuffles the training images (`ad_core.runner.training_loader`), and so does the AUROC
comparison, which trains through it. The AUROC comparison trains `patchcore-r18` through the runner
(default settings but the mode) on every demo category, or on the category folder `--auroc-data`, in each mode,
and prints the image/pixel AUROCs side by side.
A JSON record goes under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ONE_GROUP = 1 << 40
MODES = {"seeded": {}, "fixed": {"carry_patches": 0}, "grouped": {"seed_groups": 0, "carry_patches": 0},
         "exact": {"max_pending_patches": ONE_GROUP}}
RESULTS = Path(__file__).resolve().parent / "results"
LISTED_PAIRS = 20  # changed test pairs listed in the record (all of them are counted)


def reset_peak_rss() -> float:
    """Reset the process's resident high-water mark (Linux `clear_refs` 5) and return the RSS now, in MB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return rss_mb("VmRSS")


def rss_mb(field: str) -> float:
    """`VmRSS`, `RssAnon` (now) or `VmHWM` (the high-water mark since the last reset) of this process, in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


class AnonymousPeak:
    """Largest `RssAnon` (the process's own heap and tensors, without the library pages that VmHWM also counts and
    that the kernel maps in and out under memory pressure), sampled every `interval` seconds on a thread."""

    def __init__(self, interval: float = 0.01) -> None:
        import threading

        self.interval, self.peak, self.floor = interval, 0.0, rss_mb("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb("RssAnon"))
            self._stop.wait(self.interval)

    def stop(self) -> float:
        """MB of anonymous memory at the peak above what there was at the start."""
        self._stop.set()
        self._thread.join()
        return max(self.peak, rss_mb("RssAnon")) - self.floor


def training_batches(data: str | None, count: int, size: int, batch: int = 32):
    """[<=batch, 3, size, size] ImageNet-normalised training images, made batch by batch as a loader would.

    Real folder: its normal training images resized to a square; past its count they repeat as copies with a small
    augmentation (horizontal flip, vertical flip, both), so up to 4x the folder's images are distinct. Without a
    folder: the synthetic demo generator, cycling through its categories.
    """
    import numpy as np
    import torch

    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    if data is None:
        from ad_core.data.synthetic import DEMO_CATEGORIES, render

        cats = list(DEMO_CATEGORIES)
    else:
        from PIL import Image

        files = sorted((Path(data) / "train" / "good").iterdir())
    for first in range(0, count, batch):
        arrays = []
        for i in range(first, min(first + batch, count)):
            if data is None:
                array = render(cats[i % len(cats)], "train-None", i // len(cats), size)[0]
            else:
                with Image.open(files[i % len(files)]) as img:
                    array = np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR), np.float32) / 255
                copy = (i // len(files)) % 4
                array = array[:, ::-1] if copy & 1 else array
                array = array[::-1] if copy & 2 else array
            arrays.append(np.ascontiguousarray(array, dtype=np.float32))
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        yield (images - mean) / std


def one_fit(args: argparse.Namespace) -> dict:
    """Fit one PatchCore in this process and measure it (the child's job)."""
    import torch

    from ad_core.components.knn import brute_force_neighbours
    from ad_memory import patchcore as pc

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # the same random backbone in every process, so the fits compare
    model = pc.PatchCore(backbone=args.backbone, pretrained=False, **MODES[args.mode]).eval()
    seconds = {"greedy": 0.0, "seeding": 0.0, "greedy_cpu": 0.0, "seeding_cpu": 0.0}

    def timed(function, key):
        def run(*a, **k):
            start, cpu = time.perf_counter(), time.process_time()
            out = function(*a, **k)
            seconds[key] += time.perf_counter() - start
            seconds[key + "_cpu"] += time.process_time() - cpu
            return out
        return run

    pc.greedy_cover = timed(pc.greedy_cover, "greedy")
    pc.squared_distance_to = timed(pc.squared_distance_to, "seeding")
    with torch.inference_mode():  # page in the code the fit runs (libraries map it lazily) before the floor
        model.embed(next(training_batches(args.data, 1, args.size)))
        pc.greedy_cover(torch.randn(64, 8), 2, torch.rand(64))
    floor = reset_peak_rss()
    anonymous = AnonymousPeak()
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for images in training_batches(args.data, args.one, args.size):
            model.update(images)
        model.finalize()
    fit_seconds, fit_cpu = time.perf_counter() - start, time.process_time() - cpu
    peak, anonymous_peak = rss_mb("VmHWM"), anonymous.stop()
    bank_mb = model.memory_bank.numel() * 4 / 2**20
    # covering radius in the projection the greedy works in: over every training image when that costs at most
    # `radius_budget` multiply-adds, else over an evenly spaced subset of them (a lower bound on the radius)
    bank = model.memory_bank @ model.projection
    with torch.inference_mode():
        per_image = len(model.embed(torch.zeros(1, 3, args.size, args.size))[0])
    patches = per_image * args.one
    images_measured = max(1, min(args.one, args.radius_budget // (per_image * bank.shape[0] * bank.shape[1])))
    keep = set(torch.linspace(0, args.one - 1, images_measured).round().long().tolist())
    worst, total, count = 0.0, 0.0, 0
    with torch.inference_mode():
        for first, images in zip(range(0, args.one, 32), training_batches(args.data, args.one, args.size)):
            rows = [i - first for i in range(first, first + len(images)) if i in keep]
            if not rows:
                continue
            projected = model.embed(images[rows])[0] @ model.projection
            dist, _ = brute_force_neighbours(projected, bank)
            worst, total, count = max(worst, float(dist.max())), total + float(dist.sum()), count + dist.numel()
    return {"images": args.one, "mode": args.mode, "backbone": args.backbone,
            "fit_seconds": round(fit_seconds, 2), "greedy_seconds": round(seconds["greedy"], 2),
            "seeding_seconds": round(seconds["seeding"], 2), "fit_cpu_seconds": round(fit_cpu, 2),
            "greedy_cpu_seconds": round(seconds["greedy_cpu"], 2), "seeding_cpu_seconds": round(seconds["seeding_cpu"], 2),
            "peak_rss_above_floor_mb": round(peak - floor, 1), "peak_anonymous_above_floor_mb": round(anonymous_peak, 1), "import_floor_mb": round(floor, 1),
            "bank_mb": round(bank_mb, 1), "bank": int(model.memory_bank.shape[0]), "patches": int(patches),
            "covering_radius": round(worst, 4), "mean_distance": round(total / count, 4),
            "radius_images": len(keep), "radius_sampled": len(keep) < args.one}


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
            rows[:] = [r for r in rows if (r["images"], r["mode"]) != (n, mode)]  # a re-run replaces its row
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
        for key, times in (("", "fit_seconds"), ("_cpu", "fit_cpu_seconds")):
            points = [(r["images"], r[times]) for r in rows if r["mode"] == mode and times in r]
            record[f"{mode}{key}_exponent"] = exponent(points)
            record[f"{mode}{key}_exponent_sizes"] = [n for n, _ in points]
        if mode != "exact":
            record[f"radius_ratio_{mode}_over_exact"] = {
                r["images"]: round(g["covering_radius"] / r["covering_radius"], 4)
                for r in rows if r["mode"] == "exact"
                for g in rows if g["mode"] == mode and g["images"] == r["images"]}


def record_path(args: argparse.Namespace) -> Path:
    """The JSON record of this command: per backbone and image size, or per AUROC data set and size."""
    if args.demo_only:
        source = Path(args.auroc_data).name if args.auroc_data else "demo"
        chosen = "".join(f"_{c}" for c in args.categories or ()) if not args.auroc_data else ""
        return RESULTS / f"patchcore_auroc_{source}_{args.demo_size}px{chosen}.json"
    return RESULTS / f"patchcore_scaling_{args.backbone}_{args.size}px.json"


def write(record: dict, args: argparse.Namespace) -> None:
    RESULTS.mkdir(exist_ok=True)
    record_path(args).write_text(json.dumps(record, indent=1) + "\n")


def changed_pairs(scores: dict[str, dict], mode: str, reference: str = "exact") -> dict:
    """The (defective, normal) test pairs ranked the wrong way in one mode and not in the other, with their score
    margins (normal score - defective score: > 0 when ranked wrong) in both, beside the spread of the normal scores.

    An image-AUROC difference that is one pair flipping by a margin far below that spread is noise of the bank's
    draw; many pairs, or margins of the spread's size, would be a systematic loss. The first `LISTED_PAIRS` changed
    pairs are listed; the counts cover all of them (their difference over the test pairs is the AUROC difference).
    """
    import statistics

    first, second = scores[mode], scores[reference]
    labels, paths = first["labels"], first["paths"]
    if paths != second["paths"]:
        raise ValueError("the two runs scored different test images")

    def margins(values: list[float]) -> dict[tuple[str, str], float]:
        return {(paths[d], paths[n]): values[n] - values[d] for d in range(len(paths)) if labels[d]
                for n in range(len(paths)) if not labels[n]}

    ours, theirs = margins(first["scores"]), margins(second["scores"])
    changed = [pair for pair in ours if (ours[pair] >= 0) != (theirs[pair] >= 0)]
    normal = [v for v, label in zip(second["scores"], labels) if not label]
    wrong_here = sum(ours[pair] >= 0 for pair in changed)
    return {"pairs": [{"defective": d, "normal": n, f"margin_{mode}": round(ours[d, n], 5),
                       f"margin_{reference}": round(theirs[d, n], 5)} for d, n in changed[:LISTED_PAIRS]],
            "changed": len(changed), f"wrong_in_{mode}_only": wrong_here,
            f"wrong_in_{reference}_only": len(changed) - wrong_here,
            "normal_score_std": round(statistics.pstdev(normal), 5), "test_pairs": len(ours)}


def demo_auroc(args: argparse.Namespace, record: dict) -> list[dict]:
    """patchcore-r18 through the runner on every demo category (or one category folder), in each mode."""
    import warnings

    import torch

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
        torch.set_num_threads(args.threads)
        for dataset, category, root in jobs:
            row = {"category": category}
            rows.append(row)
            scores = {}
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
                scores[mode] = json.loads((result.output_dir / "scores.json").read_text())
                write(record, args)
            for mode in scores.keys() - {"exact"} if "exact" in scores else ():
                row[mode]["pairs_changed_vs_exact"] = changed_pairs(scores, mode)
                print(f"{category:14s} {mode:8s} pairs ranked differently from exact:",
                      row[mode]["pairs_changed_vs_exact"], flush=True)
            write(record, args)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="MVTec-layout category folder (default: demo generator)")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 200, 400, 800, 1600])
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--exact-up-to", type=int, default=100, help="largest size fitted with one group too")
    parser.add_argument("--radius-budget", type=int, default=3 * 10**11,
                        help="multiply-adds for the radius (beyond it, an evenly spaced subset of the images)")
    parser.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES), help="of " + ",".join(MODES))
    parser.add_argument("--demo-group", type=int, default=0,
                        help="max_pending_patches of the streamed modes in the AUROC comparison (0: the default)")
    parser.add_argument("--demo-size", type=int, default=256, help="image size of the AUROC comparison")
    parser.add_argument("--categories", type=lambda s: s.split(","), default=None,
                        help="demo categories of the AUROC comparison (default: all)")
    parser.add_argument("--auroc-data", default=None, help="MVTec-layout category folder for the AUROC comparison")
    parser.add_argument("--demo-only", action="store_true")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--merge", action="store_true",
                        help="add the fits to the existing record (a re-run size and mode replaces its row)")
    parser.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="seeded", choices=list(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_fit(args)))
        return
    record = {"benchmark": "patchcore_scaling", "machine": platform.processor() or platform.machine(),
              "threads": args.threads}
    if args.merge and record_path(args).exists():
        record = json.loads(record_path(args).read_text())
    if not args.demo_only:
        record.update(backbone=args.backbone, image_size=args.size, data=args.data or "demo generator")
        scaling(args, record)
        for mode in MODES:
            for key in ("", "_cpu"):
                if record[f"{mode}{key}_exponent"] is not None:
                    print(f"{mode}: fit{key.replace('_', ' ')} time ~ images^{record[f'{mode}{key}_exponent']:.2f}")
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
