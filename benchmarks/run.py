#!/usr/bin/env python3
"""Train and test models on a dataset; print fit seconds, test images/s, peak RSS and AUROCs; write JSON.

Each model runs in its own child process, so its peak RSS is its own. Examples:

    python benchmarks/run.py --dataset demo --category weave --models patchcore-r18,padim
    python benchmarks/run.py --dataset mvtec --root ../shared/data --category magnetic_tile \\
        --models patchcore --image-size 256 --pretrained false --json benchmarks/results/magnetic_tile.json

Speed and memory are measured here, never in unit tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COLUMNS = ["model", "category", "fit_s", "test_img_s", "peak_rss_mb", "image_auroc", "pixel_auroc", "pixel_aupro",
           "train_images", "test_images"]


def child(args: argparse.Namespace) -> dict:
    """Runs in the child process: one model, one category."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from ad_core.runner import run_one

    overrides = json.loads(args.overrides)
    start = time.perf_counter()
    result = run_one(args.dataset, args.category, args.child, root=args.root, output_dir=args.output_dir,
                     **overrides)
    run = result.run
    return {
        "model": result.model,
        "category": args.category,
        "fit_s": run["fit_seconds"],
        "test_s": run["test_seconds"],
        "test_img_s": run["test_images_per_second"],
        "peak_rss_mb": run["peak_rss_mb"],
        "image_auroc": result.image_auroc,
        "pixel_auroc": result.pixel_auroc,
        "pixel_aupro": (result.results.get("pixel") or {}).get("aupro"),
        "train_images": run["train_images"],
        "test_images": run["test_images"],
        "wall_s": time.perf_counter() - start,
        "warnings": result.warnings,
        "output_dir": str(result.output_dir),
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
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    ap.add_argument("--result-file", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        Path(args.result_file).write_text(json.dumps(child(args)))
        return

    overrides = {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.extra)}
    if args.image_size:
        overrides["image_size"] = args.image_size
    if args.pretrained is not None:
        overrides["pretrained"] = args.pretrained
    overrides.setdefault("write_maps", False)
    tmp = Path(tempfile.mkdtemp(prefix="adcore_bench_"))
    output_dir = args.output_dir or str(tmp / "outputs")
    rows = []
    for category in [c for c in args.category.split(",") if c]:
        for model in [m for m in args.models.split(",") if m]:
            result_file = tmp / f"{model}-{category}.json"
            cmd = [sys.executable, __file__, "--child", model, "--dataset", args.dataset, "--category", category,
                   "--overrides", json.dumps(overrides), "--result-file", str(result_file),
                   "--output-dir", output_dir, "--threads", str(args.threads)]
            if args.root:
                cmd += ["--root", args.root]
            print(f"[{time.strftime('%H:%M:%S')}] {model} on {args.dataset}/{category} ...", flush=True)
            env = {**os.environ, "ADCORE_PROGRESS": "0", "MPLBACKEND": "Agg"}
            try:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
                if result_file.exists():
                    row = {"status": "ok", **json.loads(result_file.read_text())}
                else:
                    row = {"status": "failed", "model": model, "category": category,
                           "error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
            except subprocess.TimeoutExpired:
                row = {"status": "failed", "model": model, "category": category, "error": f"timeout {args.timeout}s"}
            rows.append(row)
            print("   ", json.dumps({k: row.get(k) for k in ["status", *COLUMNS[2:8]]}), flush=True)
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
