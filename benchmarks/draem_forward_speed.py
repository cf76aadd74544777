"""DRAEM's predict path, ours against anomalib 2.7's network, at 64 px, widths 32/16, batch 16, one thread: the
same computation should cost the same. Run once with each side's python:
`python benchmarks/draem_forward_speed.py ours`, `ANOMALIB_PY benchmarks/draem_forward_speed.py anomalib`."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

BATCH, SIZE, REPEATS = 16, 64, 5


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
        start = time.perf_counter()
        for _ in range(REPEATS):
            run()
        print(f"{side}: {BATCH * REPEATS / (time.perf_counter() - start):.1f} img/s")


if __name__ == "__main__":
    main()
