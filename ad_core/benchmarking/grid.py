"""The benchmark grid: one cell per (dataset, category, model), its folder, and deterministic shards."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CELL_FILE = "cell.json"
_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True, order=True)
class Cell:
    """One model trained and tested on one category; its outputs live in `<dir>/<dataset>/<category>/<model>/`."""

    dataset: str
    category: str
    model: str

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.category}/{self.model}"

    def directory(self, root: str | Path) -> Path:
        return Path(root) / self.dataset / self.category / self.model


def make_grid(datasets: Iterable[str], categories: dict[str, list[str]], models: Iterable[str]) -> list[Cell]:
    """Every (dataset, category, model) in a fixed order: datasets, then categories, then models as given.

    `categories` maps each dataset to its (already expanded) category list. Duplicates are dropped.
    """
    cells: list[Cell] = []
    for dataset in datasets:
        for category in categories[dataset]:
            for model in models:
                cell = Cell(dataset, category, model)
                if cell not in cells:
                    cells.append(cell)
    return cells


def parse_shard(text: str) -> tuple[int, int]:
    """`"2/4"` -> (2, 4); shards are numbered from 1."""
    match = _SHARD_RE.match(str(text))
    if not match:
        raise ValueError(f"--shard expects i/n (e.g. 1/4), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"--shard {text!r}: need 1 <= i <= n")
    return index, count


def shard(cells: list[Cell], index: int, count: int) -> list[Cell]:
    """Shard `index` of `count` (1-based): every `count`-th cell of the grid, so slow models spread evenly.

    The shards of one grid are disjoint and together hold every cell, on any machine that builds the
    same grid (same models, datasets and categories in the same order).
    """
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"shard {index}/{count}: need 1 <= i <= n")
    return [cell for position, cell in enumerate(cells) if position % count == index - 1]
