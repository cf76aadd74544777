"""Finding the trained models of a benchmark directory and picking the best few per (dataset, category).

A benchmark directory holds one cell per (dataset, category, model) at `<dir>/<dataset>/<category>/<model>/`,
the folder a run writes (`model.safetensors`, `model.json`, `results.json`, ...), optionally with a `cell.json`
whose `status` says whether the run succeeded. A unified cell (`<dir>/<dataset>/unified-<a>+<b>/<model>/`, one
model for several categories) is a candidate for each of its categories, ranked on that category's evaluation
(`<cell>/<category>/results.json`) and named `<model> (unified)` as in the leaderboard.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ad_core.api import META_NAME, WEIGHTS_NAME

CELL_NAME = "cell.json"
RESULTS_NAME = "results.json"
ENSEMBLE_NAME = "ensemble.json"
UNIFIED_SUFFIX = " (unified)"  # the leaderboard's name for a unified cell's model

# --by names and where each metric sits in results.json: first the validation source's (held-out normal images
# with synthetic defects, or the labelled validation folder), then the test split's, which steer the choice only
# when asked for by name (model selection on test data)
METRICS: dict[str, tuple[str, str]] = {
    "validation_image_auroc": ("validation", "image_auroc"),
    "validation_pixel_auroc": ("validation", "pixel_auroc"),
    "image_auroc": ("image", "auroc"),
    "image_aupr": ("image", "aupr"),
    "image_f1_max": ("image", "f1_max"),
    "pixel_auroc": ("pixel", "auroc"),
    "pixel_aupro": ("pixel", "aupro"),
}


@dataclass(frozen=True)
class Cell:
    """One trained model of a benchmark directory, with the results it was evaluated to."""

    dataset: str
    category: str
    model: str
    path: Path
    results: dict[str, Any]  # the evaluation on `category` (a unified cell's: that of its category folder)

    def metric(self, name: str) -> float:
        """The named metric, NaN when the run could not compute it (e.g. no masks, no map)."""
        section, key = METRICS[check_metric(name)]
        value = (self.results.get(section) or {}).get(key)
        return float("nan") if value is None else float(value)


DEFAULT_RANK_BY = "validation_image_auroc"


def on_validation(name: str) -> bool:
    """Whether ranking by `name` reads the validation source rather than the test split."""
    return METRICS[check_metric(name)][0] == "validation"


def check_metric(name: str) -> str:
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r} to rank by; valid ones: {', '.join(METRICS)}")
    return name


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def usable_cell(path: Path) -> dict[str, Any] | None:
    """The cell's results when it holds a trained model that evaluated; None for failed or partial cells."""
    if (path / ENSEMBLE_NAME).exists():
        return None  # an ensemble is built from models, never a member of another one
    if not all((path / name).is_file() for name in (WEIGHTS_NAME, META_NAME, RESULTS_NAME)):
        return None
    if (path / CELL_NAME).exists():
        cell = _read_json(path / CELL_NAME)
        if cell is None or cell.get("status") != "ok":
            return None
    return _read_json(path / RESULTS_NAME)


def find_cells(benchmark_dir: str | Path, dataset: str | None = None, category: str | None = None) -> list[Cell]:
    """Every usable cell under `benchmark_dir`, optionally of one dataset and/or category."""
    root = Path(benchmark_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"benchmark directory {root} does not exist")
    cells = []
    for path in sorted(root.glob("*/*/*")):
        if not path.is_dir():
            continue
        ds, cat, model = path.parts[-3:]
        if dataset is not None and ds != dataset:
            continue
        results = usable_cell(path)
        if results is None:
            continue
        if "unified" in results:
            found = unified_cells(ds, model, path, results)
        else:
            found = [Cell(ds, cat, model, path, results)]
        cells += [c for c in found if category is None or c.category == category]
    return cells


def unified_cells(dataset: str, model: str, path: Path, results: dict[str, Any]) -> list[Cell]:
    """A unified cell as one candidate per category it was evaluated on (categories without results are left
    out)."""
    cells = []
    for name in results["unified"]["categories"]:
        own = _read_json(path / name / RESULTS_NAME)
        if own is not None:
            cells.append(Cell(dataset, name, f"{model}{UNIFIED_SUFFIX}", path, own))
    return cells


def _rank_key(cell: Cell, by: str) -> tuple[float, float, str]:
    """Higher metric first, then higher pixel AUROC on the same source; a missing metric ranks last."""
    def neg(value: float) -> float:
        return math.inf if math.isnan(value) else -value

    tie = "validation_pixel_auroc" if on_validation(by) else "pixel_auroc"
    return neg(cell.metric(by)), neg(cell.metric(tie)), cell.model


def select_top(benchmark_dir: str | Path, top: int = 3, by: str = DEFAULT_RANK_BY, dataset: str | None = None,
               category: str | None = None) -> dict[tuple[str, str], list[Cell]]:
    """The `top` best usable cells per (dataset, category), best first: by default by their validation source's
    image AUROC, so the test split does not choose the members; a test metric (`image_auroc`, ...) by name."""
    check_metric(by)
    if top < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got top={top}")
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in find_cells(benchmark_dir, dataset, category):
        groups.setdefault((cell.dataset, cell.category), []).append(cell)
    if not groups:
        where = "/".join(x for x in (dataset, category) if x) or "any dataset and category"
        raise FileNotFoundError(
            f"no usable trained models for {where} under {benchmark_dir}: expected "
            f"<dir>/<dataset>/<category>/<model>/ folders with {WEIGHTS_NAME}, {META_NAME} and {RESULTS_NAME}"
        )
    return {key: sorted(cells, key=lambda c: _rank_key(c, by))[:top] for key, cells in sorted(groups.items())}
