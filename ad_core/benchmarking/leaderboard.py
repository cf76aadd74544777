"""Leaderboard tables from a benchmark directory: one row per cell, mean ± std per model, CSV/JSON/Markdown."""

from __future__ import annotations

import csv
import io
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ad_core.benchmarking.cells import read_cell
from ad_core.benchmarking.grid import CELL_FILE
from ad_core.api import write_json, write_text

# (key, header) of the per-cell numbers; the first eight are the accuracy metrics (recall and FPR at the
# saved threshold, which is set on the validation source unless a test-label oracle was asked for by name).
METRICS = [
    ("image_auroc", "image AUROC"),
    ("image_aupr", "image AUPR"),
    ("image_f1_max", "F1-max"),
    ("pixel_auroc", "pixel AUROC"),
    ("pixel_aupro", "pixel AUPRO"),
    ("pixel_aupimo", "AUPIMO"),
    ("recall", "recall @thr"),
    ("fpr", "FPR @thr"),
    ("fit_seconds", "fit s"),
    ("test_images_per_second", "test img/s"),
    ("peak_rss_mb", "peak RSS MB"),
    ("cuda_peak_mb", "CUDA peak MB"),
    ("checkpoint_mb", "checkpoint MB"),
]
CELL_COLUMNS = ["dataset", "category", "model", "status", *[k for k, _ in METRICS], "threshold",
                "threshold_method", "wall_seconds", "image_size", "device", "error"]
RANK_METRIC = "image_auroc"
INCOMPLETE = "incomplete"  # a cell that was running when the directory was read, or was killed


def collect(directory: str | Path) -> list[dict[str, Any]]:
    """One flat row per cell folder (`<dir>/<dataset>/<category>/<model>/cell.json`), sorted."""
    rows = []
    for path in sorted(Path(directory).glob(f"*/*/*/{CELL_FILE}")):
        record = read_cell(path.parent)
        if record is not None:
            rows.append(flatten(record))
    return rows


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """A cell record as one row of plain values (metrics lifted, checkpoint size in MB)."""
    status = record.get("status", INCOMPLETE)
    metrics = record.get("metrics") or {}
    size = record.get("checkpoint_bytes")
    threshold = record.get("threshold") or {}
    row = {
        "dataset": record.get("dataset"), "category": record.get("category"), "model": record.get("model"),
        "status": INCOMPLETE if status in ("running", "interrupted") else status,
        **{key: metrics.get(key) for key, _ in METRICS[:8]},
        "fit_seconds": record.get("fit_seconds"),
        "test_images_per_second": record.get("test_images_per_second"),
        "peak_rss_mb": record.get("peak_rss_mb"),
        "cuda_peak_mb": record.get("cuda_peak_mb"),
        "checkpoint_mb": None if size is None else round(size / 2**20, 2),
        "threshold": threshold.get("value"),
        "threshold_method": threshold.get("method"),
        "wall_seconds": record.get("wall_seconds"),
        "image_size": record.get("image_size"),
        "device": record.get("device"),
        "error": record.get("error") or ("the cell was running or was interrupted" if status == "running" else None),
        "per_defect": record.get("per_defect") or {},
    }
    return row


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def summarize(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per dataset, one entry per model: mean and std over its finished categories, best mean AUROC first.

    The std is the population std over categories (0 for one category); models are ranked by mean image
    AUROC over the categories they finished, so `cells_ok` of `cells` says how complete that mean is.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for dataset in sorted({r["dataset"] for r in rows}):
        entries = []
        subset = [r for r in rows if r["dataset"] == dataset]
        for model in sorted({r["model"] for r in subset}):
            cells = [r for r in subset if r["model"] == model]
            ok = [r for r in cells if r["status"] == "ok"]
            entry: dict[str, Any] = {"model": model, "cells": len(cells), "cells_ok": len(ok)}
            for key, _ in METRICS:
                values = [v for v in (_number(r[key]) for r in ok) if v is not None]
                entry[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)} \
                    if values else None
            entries.append(entry)
        entries.sort(key=lambda e: (-(e[RANK_METRIC] or {}).get("mean", -1.0), e["model"]))
        for rank, entry in enumerate(entries, 1):
            entry["rank"] = rank
        out[dataset] = entries
    return out


def per_category(rows: list[dict[str, Any]], dataset: str, key: str = RANK_METRIC) -> tuple[
        list[str], list[str], np.ndarray]:
    """(models, categories, values[model, category]) for one dataset; NaN where a cell is missing or failed."""
    subset = [r for r in rows if r["dataset"] == dataset]
    models = sorted({r["model"] for r in subset})
    categories = sorted({r["category"] for r in subset})
    values = np.full((len(models), len(categories)), np.nan)
    for r in subset:
        value = _number(r.get(key)) if r["status"] == "ok" else None
        if value is not None:
            values[models.index(r["model"]), categories.index(r["category"])] = value
    return models, categories, values


