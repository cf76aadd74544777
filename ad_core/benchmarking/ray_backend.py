"""The benchmark grid on a Ray cluster: each cell is a Ray task that runs the local backend's `run_cell`.

Why this shape: a cell already runs in its own child process with its timeout, crash and kill records
(`ad_core.benchmarking.cells`); a Ray task wraps exactly that on whichever node has the resources, so a cell's
record is the same as on one machine. The task writes the cell into a temporary folder on its node and returns
it packed (a gzip tar of a few MB: checkpoint, results, maps) with its record, so no shared file system is needed;
the driver unpacks it into the benchmark directory and writes `cell.json` last, as the local backend does. A node
lost while a cell runs is covered by Ray's task retries; when they run out the cell is recorded as failed.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ad_core.api import MissingPackageError, write_json
from ad_core.benchmarking.cells import (SCHEMA, CellOptions, cell_lock, is_finished, read_cell, run_cell)
from ad_core.benchmarking.grid import CELL_FILE, Cell

INSTALL_HINT = "the Ray backend needs the `ray` package: pip install 'ad-core[ray]' (or pip install ray)"
DEFAULT_RETRIES = 3


def import_ray() -> Any:
    """`ray`, or a clear error saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise MissingPackageError(INSTALL_HINT) from exc
    return ray


def pack_cell(directory: Path) -> bytes:
    """The cell's folder as gzip tar bytes (paths relative to the folder)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(directory.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)
    return buffer.getvalue()


def unpack_cell(blob: bytes, directory: Path) -> None:
    """Replace `directory` with the packed cell, without its `cell.json` (the caller writes that last).

    Members are extracted with tarfile's `data` filter: no absolute paths, no links out of the folder.
    """
    staging = directory.with_name(f".{directory.name}.incoming")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        tar.extractall(staging, filter="data")
    (staging / CELL_FILE).unlink(missing_ok=True)
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)


def run_packed_cell(cell: Cell, options: CellOptions) -> tuple[dict[str, Any], bytes]:
    """What a Ray task runs on its node: the cell in a temporary benchmark directory, returned packed."""
    with tempfile.TemporaryDirectory(prefix="adcore-cell-") as tmp:
        record = run_cell(cell, replace(options, output=Path(tmp)))
        return record, pack_cell(cell.directory(tmp))


def _lost_record(cell: Cell, started: float, error: str, options: CellOptions) -> dict[str, Any]:
    """The record of a cell whose task never came back (its node was lost and the retries ran out)."""
    return {"schema": SCHEMA, "status": "failed", "dataset": cell.dataset, "category": cell.category,
            "model": cell.model, "error": error, "returncode": None,
            "wall_seconds": round(time.monotonic() - started, 3), "overrides": options.overrides_for(cell.model),
            "root": options.root, "threads": options.threads, "timeout": options.timeout, "backend": "ray"}


def run_grid_ray(cells: list[Cell], options: CellOptions, *, address: str | None = None, cpus_per_cell: float = 1,
                 gpus_per_cell: float = 0, retries: int = DEFAULT_RETRIES, progress: bool = True,
                 echo: Callable[[str], None] | None = print) -> list[dict[str, Any]]:
    """Run every unfinished cell as a Ray task; returns the records of all cells in grid order.

    `address`: None starts (or joins) a local Ray instance, "auto" joins the cluster this machine belongs to,
    "ray://host:10001" a remote one. Finished cells are skipped (`"resumed": True`), as with the local backend.
    """
    from tqdm.auto import tqdm

    from ad_core.benchmarking.schedule import describe

    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    task = ray.remote(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell, max_retries=retries)(run_packed_cell)
    records: dict[Cell, dict[str, Any]] = {}
    for cell in cells:
        if is_finished(cell.directory(options.output)):
            records[cell] = {**(read_cell(cell.directory(options.output)) or {}), "resumed": True}
    say = (tqdm.write if progress else echo) if echo is not None else (lambda line: None)
    if records:
        say(f"{len(records)} of {len(cells)} cells already finished: skipped")
    bar = tqdm(total=len(cells), initial=len(records), desc="benchmark (ray)", unit="cell", disable=not progress,
               dynamic_ncols=True)
    pending: dict[Any, tuple[Cell, Any, float]] = {}
    try:
        for cell in cells:
            if cell in records:
                continue
            directory = cell.directory(options.output)
            lock = cell_lock(directory).acquire()
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            write_json(directory / CELL_FILE, {"schema": SCHEMA, "status": "running", "dataset": cell.dataset,
                                               "category": cell.category, "model": cell.model, "backend": "ray"})
            pending[task.remote(cell, options)] = (cell, lock, time.monotonic())
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            cell, lock, started = pending.pop(ref)
            directory = cell.directory(options.output)
            try:
                record, blob = ray.get(ref)
                unpack_cell(blob, directory)
                record = {**record, "backend": "ray"}
            except ray.exceptions.RayError as exc:
                record = _lost_record(cell, started, f"the cell's Ray task failed: {type(exc).__name__}: "
                                      f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}", options)
            write_json(directory / CELL_FILE, record)  # last: only now does the cell look finished
            lock.release()
            records[cell] = record
            bar.update(1)
            say(f"[{len(records)}/{len(cells)}] {describe(record)}")
    except BaseException:
        for ref, (cell, lock, started) in pending.items():
            ray.cancel(ref, force=True)
            write_json(cell.directory(options.output) / CELL_FILE,
                       {**_lost_record(cell, started, "the grid was interrupted while this cell ran", options),
                        "status": "interrupted"})
            lock.release()
        raise
    finally:
        bar.close()
    return [records[cell] for cell in cells]

