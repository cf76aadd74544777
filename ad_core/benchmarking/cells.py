"""Run one benchmark cell in its own process and record it in `cell.json`.

Isolation is the point: a model that crashes, runs out of memory or hangs takes only its own process down.
The cell's folder is cleared when it starts and `cell.json` says `running`; the child writes `run_one`'s
outputs (each file atomically); the parent writes the final `cell.json` last. So a cell whose `cell.json`
says `ok` is complete, whatever moment a grid was killed at.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from ad_core import __version__
from ad_core.benchmarking.grid import CELL_FILE, Cell
from ad_core.api import FileLock, metric_summary, write_json

SCHEMA = 1
LOG_NAME = "cell.log"
CHILD_RESULT = ".child_result.json"
LOG_TAIL_LINES = 30
FINISHED = "ok"


@dataclass
class CellOptions:
    """How cells run: where outputs go, the run overrides, and the limits."""

    output: Path
    root: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    model_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    timeout: float | None = None
    threads: int | None = None
    examples: int = 4
    settings: dict[str, Any] = field(default_factory=dict)
    unified: dict[str, list[str]] = field(default_factory=dict)  # dataset -> categories of its one unified model

    def overrides_for(self, model: str) -> dict[str, Any]:
        return {**self.overrides, **self.model_overrides.get(model, {})}


@dataclass
class RunningCell:
    cell: Cell
    directory: Path
    process: subprocess.Popen
    log: IO[str]
    started: float
    started_at: str
    deadline: float | None
    config: dict[str, Any]
    lock: FileLock  # held from launch to the final cell.json: another grid on this directory waits for the cell


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_cell(directory: str | Path) -> dict[str, Any] | None:
    """The cell's `cell.json`, or None when it has none (never started) or it is unreadable."""
    path = Path(directory) / CELL_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_finished(directory: str | Path) -> bool:
    """A cell is finished when `cell.json` says ok and the files it vouches for exist."""
    record = read_cell(directory)
    if not record or record.get("status") != FINISHED:
        return False
    return all((Path(directory) / name).is_file() for name in ("results.json", "model.safetensors"))


def cell_lock(directory: Path) -> FileLock:
    """The lock of a cell: a file beside its folder, which `launch` clears."""
    return FileLock(directory.parent / f".{directory.name}.cell.lock", f"benchmark cell {directory}",
                    "benchmark grid")


class CellFinishedError(RuntimeError):
    """The cell is already finished: another grid finished it between a look at its folder and taking its lock."""


def launch(cell: Cell, options: CellOptions, unless_finished: bool = False) -> RunningCell:
    """Lock the cell, clear its folder, mark it running, and start its child process (in its own process group).

    The lock is held until the cell's record is written; a cell another grid is running raises
    `RunFolderBusyError` and is left alone. With `unless_finished`, a cell found finished once its lock is held
    raises `CellFinishedError` instead of being run again (the check must happen under the lock: checking first
    races with another grid that finishes the cell and releases the lock in between).
    """
    directory = cell.directory(options.output)
    lock = cell_lock(directory).acquire()
    try:
        if unless_finished and is_finished(directory):
            raise CellFinishedError(f"benchmark cell {directory} is already finished")
        return _start(cell, options, directory, lock)
    except BaseException:
        lock.release()
        raise


def _start(cell: Cell, options: CellOptions, directory: Path, lock: FileLock) -> RunningCell:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    started_at = _now()
    write_json(directory / CELL_FILE, {"schema": SCHEMA, "status": "running", **_identity(cell),
                                       "started": started_at, "host": platform.node(), "pid": os.getpid()})
    spec = {
        "dataset": cell.dataset, "category": cell.category, "model": cell.model, "root": options.root,
        "output_dir": str(options.output), "overrides": options.overrides_for(cell.model),
        "settings": options.settings, "threads": options.threads, "examples": options.examples,
        "result_file": str(directory / CHILD_RESULT), "parent_pid": os.getpid(),
        "categories": options.unified.get(cell.dataset),  # a unified cell: one model over these categories
    }
    env = {**os.environ, "ADCORE_PROGRESS": "0", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    if options.threads:
        env["OMP_NUM_THREADS"] = str(options.threads)
    log = open(directory / LOG_NAME, "w", encoding="utf-8")  # closed when the cell ends
    process = subprocess.Popen([sys.executable, "-m", "ad_core.benchmarking.child", json.dumps(spec)],
                               stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True)
    now = time.monotonic()
    config = {"overrides": spec["overrides"], "root": options.root, "threads": options.threads,
              "timeout": options.timeout}
    if spec["categories"]:
        config["unified"] = spec["categories"]
    return RunningCell(cell, directory, process, log, now, started_at,
                       now + options.timeout if options.timeout else None, config, lock)


def _reap(process: subprocess.Popen) -> tuple[int, float | None] | None:
    """(exit code, peak RSS in MB of that child) once it has ended, else None; never blocks."""
    if hasattr(os, "wait4"):
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == 0:
            return None
        process.returncode = os.waitstatus_to_exitcode(status)
        divisor = 2**20 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        return process.returncode, usage.ru_maxrss / divisor
    code = process.poll()
    return None if code is None else (code, None)


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        process.kill()


def poll(running: RunningCell) -> dict[str, Any] | None:
    """The finished cell's record (already written to `cell.json`), or None while it runs.

    A cell past its deadline is killed and recorded as `timeout`.
    """
    reaped = _reap(running.process)
    if reaped is None:
        if running.deadline is None or time.monotonic() < running.deadline:
            return None
        _kill(running.process)
        reaped = _wait(running.process)
        limit = running.deadline - running.started
        return _finish(running, reaped, status="timeout", error=f"exceeded the cell timeout of {limit:g} s")
    return _finish(running, reaped)


def _wait(process: subprocess.Popen) -> tuple[int, float | None]:
    while (reaped := _reap(process)) is None:
        time.sleep(0.05)
    return reaped


def stop(running: RunningCell, reason: str) -> dict[str, Any]:
    """Kill a running cell (the grid is being interrupted) and record why; it is run again next time."""
    _kill(running.process)
    return _finish(running, _wait(running.process), status="interrupted", error=reason)


def run_cell(cell: Cell, options: CellOptions) -> dict[str, Any]:
    """Run one cell to its end in a child process (blocking) and return its record."""
    running = launch(cell, options)
    try:
        while (record := poll(running)) is None:
            time.sleep(0.1)
    except BaseException:
        stop(running, "interrupted")
        raise
    return record


def _identity(cell: Cell) -> dict[str, str]:
    return {"dataset": cell.dataset, "category": cell.category, "model": cell.model}


def _log_tail(directory: Path) -> str:
    try:
        lines = (directory / LOG_NAME).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-LOG_TAIL_LINES:])


