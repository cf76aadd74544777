#!/usr/bin/env python3
"""What the full DiffusionAD costs: seconds of one training step and of one test image at 256 px.

A training step is `training_step` (synthesis included) + backward + both Adam steps + the segmentation rate's
schedule step, with the optimisers of `configure_optimizers`; a test image is two UNet passes and one
segmentation pass. On a shared CPU the CPU seconds (`time.process_time`) are the figure to plan with; on a GPU,
the wall seconds after a synchronise. Example:

    python benchmarks/diffusionad_cost.py --threads 1 --batch 1 --steps 2
    python benchmarks/diffusionad_cost.py --device cuda --batch 16 --steps 5
"""

from __future__ import annotations

import argparse

import torch
from step_cost import random_batch, report_test_image_and_memory, time_steps

from ad_core.plugin_api import StepContext, TrainingPlan
from ad_recon.diffusionad import DiffusionAD


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = DiffusionAD().to(device).train()
    unet_optimizer, seg_entry = model.configure_optimizers(
        TrainingPlan(total_steps=args.steps, steps_per_epoch=args.steps, num_epochs=None, max_steps=args.steps))
    optimizers = [unet_optimizer, seg_entry["optimizer"]]
    batch = random_batch(args.batch, args.image_size, device)
    ctx = StepContext(optimizers=optimizers, schedulers=[], scaler=None, grad_clip=None)

    def step() -> None:
        loss = model.training_step(batch, ctx)
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        seg_entry["scheduler"].step()

    time_steps(step, args.steps, args.batch, device)
    report_test_image_and_memory(model, batch.image, device)


if __name__ == "__main__":
    main()
