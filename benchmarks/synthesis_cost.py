#!/usr/bin/env python3
"""What anomaly synthesis costs per image: milliseconds of the core's Perlin mask and procedural texture and of
one DRAEM anomaly / GLASS LAS mask and augmented texture, at a given size (256 px by default).

Median wall ms and mean CPU ms over `--repeats` draws after one warm-up draw, on `--threads` torch threads (one by
default: the ops are small, and on a shared CPU extra threads mostly wait for each other). Example:

    python benchmarks/synthesis_cost.py --size 256 --repeats 50
    python benchmarks/synthesis_cost.py --texture-dir /data/dtd/images
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from ad_core.components.synthesis import TextureSource, perlin_mask, procedural_texture
from ad_recon.draem_synthesis import DraemSynthesis
from ad_synth.glass import las_mask
from ad_synth.glass_textures import augment_las_texture


def timed(draw: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median wall ms, mean CPU ms) of `draw` over `repeats` calls after one warm-up call."""
    draw()
    walls, cpu_start = [], time.process_time()
    for _ in range(repeats):
        start = time.perf_counter()
        draw()
        walls.append(1000 * (time.perf_counter() - start))
    return statistics.median(walls), 1000 * (time.process_time() - cpu_start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--texture-dir", default=None, help="a texture folder for the DRAEM line (default: none)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size, generator = (args.size, args.size), torch.Generator().manual_seed(0)
    image = torch.rand(3, *size, generator=generator)
    draem = DraemSynthesis(TextureSource(args.texture_dir), anomaly_probability=1.0)
    texture_kind = "texture folder" if args.texture_dir else "procedural texture"
    cases: dict[str, Callable[[], object]] = {
        "perlin_mask (core)": lambda: perlin_mask(size, generator),
        "procedural_texture (core)": lambda: procedural_texture(size, generator),
        f"DRAEM anomaly ({texture_kind})": lambda: draem.one(image, generator),
        f"GLASS LAS mask + texture ({texture_kind})": lambda: (
            las_mask(size, generator), augment_las_texture(draem.source.sample(size, generator), generator)),
    }
    print(f"{args.size} px, {args.threads} thread(s), {args.repeats} draws each")
    print(f"{'what':<46} {'wall ms (median)':>16} {'CPU ms (mean)':>14}")
    for name, draw in cases.items():
        wall, cpu = timed(draw, args.repeats)
        print(f"{name:<46} {wall:>16.2f} {cpu:>14.2f}")


if __name__ == "__main__":
    main()
