"""A synthetic demo data set generated on the fly: textures and simple objects with exact defect masks.

Nothing is downloaded. Every image is a deterministic function of (seed, category, split, index), so runs
are repeatable. Normal images vary (phase, orientation, colour, lighting, position, sensor noise) so the task
is not trivial; defects (scratch, hole, stain, missing piece) are clearly visible and their masks are exactly
the pixels they changed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ad_core.data.base import ImageDataset, Record, check_split, resolve_categories
from ad_core.data.formats import DEMO_CATEGORIES, OBJECTS, TEXTURES  # noqa: F401  (TEXTURES, OBJECTS re-exported)
from ad_core.data.transforms import to_size
from ad_core.types import Sample

DEFECTS = ["scratch", "hole", "stain", "missing"]
BACKGROUND = np.array([0.08, 0.09, 0.10])


def _rng(*key: object) -> np.random.Generator:
    digest = hashlib.sha256("/".join(map(str, key)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int]) -> np.ndarray:
    """Value noise in [0,1]: a coarse random grid upsampled bicubically."""
    grid = (rng.random(cells) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC), dtype=np.float32) / 255.0


def _coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return y / max(h, w), x / max(h, w)


def _tint(rng: np.random.Generator, base: tuple[float, float, float], lum: np.ndarray) -> np.ndarray:
    colour = np.clip(np.array(base) * (1 + rng.normal(0, 0.02, 3)), 0, 1)
    return lum[..., None] * colour[None, None, :]


def _weave(rng, h, w) -> tuple[np.ndarray, np.ndarray]:
    y, x = _coords(h, w)
    theta = rng.normal(0, 0.04)
    period = 1 / 18 * (1 + rng.normal(0, 0.03))
    u = (x * np.cos(theta) + y * np.sin(theta)) / period + rng.random()
    v = (-x * np.sin(theta) + y * np.cos(theta)) / period + rng.random()
    warp, weft = np.abs(np.sin(np.pi * u)), np.abs(np.sin(np.pi * v))
    over = (np.floor(u) + np.floor(v)) % 2 == 0
    lum = 0.45 + 0.4 * np.where(over, warp, weft) + 0.1 * _smooth_noise(rng, h, w, (6, 6))
    return _tint(rng, (0.75, 0.62, 0.45), lum), np.ones((h, w), bool)


def _grain(rng, h, w) -> tuple[np.ndarray, np.ndarray]:
    y, x = _coords(h, w)
    warp = _smooth_noise(rng, h, w, (5, 3))
    rings = np.sin(2 * np.pi * (x * 7 + 1.8 * warp + rng.random()))
    lum = 0.55 + 0.18 * rings + 0.12 * _smooth_noise(rng, h, w, (64, 4)) + 0.05 * y
    return _tint(rng, (0.72, 0.48, 0.28), lum), np.ones((h, w), bool)


def _brushed(rng, h, w) -> tuple[np.ndarray, np.ndarray]:
    y, x = _coords(h, w)
    streaks = _smooth_noise(rng, h, w, (max(h // 2, 2), 3))
    angle = rng.uniform(0, 2 * np.pi)
    light = 0.5 + 0.5 * np.cos(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) * 0.8)
    lum = 0.5 + 0.25 * streaks + 0.15 * light
    return _tint(rng, (0.78, 0.8, 0.84), lum), np.ones((h, w), bool)


def _object_frame(rng, h, w) -> tuple[np.ndarray, np.ndarray, float, float]:
    y, x = _coords(h, w)
    scale = max(h, w)
    cy = h / scale / 2 + rng.normal(0, 0.015)
    cx = w / scale / 2 + rng.normal(0, 0.015)
    return y - cy, x - cx, cy, cx


def _disc(rng, h, w) -> tuple[np.ndarray, np.ndarray]:
    dy, dx, _, _ = _object_frame(rng, h, w)
    r = np.hypot(dy, dx)
    outer, inner = 0.36 * (1 + rng.normal(0, 0.01)), 0.13
    body = (r < outer) & (r > inner)
    light = 0.8 + rng.normal(0, 0.25)  # a fixed lamp, slightly uneven from part to part
    shade = 0.55 + 0.3 * np.cos(np.arctan2(dy, dx) - light) * (r / outer) + 0.1 * (r < 0.3)
    metal = _tint(rng, (0.8, 0.78, 0.72), shade)
    return np.where(body[..., None], metal, BACKGROUND), body


def _plate(rng, h, w) -> tuple[np.ndarray, np.ndarray]:
    dy, dx, _, _ = _object_frame(rng, h, w)
    angle = rng.normal(0, 0.03)
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    body = (np.abs(u) < 0.34) & (np.abs(v) < 0.24)
    for sy in (-1, 1):
        for sx in (-1, 1):
            body &= np.hypot(u - sx * 0.25, v - sy * 0.15) > 0.045
    lum = 0.5 + 0.25 * (u + 0.34) + 0.05 * _smooth_noise(rng, h, w, (8, 8))
    return np.where(body[..., None], _tint(rng, (0.35, 0.55, 0.4), lum), BACKGROUND), body


GENERATORS = {"weave": _weave, "grain": _grain, "brushed_metal": _brushed, "disc": _disc, "plate": _plate}


def _point_on(rng: np.random.Generator, support: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(support)
    pick = rng.integers(len(ys))
    return float(ys[pick]), float(xs[pick])


def _defect_region(rng: np.random.Generator, kind: str, support: np.ndarray, scale: float) -> np.ndarray:
    h, w = support.shape
    s = max(h, w) / 256 * scale
    cy, cx = _point_on(rng, support)
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "scratch":
        length, angle = rng.uniform(60, 110) * s, rng.uniform(0, np.pi)
        points = [(cx + t * length * np.cos(angle) + rng.normal(0, 3 * s), cy + t * length * np.sin(angle)
                   + rng.normal(0, 3 * s)) for t in np.linspace(-0.5, 0.5, 5)]
        draw.line(points, fill=255, width=max(2, int(round(3 * s))))
    elif kind == "hole":
        r = rng.uniform(9, 16) * s
        draw.ellipse([cx - r, cy - r * rng.uniform(0.7, 1), cx + r, cy + r * rng.uniform(0.7, 1)], fill=255)
    elif kind == "stain":
        for _ in range(4):
            ox, oy, r = rng.normal(0, 8 * s), rng.normal(0, 8 * s), rng.uniform(8, 15) * s
            draw.ellipse([cx + ox - r, cy + oy - r, cx + ox + r, cy + oy + r], fill=255)
    else:  # missing: a wedge cut from the edge of the part or a torn rectangle of the texture
        r = rng.uniform(24, 36) * s
        start = rng.uniform(0, 360)
        draw.pieslice([cx - r, cy - r, cx + r, cy + r], start, start + rng.uniform(70, 120), fill=255)
    return (np.asarray(canvas) > 0) & support


def _apply_defect(rng: np.random.Generator, kind: str, image: np.ndarray, support: np.ndarray,
                  scale: float) -> tuple[np.ndarray, np.ndarray]:
    for _ in range(16):  # a region can fall off the part (e.g. into the disc's hole): draw again
        region = _defect_region(rng, kind, support, scale)
        if region.sum() >= 4:
            break
    out = image.copy()
    if kind == "scratch":
        out[region] = np.clip(image[region] * 0.25 + 0.75 * rng.uniform(0.85, 1.0), 0, 1)
    elif kind == "hole":
        out[region] = 0.03 + 0.02 * rng.random((int(region.sum()), 1))
    elif kind == "stain":
        colour = np.array([rng.uniform(0.15, 0.35), rng.uniform(0.25, 0.45), rng.uniform(0.05, 0.2)])
        out[region] = 0.35 * image[region] + 0.65 * colour
    else:
        out[region] = BACKGROUND if not support.all() else np.array([0.02, 0.02, 0.03])
    changed = np.abs(out - image).max(-1) > 1.5 / 255
    out[region & ~changed] = image[region & ~changed]
    return out, region & changed


def render(category: str, split: str, index: int, image_size: int | tuple[int, int] = 256, seed: int = 0,
           defect: str | None = None, defect_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One image (HxWx3 float32 in [0,1]) and its exact mask (HxW bool) for a demo category.

    `defect_scale` enlarges defects (the conformance suite uses large, unmistakable ones).
    """
    h, w = to_size(image_size)
    rng = _rng(seed, category, split, index)
    image, support = GENERATORS[category](rng, h, w)
    image = image + rng.normal(0, 0.015, image.shape)  # sensor noise
    image = np.clip(image, 0, 1)
    mask = np.zeros((h, w), bool)
    if defect is not None:
        image, mask = _apply_defect(rng, defect, image, support, defect_scale)
    return image.astype(np.float32), mask


