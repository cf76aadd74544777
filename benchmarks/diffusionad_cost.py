#!/usr/bin/env python3
"""What the full DiffusionAD costs: seconds of one training step and of one test image at 256 px.

A training step is `training_step` + backward + both Adam steps; a test image is two UNet passes and one
segmentation pass. On a shared CPU the CPU seconds (`time.process_time`) are the figure to plan with; on a GPU,
the wall seconds after a synchronise. Example:

    OMP_NUM_THREADS=1 python benchmarks/diffusionad_cost.py --batch 1 --steps 2
    python benchmarks/diffusionad_cost.py --device cuda --batch 16 --steps 5
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from ad_core.plugin_api import Batch, StepContext
from ad_recon.diffusionad import DiffusionAD


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=256)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = DiffusionAD().to(device).train()
    optimizers = [torch.optim.Adam(model.unet.parameters(), lr=1e-4),
                  torch.optim.Adam(model.segmentation.parameters(), lr=1e-5)]
    size = args.image_size
    images = torch.rand(args.batch, 3, size, size, device=device)
    batch = Batch(images, torch.zeros(args.batch, dtype=torch.long), None, [""] * args.batch, [""] * args.batch)
    ctx = StepContext(optimizers=optimizers, schedulers=[], scaler=None, grad_clip=None)
    for step in range(args.steps):
        cpu, wall = time.process_time(), time.perf_counter()
        loss = model.training_step(batch, ctx)
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        synchronize(device)
        print(f"training step {step}, batch {args.batch}: {time.process_time() - cpu:.2f} CPU s, "
              f"{time.perf_counter() - wall:.2f} wall s", flush=True)
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


if __name__ == "__main__":
    main()
