#!/usr/bin/env python3
"""Train and test models on a dataset; print fit seconds, test images/s, peak RSS and AUROCs; write JSON.

Each model runs in its own child process (the core's benchmark cell runner, `ad_core.benchmarking.run_cell`),
so its peak RSS is its own and a crash or a timeout is recorded while the others go on. `wall_s` is the
cell's wall time, process start included. Examples:

    python benchmarks/run.py --dataset demo --category weave --models patchcore-r18,padim
    python benchmarks/run.py --dataset mvtec --root ../shared/data --category magnetic_tile \\
        --models patchcore --image-size 256 --pretrained false --json benchmarks/results/magnetic_tile.json

For a whole grid with a leaderboard report, use `adcore benchmark`. Speed and memory are measured here,
never in unit tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from ad_core.benchmarking import Cell, CellOptions, run_cell
from ad_core.plugins import get_registry

COLUMNS = ["model", "category", "fit_s", "test_img_s", "peak_rss_mb", "image_auroc", "pixel_auroc", "pixel_aupro",
           "train_images", "test_images"]


def row(record: dict, output_dir: str) -> dict:
    """A cell record in this script's JSON fields."""
    base = {"model": record["model"], "category": record["category"]}
    if record["status"] != "ok":
        return {"status": "failed", **base, "error": record.get("error") or record["status"]}
    metrics = record["metrics"]
    return {
        "status": "ok",
        **base,
        "fit_s": record["fit_seconds"],
        "test_s": record["test_seconds"],
        "test_img_s": record["test_images_per_second"],
        "peak_rss_mb": record["peak_rss_mb"],
        "image_auroc": metrics["image_auroc"],
        "pixel_auroc": metrics["pixel_auroc"],
        "pixel_aupro": metrics["pixel_aupro"],
        "train_images": record["train_images"],
        "test_images": record["test_images"],
        "wall_s": record["wall_seconds"],
        "warnings": record.get("warnings", []),
        "output_dir": str(Path(output_dir) / record["dataset"] / record["category"] / record["model"]),
    }


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return "-" if value is None else str(value)


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        if r.get("status") == "failed":
            lines.append(f"| {r['model']} | {r['category']} | failed: {r['error'][:120]} |")
        else:
            lines.append("| " + " | ".join(fmt(r.get(c)) for c in COLUMNS) + " |")
    return "\n".join(lines)


def parse_value(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="demo")
    ap.add_argument("--root", default=None, help="dataset root (e.g. ../shared/data for magnetic_tile)")
    ap.add_argument("--category", default="weave", help="comma-separated categories")
    ap.add_argument("--models", default="patchcore-r18", help="comma-separated models or variants")
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--pretrained", type=parse_value, default=None, help="true/false (default: the model's)")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--timeout", type=int, default=3600, help="per-model seconds")
    ap.add_argument("--json", dest="json_path", default=None, help="where to write the JSON record")
    ap.add_argument("--output-dir", default=None, help="run outputs (default: a temp folder)")
    args = ap.parse_args()

    overrides = {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.extra)}
    if args.image_size:
        overrides["image_size"] = args.image_size
    if args.pretrained is not None:
        overrides["pretrained"] = args.pretrained
    overrides.setdefault("write_maps", False)
    output_dir = args.output_dir or str(Path(tempfile.mkdtemp(prefix="adcore_bench_")) / "outputs")
    options = CellOptions(output=Path(output_dir), root=args.root, overrides=overrides, timeout=args.timeout,
                          threads=args.threads or None, examples=0)
    registry = get_registry()
    rows = []
    for category in [c for c in args.category.split(",") if c]:
        for model in [m for m in args.models.split(",") if m]:
            print(f"[{time.strftime('%H:%M:%S')}] {model} on {args.dataset}/{category} ...", flush=True)
            record = run_cell(Cell(args.dataset, category, registry.resolve(model)[1]), options)
            rows.append(row(record, output_dir))
            print("   ", json.dumps({k: rows[-1].get(k) for k in ["status", *COLUMNS[2:8]]}), flush=True)
    import torch

    record = {
        "config": {"dataset": args.dataset, "root": args.root, "overrides": overrides, "threads": args.threads},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "rows": rows,
    }
    print("\n" + markdown(rows))
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(record, indent=2))
        print(f"\nwrote {args.json_path}")


if __name__ == "__main__":
    main()
