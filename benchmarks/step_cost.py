"""Shared pieces of the per-step cost scripts (`dinomaly_cost.py`, `diffusionad_cost.py`): a random batch, timing a
step, and the cost of one test image with the process's peak memory."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

import torch

from ad_core.plugin_api import AnomalyModel, Batch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_batch(count: int, size: int, device: torch.device) -> Batch:
    """`count` random [0,1] images of `size` px, labelled normal."""
    images = torch.rand(count, 3, size, size, device=device)
    return Batch(images, torch.zeros(count, dtype=torch.long), None, [""] * count, [""] * count)


def time_steps(step: Callable[[], None], steps: int, batch: int, device: torch.device) -> None:
    """Run `step` `steps` times, printing CPU and wall seconds of each (after a synchronise on a GPU)."""
    for index in range(steps):
        synchronize(device)
        cpu, wall = time.process_time(), time.perf_counter()
        step()
        synchronize(device)
        print(f"training step {index}, batch {batch}: {time.process_time() - cpu:.2f} CPU s, "
              f"{time.perf_counter() - wall:.2f} wall s", flush=True)


def report_test_image_and_memory(model: AnomalyModel, images: torch.Tensor, device: torch.device) -> None:
    """Seconds of one `predict` (after a warm-up one) and the process's peak RSS (and GPU memory)."""
    model.mark_fitted()
    one = images[:1]
    model.predict(one)
    synchronize(device)
    cpu, wall = time.process_time(), time.perf_counter()
    model.predict(one)
    synchronize(device)
    print(f"one test image: {time.process_time() - cpu:.2f} CPU s, {time.perf_counter() - wall:.2f} wall s")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
          + (f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
             if device.type == "cuda" else ""))
