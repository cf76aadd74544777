"""Run a grid of cells, N at a time, skipping finished ones, with a progress bar and an ETA."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from tqdm.auto import tqdm

from ad_core.benchmarking.cells import (CellFinishedError, CellOptions, RunningCell, is_finished, launch, poll,
                                        read_cell, stop)
from ad_core.benchmarking.grid import Cell
from ad_core.api import RunFolderBusyError

POLL_SECONDS = 0.1


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler ending the job) unwinds like Ctrl-C, so running cells are stopped and recorded."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def describe(record: dict[str, Any]) -> str:
    """One line per finished cell for logs: status, cell, time, and the image AUROC or the error."""
    key = f"{record['dataset']}/{record['category']}/{record['model']}"
    wall = record.get("wall_seconds")
    head = f"{record['status']:<7} {key}" + (f"  {wall:.1f} s" if wall is not None else "")
    if record["status"] == "ok":
        auroc = (record.get("metrics") or {}).get("image_auroc")
        return head + (f"  image AUROC {auroc:.3f}" if auroc is not None else "")
    error = str(record.get("error") or "").strip()
    return head + (f"  {error.splitlines()[0][:160]}" if error else "")


def run_grid(cells: list[Cell], options: CellOptions, jobs: int = 1, progress: bool = True,
             echo: Callable[[str], None] | None = print) -> list[dict[str, Any]]:
    """Run every unfinished cell, `jobs` at a time; returns the records of all cells in grid order.

    Records of cells skipped because they were already finished carry `"resumed": True`; a cell that another
    grid on the same directory is running is waited for and then taken as it finished (never run twice). `echo` prints one
    line per finished cell (through the progress bar when it is shown); None keeps quiet.
    Interrupting the grid (Ctrl-C, SIGTERM) kills the running cells and records them as interrupted.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    records: dict[Cell, dict[str, Any]] = {}
    queue: deque[Cell] = deque()
    for cell in cells:
        if is_finished(cell.directory(options.output)):
            records[cell] = {**(read_cell(cell.directory(options.output)) or {}), "resumed": True}
        else:
            queue.append(cell)
    total = len(cells)
    bar = tqdm(total=total, initial=total - len(queue), desc="benchmark", unit="cell", disable=not progress,
               dynamic_ncols=True)
    say = (tqdm.write if progress else echo) if echo is not None else (lambda line: None)
    if records:
        say(f"{len(records)} of {total} cells already finished: skipped")
    running: list[RunningCell] = []

    def show_running() -> None:
        bar.set_postfix_str("running: " + ", ".join(r.cell.key for r in running) if running else "")

    with _terminate_as_interrupt():
        try:
            while queue or running:
                for _ in range(len(queue)):
                    if len(running) >= jobs:
                        break
                    cell = queue.popleft()
                    try:
                        running.append(launch(cell, options, unless_finished=True))
                    except CellFinishedError:  # finished by another grid meanwhile
                        records[cell] = {**(read_cell(cell.directory(options.output)) or {}), "resumed": True}
                        bar.update(1)
                        continue
                    except RunFolderBusyError:  # another grid on this directory runs it: wait for it
                        queue.append(cell)
                    show_running()
                time.sleep(POLL_SECONDS)
                for item in list(running):
                    record = poll(item)
                    if record is None:
                        continue
                    running.remove(item)
                    records[item.cell] = record
                    bar.update(1)
                    show_running()
                    say(f"[{len(records)}/{total}] {describe(record)}")
        except BaseException:
            for item in running:
                stop(item, "the grid was interrupted while this cell ran")
            raise
        finally:
            bar.close()
    return [records[cell] for cell in cells]
