"""Merge whatever cells a benchmark directory holds into the leaderboard files and `report.html`."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ad_core.benchmarking import figures, html
from ad_core.benchmarking.cells import read_cell
from ad_core.benchmarking.leaderboard import collect, summarize, write_tables
from ad_core.api import write_text

BEST_MODELS = 3  # models shown in the score histograms


def _dataset_figures(root: Path, rows: list[dict[str, Any]], dataset: str,
                     entries: list[dict[str, Any]]) -> dict[str, Any]:
    ranked = [e["model"] for e in entries if e["cells_ok"]]
    subset = [r for r in rows if r["dataset"] == dataset]
    categories = sorted({r["category"] for r in subset})
    return {
        "heatmap": figures.heatmap(rows, dataset),
        "speed": figures.speed_scatter(entries, dataset),
        "histograms": figures.score_histograms(root, rows, dataset, ranked[:BEST_MODELS]),
        "examples": {c: figures.example_maps(root, dataset, c, _example_folders(subset, c, ranked))
                     for c in categories},
    }


def _example_folders(rows: list[dict[str, Any]], category: str, ranked: list[str]) -> dict[str, str]:
    """Model -> the folder of its outputs for `category` (a unified model's category folder), best model first."""
    folders = {r["model"]: r["directory"] for r in rows if r["category"] == category}
    return {m: folders[m] for m in ranked if m in folders}


def write_report(directory: str | Path, title: str = "ad-core benchmark") -> dict[str, Path]:
    """Write `leaderboard.csv`, `leaderboard.json`, `leaderboard.md` and `report.html` into `directory`."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"no benchmark directory at {root}")
    rows = collect(root)
    if not rows:
        raise FileNotFoundError(f"{root} holds no benchmark cells (<dataset>/<category>/<model>/cell.json)")
    summary = summarize(rows)
    files = write_tables(root, rows, summary)
    logs = {}
    for r in rows:
        if r["status"] != "ok":
            record = read_cell(root / r["directory"]) or {}
            logs[(r["dataset"], r["category"], r["model"])] = record.get("log_tail", "")
    figs = {dataset: _dataset_figures(root, rows, dataset, entries) for dataset, entries in summary.items()}
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    files["html"] = write_text(root / "report.html", html.render(title, rows, summary, figs, logs, generated))
    return files
