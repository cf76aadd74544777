"""`adcore benchmark`: many models on many categories, each cell in its own process, and a leaderboard report.

A benchmark directory holds one cell per (dataset, category, model) at `<dir>/<dataset>/<category>/<model>/`:
exactly the folder `run_one` writes, plus `cell.json` (status, error, timings, memory, sizes), `scores.json`,
`examples.safetensors` and `cell.log`. The report (`leaderboard.{csv,json,md}`, `report.html`) is rebuilt
from whatever cells a directory holds, so shards run on several machines merge by copying their folders.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ad_core.benchmarking.cells import CellOptions, run_cell
from ad_core.benchmarking import grid
from ad_core.benchmarking.grid import Cell, make_grid, parse_shard, shard
from ad_core.benchmarking.leaderboard import collect
from ad_core.benchmarking.report import write_report

__all__ = ["BenchmarkRun", "Cell", "CellOptions", "benchmark", "make_grid", "parse_shard", "run_cell", "shard",
           "write_report"]


@dataclass
class BenchmarkRun:
    """What one `benchmark` call did: its cells' records (grid order) and the report files."""

    output: Path
    records: list[dict[str, Any]]
    report: dict[str, Path] = field(default_factory=dict)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("status") != "ok"]


def _names(value: str | Iterable[str]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return [item.strip() for item in items if item and item.strip()]


def _check_models(models: list[str], overrides: dict[str, Any],
                  model_overrides: dict[str, dict[str, Any]]) -> list[str]:
    """Canonical model names; unknown models and unknown or ill-typed options fail now rather than in every cell.

    A model whose code cannot even be imported is left to fail in its own cells, so the grid goes on.
    """
    from ad_core.api import OptionError, check_options, get_registry

    registry = get_registry()
    names = [registry.resolve(m)[1] for m in models]
    unknown = sorted(set(model_overrides) - set(names))
    if unknown:
        raise ValueError(f"options given for model(s) {unknown} that are not in the grid {names}")
    for name in names:
        try:
            check_options(name, {**overrides, **model_overrides.get(name, {})})
        except OptionError:
            raise
        except Exception:  # a model that cannot be built here is recorded as failed by its cells
            continue
    return names


def _categories(datasets: list[str], categories: str | Iterable[str], root: str | Path | None) -> dict[str, list[str]]:
    from ad_core.api import list_categories

    wanted = _names(categories)
    return {ds: (sorted(list_categories(ds, root)) if wanted == ["all"] else wanted) for ds in datasets}


def benchmark(models: str | Iterable[str], dataset: str | Iterable[str], categories: str | Iterable[str] = "all", *,
              output: str | Path, root: str | Path | None = None, jobs: int = 1,
              shard: str | tuple[int, int] | None = None, cell_timeout: float | None = None,
              threads: int | None = None, examples: int = 4,
              model_overrides: dict[str, dict[str, Any]] | None = None, report: bool = True,
              progress: bool | None = None, verbose: bool = True, unified: bool = False, backend: str = "local",
              address: str | None = None, cpus_per_cell: float | None = None, gpus_per_cell: float = 0,
              **overrides: Any) -> BenchmarkRun:
    """Train and test every model on every category, each cell in its own process, then write the report.

    With `unified=True` a cell is one model per dataset trained on all the categories together
    (`<output>/<dataset>/unified-<a>+<b>/<model>/`), evaluated per category; the leaderboard lists it per
    category as `<model> (unified)`, beside per-category cells of the same directory.

    Finished cells in `output` are skipped, so a killed grid resumes where it stopped. `shard="2/4"` runs
    every 4th cell starting with the 2nd. `overrides` apply to every model (`image_size=128`);
    `model_overrides={"patchcore": {"coreset_ratio": 0.01}}` to one. Example:
    `benchmark("padim,patchcore", "mvtec", "bottle,wood", output="bench", image_size=256)`.

    `backend="ray"` runs each cell as a Ray task (`address`: None for a local instance, "auto" or
    "ray://host:10001" for a cluster) asking for `cpus_per_cell` CPUs (default 1; also the cell's thread count)
    and `gpus_per_cell` GPUs; `jobs` does not apply there (Ray schedules by resources).
    """
    from ad_core.benchmarking.schedule import run_grid
    from ad_core.api import settings

    if backend not in ("local", "ray"):
        raise ValueError(f"backend is 'local' or 'ray', got {backend!r}")
    if backend == "ray":
        from ad_core.benchmarking.ray_backend import import_ray

        import_ray()  # a clear error before anything runs
        threads = threads if threads is not None else max(1, int(cpus_per_cell or 1))
    elif address is not None or cpus_per_cell is not None or gpus_per_cell:
        raise ValueError("address, cpus_per_cell and gpus_per_cell apply to backend='ray' only")
    model_overrides = {k.strip().lower(): dict(v) for k, v in (model_overrides or {}).items()}
    names = _check_models(_names(models), overrides, model_overrides)
    datasets = _names(dataset)
    if not names or not datasets:
        raise ValueError("a benchmark needs at least one model and one dataset")
    expanded = _categories(datasets, categories, root)
    if unified:
        from ad_core.api import check_unified, unified_label

        for name in names:
            check_unified(name)
        cells = make_grid(datasets, {ds: [unified_label(cats)] for ds, cats in expanded.items()}, names)
    else:
        cells = make_grid(datasets, expanded, names)
    if shard is not None:
        index, count = parse_shard(shard) if isinstance(shard, str) else shard
        cells = grid.shard(cells, index, count)
    if threads is None and jobs > 1:
        from ad_core.api import available_cpus

        threads = max(1, available_cpus() // jobs)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    options = CellOptions(output=output, root=None if root is None else str(root), overrides=dict(overrides),
                          model_overrides=model_overrides, timeout=cell_timeout, threads=threads,
                          examples=examples, unified=expanded if unified else {},
                          settings={k: v for k, v in settings.as_dict().items() if k != "progress"})
    show = settings.progress if progress is None else progress
    if backend == "ray":
        from ad_core.benchmarking.ray_backend import run_grid_ray

        records = run_grid_ray(cells, options, address=address, cpus_per_cell=cpus_per_cell or 1,
                               gpus_per_cell=gpus_per_cell, progress=show, echo=print if verbose else None)
    else:
        records = run_grid(cells, options, jobs=jobs, progress=show, echo=print if verbose else None)
    files = write_report(output) if report and (records or collect(output)) else {}  # a shard may be empty
    return BenchmarkRun(output, records, files)
