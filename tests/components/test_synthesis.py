"""Anomaly synthesis: Perlin noise and masks, texture sources, blending, feature noise."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from ad_core.components.synthesis import (
    TextureSource,
    TextureSourceError,
    autocontrast,
    blend_anomaly,
    equalize,
    feature_noise,
    grayscale,
    hsv_to_rgb,
    perlin_from_gradients,
    perlin_mask,
    perlin_noise,
    restrict_to_foreground,
    rgb_to_hsv,
    rotate,
    shift_hue,
)
from ad_core.components.synthesis.perlin import fade


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_perlin_value_equals_the_hand_computed_blend() -> None:
    g = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.6, 0.8], [-1.0, 0.0]]])  # corners (y, x) of one cell
    noise = perlin_from_gradients((4, 4), g)
    fy, fx = 0.25, 0.5  # pixel (1, 2) of a 4x4 image over one cell
    dots = {(0, 0): 1.0 * fy + 0.0 * fx, (0, 1): 0.0 * fy + 1.0 * (fx - 1),
            (1, 0): 0.6 * (fy - 1) + 0.8 * fx, (1, 1): -1.0 * (fy - 1) + 0.0 * (fx - 1)}
    ty, tx = float(fade(torch.tensor(fy))), float(fade(torch.tensor(fx)))
    top = dots[0, 0] + tx * (dots[0, 1] - dots[0, 0])
    bottom = dots[1, 0] + tx * (dots[1, 1] - dots[1, 0])
    assert math.isclose(float(noise[1, 2]), math.sqrt(2) * (top + ty * (bottom - top)), rel_tol=1e-6)


def reference_perlin(shape: tuple[int, int], gradients: torch.Tensor) -> list[list[float]]:
    """Perlin noise pixel by pixel in Python floats: pixel (y, x) sits at (y * res_y / H, x * res_x / W)."""
    (height, width), res_y, res_x = shape, gradients.shape[0] - 1, gradients.shape[1] - 1
    smooth = lambda t: t * t * t * (t * (t * 6 - 15) + 10)  # noqa: E731
    out = []
    for y in range(height):
        row = []
        for x in range(width):
            cy, cx = y * res_y // height, x * res_x // width
            fy, fx = y * res_y / height - cy, x * res_x / width - cx
            dot = {(dy, dx): float(gradients[cy + dy, cx + dx, 0]) * (fy - dy)
                   + float(gradients[cy + dy, cx + dx, 1]) * (fx - dx) for dy in (0, 1) for dx in (0, 1)}
            top = dot[0, 0] + smooth(fx) * (dot[0, 1] - dot[0, 0])
            bottom = dot[1, 0] + smooth(fx) * (dot[1, 1] - dot[1, 0])
            row.append(math.sqrt(2) * (top + smooth(fy) * (bottom - top)))
        out.append(row)
    return out


def test_perlin_matches_the_pixelwise_reference_when_the_lattice_does_not_divide_the_image() -> None:
    angles = 2 * math.pi * torch.rand(4, 6, generator=generator(7))
    gradients = torch.stack((torch.cos(angles), torch.sin(angles)), dim=-1)
    noise = perlin_from_gradients((11, 13), gradients)  # 3 x 5 cells over 11 x 13 pixels
    assert noise.dtype == torch.float32
    torch.testing.assert_close(noise, torch.tensor(reference_perlin((11, 13), gradients)), atol=1e-6, rtol=0)


def test_perlin_noise_is_zero_on_the_lattice_bounded_and_seeded() -> None:
    noise = perlin_noise((32, 48), (4, 6), generator(1))
    assert noise.shape == (32, 48)
    assert torch.allclose(noise[::8, ::8], torch.zeros(4, 6), atol=1e-6)  # lattice corners
    assert float(noise.abs().max()) <= 1.0 and float(noise.std()) > 0.05
    assert torch.equal(noise, perlin_noise((32, 48), (4, 6), generator(1)))
    assert perlin_noise((30, 45), (4, 7), generator(2)).shape == (30, 45)  # the lattice need not divide the size


def test_perlin_mask_is_binary_and_reproducible() -> None:
    masks = [perlin_mask((64, 64), generator(s)) for s in range(6)]
    assert all(set(torch.unique(m).tolist()) <= {0.0, 1.0} for m in masks)
    assert any(0 < float(m.mean()) < 0.5 for m in masks)
    assert torch.equal(masks[3], perlin_mask((64, 64), generator(3)))
    with pytest.raises(ValueError, match="min_scale < max_scale"):
        perlin_mask((8, 8), generator(), min_scale=3, max_scale=3)


def test_blend_follows_the_opacity_formula_inside_the_mask_only() -> None:
    image, texture = torch.full((1, 3, 2, 2), 0.2), torch.full((1, 3, 2, 2), 1.0)
    mask = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    out = blend_anomaly(image, texture, mask, beta=0.25)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor(0.75 * 0.2 + 0.25 * 1.0))
    assert torch.equal(out[0, :, 0, 1], image[0, :, 0, 1])
    foreground = torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])
    assert restrict_to_foreground(mask, foreground).tolist() == [[[0.0, 0.0], [0.0, 1.0]]]
    assert restrict_to_foreground(mask, None) is mask


def test_feature_noise_has_the_given_std_inside_the_mask() -> None:
    features = torch.zeros(4, 8, 16, 16)
    mask = torch.zeros(4, 16, 16)
    mask[:, :8] = 1
    noisy = feature_noise(features, 0.5, generator(0), mask)
    assert torch.equal(noisy[:, :, 8:], features[:, :, 8:])
    assert abs(float(noisy[:, :, :8].std()) - 0.5) < 0.02
    assert torch.equal(noisy, feature_noise(features, 0.5, generator(0), mask))


def test_texture_folder_is_sampled_and_bad_folders_are_named(tmp_path) -> None:
    folder = tmp_path / "dtd"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (10, 6), (255, 0, 0)).save(folder / "sub" / "red.png")
    source = TextureSource(folder)
    texture = source.sample((8, 12), generator())
    assert texture.shape == (3, 8, 12) and torch.allclose(texture[0], torch.ones(8, 12))
    assert float(texture[1:].abs().max()) == 0.0
    with pytest.raises(TextureSourceError, match="does not exist"):
        TextureSource(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextureSourceError, match="holds no image file"):
        TextureSource(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"not a png")
    with pytest.raises(TextureSourceError, match="no readable image"):
        TextureSource(tmp_path / "broken")


def test_procedural_fallback_gives_seeded_textures_in_unit_range() -> None:
    source = TextureSource(None)
    assert source.procedural
    texture = source.sample((32, 32), generator(4))
    assert texture.shape == (3, 32, 32) and float(texture.min()) == 0.0 and float(texture.max()) == 1.0
    assert torch.equal(texture, source.sample((32, 32), generator(4)))


def test_image_operations_of_texture_augmentation() -> None:
    image = torch.rand(3, 16, 16, generator=generator(2))
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(image)), image, atol=1e-5, rtol=0)
    red = torch.zeros(3, 1, 1)
    red[0] = 1.0
    torch.testing.assert_close(shift_hue(red, 120.0)[:, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(rotate(image, 0.0), image, atol=1e-5, rtol=0)
    quarter = rotate(image, 90.0)  # a quarter turn of a square image moves pixels without loss (up to the corners)
    assert torch.allclose(quarter, torch.rot90(image, 1, (1, 2)), atol=1e-4) or \
        torch.allclose(quarter, torch.rot90(image, -1, (1, 2)), atol=1e-4)
    stretched = autocontrast(0.25 + 0.5 * image)
    assert torch.allclose(stretched.amin(dim=(1, 2)), torch.zeros(3)) and torch.allclose(stretched.amax(dim=(1, 2)),
                                                                                          torch.ones(3))
    flat = equalize(image)
    assert flat.shape == image.shape and float(flat.max()) == 1.0
    torch.testing.assert_close(grayscale(image)[0], 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])
