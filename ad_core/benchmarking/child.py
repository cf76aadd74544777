"""The child process of one benchmark cell: `python -m ad_core.benchmarking.child '<spec JSON>'`.

It trains and tests one model with `run_one` (the cell's folder is exactly what `run_one` writes), stores the
example maps, and writes a small result file for the parent. Any exception becomes an error record; a hard
crash (segfault, out-of-memory kill) is seen by the parent through the exit status and the log.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any


def _die_with_parent(parent_pid: int) -> None:
    """On Linux, be killed when the grid process dies, so a killed grid leaves no orphan writing into cells."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except OSError:
            return
    if parent_pid and os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Train, test and store examples for one cell in this process; returns what the parent records."""
    import torch

    from ad_core.api import configure_threads

    configure_threads(spec.get("threads"))  # the cell's share of the CPUs, or all of them
    from ad_core.benchmarking.examples import write_examples
    from ad_core.api import load_model
    from ad_core.api import get_dataset
    from ad_core.api import run_one
    from ad_core.api import run_unified
    from ad_core.api import set_globals

    set_globals(**spec.get("settings", {}), progress=False)
    unified = bool(spec.get("categories"))
    if unified:  # a unified cell: one model over the categories, its folder is the run folder
        per_category = run_unified(spec["dataset"], spec["categories"], spec["model"], root=spec.get("root"),
                                   output_dir=spec["output_dir"], **spec.get("overrides", {}))
        result = per_category[0]
        result_dir = result.run["unified_dir"]
    else:
        per_category = [run_one(spec["dataset"], spec["category"], spec["model"], root=spec.get("root"),
                                output_dir=spec["output_dir"], **spec.get("overrides", {}))]
        result = per_category[0]
        result_dir = str(result.output_dir)
    cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_initialized() else None
    examples = 0
    if int(spec.get("examples", 0)) > 0:
        device = result.run.get("device", "cpu")
        # a unified cell's examples go to each category's folder, made at that category's thresholds
        for evaluated in per_category:
            detector = load_model(result_dir, device=device, category=evaluated.category if unified else None)
            test_set = get_dataset(spec["dataset"], evaluated.category, "test",
                                   image_size=detector.meta["image_size"], root=spec.get("root"))
            examples += write_examples(detector, test_set, evaluated.output_dir, int(spec["examples"]),
                                       device=device)
    return {"run": result.run, "warnings": result.warnings, "cuda_peak_mb": cuda_peak, "examples": examples,
            "output_dir": result_dir}


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    _die_with_parent(int(spec.get("parent_pid", 0)))
    from ad_core.api import write_json

    result_file = Path(spec["result_file"])
    try:
        write_json(result_file, {"ok": True, **run(spec)})
    except BaseException as exc:  # noqa: B036 -- MemoryError and KeyboardInterrupt are cell failures too
        traceback.print_exc()
        message = str(exc).strip()
        write_json(result_file, {"ok": False, "error": f"{type(exc).__name__}: {message}" if message
                                 else type(exc).__name__, "traceback": traceback.format_exc()})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
