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

import torch
from step_cost import random_batch, report_test_image_and_memory, time_steps

from ad_core.plugin_api import StepContext
from ad_recon.diffusionad import DiffusionAD


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
    batch = random_batch(args.batch, args.image_size, device)
    ctx = StepContext(optimizers=optimizers, schedulers=[], scaler=None, grad_clip=None)

    def step() -> None:
        loss = model.training_step(batch, ctx)
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()

    time_steps(step, args.steps, args.batch, device)
    report_test_image_and_memory(model, batch.image, device)


if __name__ == "__main__":
    main()
