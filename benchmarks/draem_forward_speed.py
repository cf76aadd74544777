"""DRAEM's predict path, ours against anomalib 2.7's network, at 64 px, widths 32/16, batch 16, one thread: the
same computation should cost the same. Run once with each side's python:
`python benchmarks/draem_forward_speed.py ours`, `ANOMALIB_PY benchmarks/draem_forward_speed.py anomalib`.

Besides images per second (wall time) it prints the process's user and system CPU seconds and minor page faults
per batch: the system time is glibc's malloc handing freed activation buffers back to the kernel and faulting them
in again, which depends on the process's allocation history (it varies from run to run on both sides); with
`MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=536870912` in the environment it disappears."""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable

import torch

BATCH, SIZE, REPEATS = 16, 64, 10


def ours(images: torch.Tensor) -> Callable[[], object]:
    from ad_core.building import build_model

    model, _ = build_model("draem", reconstructive_width=32, discriminative_width=16, image_size=SIZE,
                           pretrained=False)
    model.mark_fitted()
    model.eval()
    return lambda: model.predict(images)


def anomalib(images: torch.Tensor) -> Callable[[], object]:
    from anomalib.models.image.draem.torch_model import (
        DiscriminativeSubNetwork,
        DraemModel,
        ReconstructiveSubNetwork,
    )

    model = DraemModel()
    model.reconstructive_subnetwork = ReconstructiveSubNetwork(base_width=32)
    model.discriminative_subnetwork = DiscriminativeSubNetwork(in_channels=6, out_channels=2, base_width=16)
    model.eval()
    return lambda: model(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("side", choices=["ours", "anomalib"])
    side = parser.parse_args().side
    torch.set_num_threads(1)
    run = (ours if side == "ours" else anomalib)(torch.rand(BATCH, 3, SIZE, SIZE))
    with torch.inference_mode():
        run()  # warm-up
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(REPEATS):
            run()
        wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    print(f"{side}: {BATCH * REPEATS / wall:.1f} img/s; per batch: user "
          f"{(after.ru_utime - before.ru_utime) / REPEATS:.3f} s, system {(after.ru_stime - before.ru_stime) / REPEATS:.3f} s, "
          f"{(after.ru_minflt - before.ru_minflt) / REPEATS:.0f} minor page faults")


if __name__ == "__main__":
    main()
