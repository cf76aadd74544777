"""Two benchmark grids on one directory: a cell the other grid runs is waited for, never run twice or failed."""

from __future__ import annotations

import json
import threading

import pytest

from ad_core.benchmarking.cells import CellFinishedError, CellOptions, cell_lock, launch
from ad_core.benchmarking.grid import CELL_FILE, Cell
from ad_core.benchmarking.schedule import run_grid
from ad_core.run_folder import RunFolderBusyError


def test_a_cell_another_grid_runs_is_waited_for_and_taken_as_finished(tmp_path) -> None:
    cell = Cell("demo", "weave", "tiny-ae")
    options = CellOptions(output=tmp_path)
    directory = cell.directory(tmp_path)
    other_grid = cell_lock(directory).acquire()
    with pytest.raises(RunFolderBusyError, match="another benchmark grid"):
        launch(cell, options)
    result: list = []
    waiting = threading.Thread(target=lambda: result.extend(run_grid([cell], options, progress=False, echo=None)))
    waiting.start()
    directory.mkdir(parents=True)  # what the other grid's cell writes, cell.json last
    (directory / "results.json").write_text("{}")
    (directory / "model.safetensors").write_bytes(b"")
    (directory / CELL_FILE).write_text(json.dumps({"status": "ok", "dataset": "demo", "category": "weave",
                                                   "model": "tiny-ae", "pid": "other"}))
    other_grid.release()
    waiting.join(timeout=60)
    assert not waiting.is_alive()
    (record,) = result
    assert record["status"] == "ok" and record["resumed"] is True and record["pid"] == "other"
    assert not list(tmp_path.rglob(".*.lock"))


def test_a_cell_finished_while_its_lock_was_awaited_is_not_run_again(tmp_path) -> None:
    """The race behind a flaky grid: the other grid finishes the cell between our look and our lock."""
    cell = Cell("demo", "weave", "tiny-ae")
    options = CellOptions(output=tmp_path)
    directory = cell.directory(tmp_path)
    directory.mkdir(parents=True)
    (directory / "results.json").write_text("{}")
    (directory / "model.safetensors").write_bytes(b"weights")
    (directory / CELL_FILE).write_text(json.dumps({"status": "ok", "pid": "other"}))
    with pytest.raises(CellFinishedError):
        launch(cell, options, unless_finished=True)
    assert (directory / "model.safetensors").read_bytes() == b"weights"  # the finished cell is left as it was
    assert cell_lock(directory).acquire()  # and its lock was released
