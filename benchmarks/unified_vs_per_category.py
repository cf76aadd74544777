#!/usr/bin/env python3
"""Unified (one model for all categories) vs per-category (one model each) image and pixel AUROC, per model.

For each model: one run per category (`train(...)`), then one unified run over the same categories
(`train(..., unified=True)`), same settings and seed; prints a Markdown table (per category and mean) and writes
a JSON record. Set `max_steps` (not `num_epochs`) to give both modes the same number of optimiser steps: an epoch
of the union is as many batches as all the categories' epochs together. Examples:

    python benchmarks/unified_vs_per_category.py --threads 1 --models cfa-r18,dinomaly-small-224 \
        --set max_steps=40 --set batch_size=8 --model-set dinomaly-small-224:center_crop=56 \
        --json benchmarks/results/unified_vs_per_category_demo.json

    python benchmarks/unified_vs_per_category.py --models padim,patchcore-r18,stfpm,fastflow \\
        --dataset demo --categories weave,disc --image-size 64 --set num_epochs=3 \\
        --json benchmarks/results/unified_vs_per_category_demo.json
    python benchmarks/unified_vs_per_category.py --models padim --with-magnetic-tile ../shared/data/magnetic_tile \\
        --categories weave --image-size 64 --json benchmarks/results/unified_magnetic_tile.json

`--with-magnetic-tile DIR` writes the demo categories in the MVTec layout beside a link to DIR's
`magnetic_tile` folder, so one unified model covers the magnetic tiles and the demo categories.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ad_core import train
from ad_core.data import write_demo_dataset


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def figures(runs: list) -> dict[str, dict[str, float]]:
    """{category: {image_auroc, pixel_auroc, fit_s, steps}} of a list of `RunResult`s (steps: optimiser steps of
    the fit, None for a model fitted in one pass)."""
    return {r.category: {"image_auroc": r.image_auroc, "pixel_auroc": r.pixel_auroc,
                         "fit_s": r.run.get("fit_seconds"), "steps": r.run.get("steps")} for r in runs}


def compare(model: str, dataset: str, categories: list[str], root: str | None, out: Path,
            overrides: dict[str, Any]) -> dict[str, Any]:
    """Per-category runs then one unified run of `model`; their figures side by side."""
    start = time.perf_counter()
    separate = figures(train(dataset, categories, model, root=root, output_dir=out / "per_category",
                             verbose=False, **overrides))
    unified = figures(train(dataset, categories, model, root=root, output_dir=out / "unified", unified=True,
                            verbose=False, **overrides))
    mean = lambda d, k: sum(v[k] for v in d.values()) / len(d)  # noqa: E731
    return {"model": model, "categories": categories, "per_category": separate, "unified": unified,
            "mean": {"per_category": {k: mean(separate, k) for k in ("image_auroc", "pixel_auroc")},
                     "unified": {k: mean(unified, k) for k in ("image_auroc", "pixel_auroc")}},
            "wall_s": round(time.perf_counter() - start, 1)}


def markdown(records: list[dict[str, Any]]) -> str:
    lines = ["| model | category | image AUROC per-category | image AUROC unified | pixel AUROC per-category "
             "| pixel AUROC unified |", "|---|---|---|---|---|---|"]
    for rec in records:
        rows = [(c, rec["per_category"][c], rec["unified"][c]) for c in rec["categories"]]
        rows.append(("**mean**", rec["mean"]["per_category"], rec["mean"]["unified"]))
        for category, sep, uni in rows:
            lines.append(f"| {rec['model']} | {category} | {sep['image_auroc']:.3f} | {uni['image_auroc']:.3f} | "
                         f"{sep['pixel_auroc']:.3f} | {uni['pixel_auroc']:.3f} |")
    return "\n".join(lines)


def summary_markdown(records: list[dict[str, Any]]) -> str:
    """One row per model: each mode's AUROCs as `first / second / ... / mean` over the categories, and the
    optimiser steps of each fit (images for a one-pass model), per category in order where they differ."""
    def figures_of(rec: dict[str, Any], mode: str, key: str) -> str:
        values = [f"{rec[mode][c][key]:.3f}" for c in rec["categories"]]
        return " / ".join([*values, f"**{rec['mean'][mode][key]:.3f}**"])

    def steps(rec: dict[str, Any], mode: str) -> str:  # one number, or one per category where they differ
        found = [str(rec[mode][c].get("steps")) for c in rec["categories"]]
        return found[0] if len(set(found)) == 1 else ", ".join(found)

    lines = ["| model | steps per-category / unified | image AUROC per-category | image AUROC unified "
             "| pixel AUROC per-category | pixel AUROC unified |", "|---|---|---|---|---|---|"]
    for rec in records:
        lines.append(f"| {rec['model']} | {steps(rec, 'per_category')} / {steps(rec, 'unified')} | "
                     f"{figures_of(rec, 'per_category', 'image_auroc')} | {figures_of(rec, 'unified', 'image_auroc')} | "
                     f"{figures_of(rec, 'per_category', 'pixel_auroc')} | {figures_of(rec, 'unified', 'pixel_auroc')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="padim,patchcore-r18,stfpm,fastflow")
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--categories", default="weave,disc")
    parser.add_argument("--root")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrained", type=_value, default=False)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="A run option for every model, e.g. num_epochs=3 (gradient models).")
    parser.add_argument("--model-set", action="append", default=[], metavar="MODEL:KEY=VALUE",
                        help="A run option for one model only, e.g. dinomaly-small-224:center_crop=56.")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice).")
    parser.add_argument("--with-magnetic-tile", type=Path, metavar="DIR",
                        help="Unify the magnetic tiles (DIR/magnetic_tile, MVTec layout) with the demo categories.")
    parser.add_argument("--output", type=Path, help="Run folders (default: a temporary folder).")
    parser.add_argument("--json", type=Path, help="Write the record here.")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides: dict[str, Any] = {"image_size": args.image_size, "seed": args.seed, "pretrained": args.pretrained}
    for item in args.set:
        key, _, raw = item.partition("=")
        overrides[key.strip()] = _value(raw)
    per_model: dict[str, dict[str, Any]] = {}
    for item in args.model_set:
        model, _, option = item.partition(":")
        key, _, raw = option.partition("=")
        per_model.setdefault(model.strip(), {})[key.strip()] = _value(raw)
    categories = [c.strip() for c in args.categories.split(",") if c.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        out = args.output or Path(tmp)
        dataset, root = args.dataset, args.root
        if args.with_magnetic_tile:
            root = str(out / "data")
            write_demo_dataset(root, categories, image_size=max(args.image_size, 128))
            os.symlink(args.with_magnetic_tile.resolve() / "magnetic_tile", Path(root) / "magnetic_tile")
            dataset, categories = "mvtec", ["magnetic_tile", *categories]
        records = []
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            options = {**overrides, **per_model.get(model, {})}
            records.append({**compare(model, dataset, categories, root, out / model, options),
                            "settings": options})
            print(markdown(records[-1:]), flush=True)
            if args.json:  # after every model, so a long grid keeps what it has measured
                write_record(args.json, dataset, categories, overrides, records)
    print("\n" + markdown(records) + "\n\n" + summary_markdown(records))


def write_record(path: Path, dataset: str, categories: list[str], overrides: dict[str, Any],
                 records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "what": "unified (one model, all categories) vs per-category image/pixel AUROC",
        "dataset": dataset, "categories": categories, "settings": overrides,
        "host": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "records": records,
    }, indent=2))


if __name__ == "__main__":
    main()
