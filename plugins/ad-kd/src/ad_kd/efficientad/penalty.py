"""Where EfficientAD's penalty images come from: a local folder of natural images (Imagenette or ImageNet in
the paper), or, when there is none, strongly augmented training images (a documented substitute)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ad_core.data.images import IMAGE_SUFFIXES, read_image
from ad_kd.efficientad.augment import centre_crop, random_grayscale, strong_augment

SUBSTITUTE_NOTE = (
    "EfficientAD: no imagenet_dir was given, so the student's penalty term used strongly augmented training "
    "images instead of ImageNet images (the paper's choice); accuracy may differ from the paper's. Pass "
    "imagenet_dir=<folder of natural images, e.g. Imagenette> for the paper's penalty."
)


class FolderPenalty:
    """Random images of a folder (searched recursively), resized to twice the training size, grayscale with
    p=0.3 and centre-cropped to the training size, as the reference training does."""

    def __init__(self, folder: str | Path) -> None:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"imagenet_dir {root} is not a folder")
        self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise FileNotFoundError(f"imagenet_dir {root} holds no images ({', '.join(IMAGE_SUFFIXES)})")

    def sample(self, images: torch.Tensor) -> torch.Tensor:
        """As many penalty images as `images` has, at its size and on its device, in [0,1]."""
        h, w = images.shape[-2:]
        picks = torch.randint(len(self.files), (images.shape[0],)).tolist()
        batch = []
        for i in picks:
            img = read_image(self.files[i]).resize((2 * w, 2 * h), Image.BILINEAR)
            batch.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1))
        penalty = centre_crop(torch.stack(batch).to(images.device), h, w)
        return random_grayscale(penalty, 0.3)


class AugmentedTrainingPenalty:
    """The substitute: the step's own training images, strongly augmented (`strong_augment`)."""

    def sample(self, images: torch.Tensor) -> torch.Tensor:
        return strong_augment(images)


def penalty_source(imagenet_dir: str | Path | None) -> FolderPenalty | AugmentedTrainingPenalty:
    return FolderPenalty(imagenet_dir) if imagenet_dir else AugmentedTrainingPenalty()