class DemoDataset(ImageDataset):
    """The synthetic demo set: `n_train` normal training images; normal and anomalous test images per category."""

    def __init__(self, root: str | Path | None = None, category: str | list[str] = "all", split: str = "train",
                 image_size: int | tuple[int, int] = 256, n_train: int = 40,
                 n_test_normal: int = 10, n_test_anomalous: int = 10, seed: int = 0,
                 defect_scale: float = 1.0) -> None:
        check_split(split)
        self.defect_scale = defect_scale
        categories = resolve_categories(category, DEMO_CATEGORIES, "demo")
        self.seed = seed
        records = []
        for cat in categories:
            if split == "train":
                records += [Record(f"demo://{cat}/train/good/{i:03d}", 0, cat) for i in range(n_train)]
                continue
            records += [Record(f"demo://{cat}/test/good/{i:03d}", 0, cat) for i in range(n_test_normal)]
            records += [Record(f"demo://{cat}/test/{DEFECTS[i % len(DEFECTS)]}/{i:03d}", 1, cat,
                               DEFECTS[i % len(DEFECTS)]) for i in range(n_test_anomalous)]
        super().__init__(records, split, image_size, name="demo")

    def check_files(self) -> None:
        """Nothing to check: images are rendered, not read."""

    def __getitem__(self, index: int) -> Sample:
        record = self.records[int(index)]
        number = int(record.path.rsplit("/", 1)[1])
        image, mask = render(record.category, f"{self.split}-{record.defect_type}", number, self.image_size, self.seed,
                             None if record.label == 0 else record.defect_type, self.defect_scale)
        tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous()
        return Sample(image=tensor, label=record.label, mask=torch.from_numpy(mask.astype(np.float32)),
                      path=record.path, category=record.category, defect_type=record.defect_type)


def write_demo_dataset(root: str | Path, categories: str | list[str] = "all", image_size: int = 256,
                       **counts: int) -> Path:
    """Write the demo set in the MVTec layout (PNG images, `<stem>_mask.png` masks) so any tool can read it."""
    root = Path(root)
    for split in ("train", "test"):
        data = DemoDataset(category=categories, split=split, image_size=image_size, **counts)
        for i, record in enumerate(data.records):
            sample = data[i]
            cat, _, folder, stem = record.path[len("demo://"):].split("/")
            target = root / cat / split / folder / f"{stem}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            pixels = (sample.image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
            Image.fromarray(pixels).save(target)
            if record.label == 1:
                mask_path = root / cat / "ground_truth" / folder / f"{stem}_mask.png"
                mask_path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray((sample.mask.numpy() > 0).astype(np.uint8) * 255).save(mask_path)
    return root
