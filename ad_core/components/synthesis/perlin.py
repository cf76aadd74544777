"""Seeded 2-D Perlin noise and the binary anomaly masks thresholded from it (DRAEM, Zavrtanik et al. 2021).

The noise is gradient noise on a lattice of `res` cells per axis: each lattice corner holds a random unit
gradient, each pixel blends the four corner gradients' dot products with the quintic fade
6t^5 - 15t^4 + 10t^3. It is computed for any image size (the lattice need not divide it), is zero at
every lattice corner and lies in [-1, 1] (scaled by sqrt 2, as in the authors' code). Computed in float32;
the gradient angles are drawn in float64, so a generator yields the same gradients as the earlier float64
implementation and the noise equals it to float32 rounding (about 1e-7).
"""

from __future__ import annotations

import math

import torch


def fade(t: torch.Tensor) -> torch.Tensor:
    """Perlin's quintic smoothstep: 0 and 1 at the ends with zero first and second derivatives."""
    return t * t * t * (t * (t * 6 - 15) + 10)


def _lattice_coordinates(size: int, cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel's cell index and its offset in [0, 1) inside the cell, for `cells` cells over `size` pixels.

    Integer arithmetic (pixel k lies at k * cells / size lattice units), so the cell index is exact.
    """
    scaled = torch.arange(size) * cells
    index = torch.div(scaled, size, rounding_mode="floor")
    return index, (scaled - index * size).float() / size


def perlin_from_gradients(shape: tuple[int, int], gradients: torch.Tensor) -> torch.Tensor:
    """Perlin noise [H, W] for lattice corner gradients [res_y + 1, res_x + 1, 2] (unit vectors, (y, x)).

    Float32 throughout; each corner's gradient component is gathered along rows then columns
    (`index_select`, the general form of the authors' `repeat_interleave`, which needs the lattice to divide
    the image), and the four dot products are blended by broadcasting the per-row and per-column weights.
    """
    height, width = shape
    res_y, res_x = gradients.shape[0] - 1, gradients.shape[1] - 1
    iy, fy = _lattice_coordinates(height, res_y)
    ix, fx = _lattice_coordinates(width, res_x)
    fy, fx = fy[:, None], fx[None, :]
    components = gradients.float().permute(2, 0, 1)  # [2, res_y + 1, res_x + 1]: y and x components
    rows = (components.index_select(1, iy), components.index_select(1, iy + 1))  # corner rows, per pixel row

    def corner(dy: int, dx: int) -> torch.Tensor:
        gy, gx = rows[dy].index_select(2, ix + dx).unbind(0)
        return torch.addcmul(gy * (fy - dy), gx, fx - dx)

    ty, tx = fade(fy), fade(fx)
    top = torch.lerp(corner(0, 0), corner(0, 1), tx)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), tx)
    return math.sqrt(2.0) * torch.lerp(top, bottom, ty)


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """Perlin noise [H, W] with `res` = (cells along y, cells along x), gradients drawn from `generator`."""
    if res[0] < 1 or res[1] < 1:
        raise ValueError(f"Perlin resolution must be at least 1 cell per axis, got {res}")
    angles = 2 * math.pi * torch.rand(res[0] + 1, res[1] + 1, generator=generator, dtype=torch.float64)
    return perlin_from_gradients(shape, torch.stack((torch.cos(angles), torch.sin(angles)), dim=-1))


def fractal_perlin_noise(shape: tuple[int, int], res: tuple[int, int], generator: torch.Generator,
                         octaves: int = 4, persistence: float = 0.5) -> torch.Tensor:
    """Sum of `octaves` Perlin layers, each with twice the frequency and `persistence` times the amplitude."""
    noise = torch.zeros(shape)
    for octave in range(octaves):
        scale = 2**octave
        noise += persistence**octave * perlin_noise(shape, (res[0] * scale, res[1] * scale), generator)
    return noise


def perlin_mask(shape: tuple[int, int], generator: torch.Generator, min_scale: int = 0, max_scale: int = 6,
                threshold: float = 0.5) -> torch.Tensor:
    """A binary anomaly mask [H, W] in {0, 1}: Perlin noise with 2^k cells per axis, k drawn per axis from
    [min_scale, max_scale) as in DRAEM, kept where it exceeds `threshold`. May be empty (as in DRAEM)."""
    if not 0 <= min_scale < max_scale:
        raise ValueError(f"need 0 <= min_scale < max_scale, got {min_scale}, {max_scale}")
    exponents = torch.randint(min_scale, max_scale, (2,), generator=generator)
    res = (2 ** int(exponents[0]), 2 ** int(exponents[1]))
    return (perlin_noise(shape, res, generator) > threshold).float()