def _exit_error(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        hint = " (the system may have run out of memory)" if name == "SIGKILL" else ""
        return f"the cell's process was killed by {name}{hint}"
    return f"the cell's process exited with code {code}"


def _finish(running: RunningCell, reaped: tuple[int, float | None], status: str | None = None,
            error: str | None = None) -> dict[str, Any]:
    running.log.close()
    code, rss = reaped
    directory = running.directory
    child_file = directory / CHILD_RESULT
    try:
        child = json.loads(child_file.read_text())
    except (OSError, json.JSONDecodeError):
        child = {}
    if status is None:
        if child.get("ok") and code == 0:
            status = FINISHED
        else:
            status, error = "failed", child.get("error") or _exit_error(code)
    record = {
        "schema": SCHEMA,
        "status": status,
        **_identity(running.cell),
        "error": error,
        "returncode": code,
        "started": running.started_at,
        "finished": _now(),
        "wall_seconds": round(time.monotonic() - running.started, 3),
        "peak_rss_mb": None if rss is None else round(rss, 1),
        "cuda_peak_mb": child.get("cuda_peak_mb"),
        "host": platform.node(),
        **running.config,
        "versions": {"ad-core": __version__, "python": platform.python_version()},
    }
    if status == FINISHED:
        try:
            record.update(_measurements(directory, child))
        except (OSError, KeyError, json.JSONDecodeError) as exc:
            record.update(status="failed", error=f"the cell finished but its outputs are unreadable: {exc}")
    if status != FINISHED:
        record["log_tail"] = _log_tail(directory)
    child_file.unlink(missing_ok=True)
    write_json(directory / CELL_FILE, record)  # last: only now does the cell look finished
    running.lock.release()
    return record


def _measurements(directory: Path, child: dict[str, Any]) -> dict[str, Any]:
    """Metrics, timings, thresholds and sizes of a finished cell, from the files `run_one` wrote.

    A unified cell (one model over several categories, `run_unified`) records each category's evaluation, read
    from its folder, under `categories`, and their mean as `metrics`.
    """
    results = json.loads((directory / "results.json").read_text())
    run = results.get("run", {})
    if "unified" in results:
        figures = {"metrics": results["unified"]["mean"], "examples": child.get("examples", 0),
                   "categories": {name: _evaluation(json.loads((directory / name / "results.json").read_text()))
                                  for name in run["unified"]}}
    else:
        figures = {**_evaluation(results), "examples": child.get("examples", 0)}
    return {
        **figures,
        "fit_seconds": run.get("fit_seconds"),
        "checkpoint_bytes": (directory / "model.safetensors").stat().st_size,
        "train_images": run.get("train_images"),
        "image_size": run.get("image_size"),
        "device": run.get("device"),
        "epochs": run.get("epochs"),
        "steps": run.get("steps"),
        "warnings": child.get("warnings", []),
        "versions": {**_versions(directory), "ad-core": __version__, "python": platform.python_version()},
    }


def _evaluation(results: dict[str, Any]) -> dict[str, Any]:
    """The figures of one evaluation (`results.json`): metrics (recall and FPR at the saved, deployment
    threshold), per defect type, thresholds and test timing."""
    run = results.get("run", {})
    pixel_by_type = (results.get("pixel") or {}).get("per_defect_pixel_auroc") or {}
    per_defect = {kind: {**entry, "pixel_auroc": pixel_by_type.get(kind)}
                  for kind, entry in (results.get("per_defect") or {}).items()}
    return {
        "metrics": metric_summary(results),
        "per_defect": per_defect,
        "test_seconds": run.get("test_seconds"),
        "test_images_per_second": run.get("test_images_per_second"),
        "threshold": results.get("threshold"),
        "thresholds": {name: t.get("value") for name, t in (results.get("thresholds") or {}).items()},
        "test_images": run.get("test_images"),
    }


def _versions(directory: Path) -> dict[str, Any]:
    try:
        meta = json.loads((directory / "model.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    versions = meta.get("versions", {})
    return {"torch": versions.get("torch"), "plugin": versions.get("plugin")}
