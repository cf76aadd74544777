"""Where anomaly textures come from: images in a local folder (DRAEM uses the DTD texture set), or,
when no folder is given, a procedural texture so synthesis works offline with nothing to download.

The procedural fallback: each colour channel is an independent fractal Perlin field (4 octaves,
persistence 0.5, 2^k cells with k drawn in [0, 4) per axis) rescaled to [0, 1]. It is a weaker
source of anomalies than real textures; point `anomaly_source_dir` at a texture folder for the
accuracy the papers report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ad_core.components.synthesis.perlin import fractal_perlin_noise
from ad_core.data.images import IMAGE_SUFFIXES, ImageReadError, read_image


class TextureSourceError(ValueError):
    """The texture folder is missing, empty, or holds no readable image."""


def procedural_texture(size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """A random colour texture [3, H, W] in [0, 1] made of fractal Perlin noise (the documented fallback)."""
    channels = []
    for _ in range(3):
        exponents = torch.randint(0, 4, (2,), generator=generator)
        noise = fractal_perlin_noise(size, (2 ** int(exponents[0]), 2 ** int(exponents[1])), generator)
        low, high = noise.min(), noise.max()
        channels.append((noise - low) / (high - low).clamp_min(1e-12))
    return torch.stack(channels)


def _readable(path: Path) -> bool:
    try:
        read_image(path)
    except ImageReadError:
        return False
    return True


class TextureSource:
    """Draws anomaly textures [3, H, W] in [0, 1]: from the images under `folder`, else procedurally."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = None if folder is None else Path(folder).expanduser()
        self.files: list[Path] = []
        if self.folder is None:
            return
        if not self.folder.is_dir():
            raise TextureSourceError(f"anomaly_source_dir {self.folder} does not exist or is not a folder")
        self.files = sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise TextureSourceError(f"anomaly_source_dir {self.folder} holds no image file "
                                     f"(looked for {', '.join(IMAGE_SUFFIXES)} in it and its subfolders)")
        if not any(_readable(path) for path in self.files):  # stops at the first readable file
            raise TextureSourceError(f"anomaly_source_dir {self.folder} holds no readable image: all "
                                     f"{len(self.files)} image files failed to open (e.g. {self.files[0]})")

    @property
    def procedural(self) -> bool:
        return self.folder is None

    def sample(self, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        """One texture at `size` (height, width): a random file resized bilinearly, or a procedural one.

        A file that cannot be read raises `ImageReadError` naming it.
        """
        if self.procedural:
            return procedural_texture(size, generator)
        path = self.files[int(torch.randint(len(self.files), (1,), generator=generator))]
        image = read_image(path).resize((size[1], size[0]), Image.BILINEAR)
        return torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
