"""How many CPU threads torch uses: every core this process may run on, unless the user says otherwise.

torch's own default is the number of physical cores of the machine, which ignores a container's or `taskset`'s
CPU set; `configure_threads` sizes the intra-op pool (one operator's parallel loop) and the inter-op pool
(independent operators run at once) to the CPUs the process is allowed to use. `OMP_NUM_THREADS` set in the
environment, or an explicit `threads` (the CLI's `--threads`), takes precedence. `adcore train`, `test`,
`predict` and `benchmark` cells call it once at start.
"""

from __future__ import annotations

import os


def available_cpus() -> int:
    """CPUs this process may run on (its affinity set where the platform has one, else all of them)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """`OMP_NUM_THREADS` when set to a positive number, else every available CPU."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return available_cpus()


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to `threads` (None or 0: `default_threads()`) and, while torch still allows it
    (before its first parallel operator), its inter-op threads to the same number; returns the intra-op count."""
    import torch  # here, so that reading the CPU count (the benchmark's parent) imports no torch

    if threads is not None and threads < 0:
        raise ValueError(f"threads must be a positive number (0 or none: every available CPU), got {threads}")
    count = int(threads) if threads else default_threads()
    torch.set_num_threads(count)
    if torch.get_num_interop_threads() != count:
        try:
            torch.set_num_interop_threads(count)
        except RuntimeError:  # the inter-op pool is fixed once torch has run parallel work; intra-op still counts
            pass
    return count