def _digits(number: float) -> int:
    """Decimals for a figure of this size: 0.987, 12.3, 1234."""
    return 0 if abs(number) >= 100 else 1 if abs(number) >= 10 else 3


def fmt(value: Any, digits: int | None = None) -> str:
    number = _number(value)
    if number is None:
        return "" if value is None else str(value)
    return f"{number:.{_digits(number) if digits is None else digits}f}"


def fmt_mean_std(stat: dict[str, Any] | None) -> str:
    """`0.940 ± 0.060`; the std gets the mean's number of decimals."""
    if not stat:
        return "n/a"
    digits = _digits(stat["mean"])
    return fmt(stat["mean"], digits) if stat["n"] < 2 else f"{fmt(stat['mean'], digits)} ± {fmt(stat['std'], digits)}"


def shown_metrics(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The metric columns worth showing: those with a value in at least one cell (no CUDA column on CPU)."""
    return [(key, header) for key, header in METRICS if any(_number(r.get(key)) is not None for r in rows)] or METRICS[:1]


def to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CELL_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in CELL_COLUMNS})
    return buffer.getvalue()


def _md_table(headers: list[str], body: list[list[str]]) -> list[str]:
    clean = lambda text: str(text).replace("|", "\\|").replace("\n", " ")
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *["| " + " | ".join(clean(c) for c in line) + " |" for line in body], ""]


def status_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts


def _per_defect_table(rows: list[dict[str, Any]], dataset: str) -> list[str]:
    """Per category and defect type, each model's image recall at its saved threshold / pixel AUROC."""
    cells = [r for r in rows if r["dataset"] == dataset and r["status"] == "ok" and r.get("per_defect")]
    if not cells:
        return []
    models = sorted({r["model"] for r in cells})
    body = []
    for category in sorted({r["category"] for r in cells}):
        by_model = {r["model"]: r["per_defect"] for r in cells if r["category"] == category}
        for kind in sorted({k for d in by_model.values() for k in d}):
            entries = [by_model.get(m, {}).get(kind) for m in models]
            body.append([category, kind, *["—" if e is None else f"{fmt(e.get('recall'), 3)} / "
                                           f"{fmt(e.get('pixel_auroc'), 3) or 'n/a'}" for e in entries]])
    return ["### Per defect type: image recall at the saved threshold / pixel AUROC", "",
            *_md_table(["category", "defect type", *models], body)]


def to_markdown(rows: list[dict[str, Any]], summary: dict[str, list[dict[str, Any]]]) -> str:
    counts = ", ".join(f"{n} {status}" for status, n in sorted(status_counts(rows).items()))
    lines = ["# Benchmark leaderboard", "", f"{len(rows)} cells: {counts or 'none'}.", ""]
    for dataset, entries in summary.items():
        lines += [f"## {dataset}", "", "Mean ± std over categories; ranked by mean image AUROC.", ""]
        columns = shown_metrics([r for r in rows if r["dataset"] == dataset])
        lines += _md_table(["rank", "model", "cells ok", *[h for _, h in columns]],
                           [[str(e["rank"]), e["model"], f"{e['cells_ok']}/{e['cells']}",
                             *[fmt_mean_std(e[k]) for k, _ in columns]] for e in entries])
        models, categories, values = per_category(rows, dataset)
        lines += ["### Image AUROC per category", ""]
        lines += _md_table(["model", *categories],
                           [[m, *[fmt(v) if np.isfinite(v) else "—" for v in values[i]]] for i, m in enumerate(models)])
        lines += _per_defect_table(rows, dataset)
        failures = [r for r in rows if r["dataset"] == dataset and r["status"] != "ok"]
        if failures:
            lines += ["### Failed cells", ""]
            lines += [f"- `{r['category']}/{r['model']}` **{r['status']}**: {str(r.get('error') or '').strip()}"
                      for r in failures] + [""]
    return "\n".join(lines)


def write_tables(directory: str | Path, rows: list[dict[str, Any]],
                 summary: dict[str, list[dict[str, Any]]]) -> dict[str, Path]:
    """`leaderboard.csv` (one row per cell), `leaderboard.json` (cells and per-model summaries), `.md`."""
    directory = Path(directory)
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {
        "csv": write_text(directory / "leaderboard.csv", to_csv(rows)),
        "json": write_json(directory / "leaderboard.json", {"generated": generated, "cells": rows,
                                                            "summary": summary}),
        "md": write_text(directory / "leaderboard.md", to_markdown(rows, summary)),
    }
