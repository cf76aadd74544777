#!/usr/bin/env python3
"""What a Dinomaly variant costs at its paper size: seconds of one training step and of one test image.

A training step is the forward pass, the hard-mining loss, backward, gradient clipping (0.1) and a StableAdamW
step, as the gradient trainer runs it; a test image is one `predict`. Random encoder weights (the cost does not
depend on them). On a shared CPU the CPU seconds (`time.process_time`) are the figure to plan with; on a GPU,
the wall seconds after a synchronise. Examples:

    python benchmarks/dinomaly_cost.py --model dinomaly-base-392 --batch 1 --steps 2
    python benchmarks/dinomaly_cost.py --model dinomaly-base-392 --device cuda --batch 16 --steps 20
"""

from __future__ import annotations

import argparse

import torch
from step_cost import random_batch, report_test_image_and_memory, time_steps

from ad_core.building import build_model
from ad_core.plugin_api import StepContext, TrainingPlan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dinomaly-base-392")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model, config = build_model(args.model, pretrained=False)
    model = model.to(device).train()
    crop = int(config.run["center_crop"])
    configured = model.configure_optimizers(TrainingPlan(total_steps=5000, steps_per_epoch=1, num_epochs=None,
                                                         max_steps=5000))
    optimizer = configured["optimizer"]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    batch = random_batch(args.batch, crop, device)
    ctx = StepContext(optimizers=[optimizer], schedulers=[], scaler=None, grad_clip=None)
    print(f"{args.model}: {crop} px, {sum(p.numel() for p in params) / 1e6:.1f} M trainable parameters")

    def step() -> None:
        optimizer.zero_grad()
        model.training_step(batch, ctx).backward()
        torch.nn.utils.clip_grad_norm_(params, 0.1)
        optimizer.step()

    time_steps(step, args.steps, args.batch, device)
    report_test_image_and_memory(model, batch.image, device)


if __name__ == "__main__":
    main()
