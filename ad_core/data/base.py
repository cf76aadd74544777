"""A dataset as a list of records (path, label, category, mask) that loads and transforms on access."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ad_core.data.images import IMAGE_SUFFIXES, image_size_of, read_image, read_mask
from ad_core.data.transforms import ImageTransform, MaskTransform, to_size
from ad_core.types import Sample

SPLITS = ("train", "test")


class DatasetLayoutError(ValueError):
    """The files on disk do not have the layout a dataset expects."""


@dataclass
class Record:
    path: str
    label: int
    category: str
    defect_type: str = "good"
    mask_path: str | None = None


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder, sorted, any common extension in any case."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def resolve_categories(requested: str | list[str], available: list[str], dataset: str) -> list[str]:
    """'all' -> every available category; unknown names are an error listing the available ones."""
    if isinstance(requested, str):
        requested = list(available) if requested == "all" else [requested]
    unknown = [c for c in requested if c not in available]
    if unknown:
        raise DatasetLayoutError(
            f"{dataset}: unknown categor{'y' if len(unknown) == 1 else 'ies'} {unknown}; "
            f"available: {', '.join(available) or '(none found)'}"
        )
    if not requested:
        raise DatasetLayoutError(f"{dataset}: no categories found")
    return list(requested)


def subfolders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


def check_mask_size(record: Record, mask_size: tuple[int, int], image_size: tuple[int, int]) -> None:
    """A mask must have its image's size (width, height): stretching it would misplace every defect pixel."""
    if tuple(mask_size) != tuple(image_size):
        raise DatasetLayoutError(
            f"mask {record.mask_path} is {mask_size[0]}x{mask_size[1]} pixels but its image {record.path} is "
            f"{image_size[0]}x{image_size[1]}: masks must have their image's size"
        )


def explain_missing(root: Path, requested: str | list[str], available: list[str], required: str,
                    layout: str) -> None:
    """A requested category folder that exists but lacks what marks a category: say what is missing where."""
    names = [requested] if isinstance(requested, str) else list(requested)
    for name in names:
        if name != "all" and name not in available and (root / name).is_dir():
            raise DatasetLayoutError(f"{root / name} has no {required} folder ({root / name / required} is "
                                     f"missing); expected {layout}")


class ImageDataset(Dataset):
    """Map-style dataset of `Sample`s from records; images are read and resized lazily."""

    def __init__(self, records: list[Record], split: str, image_size: int | tuple[int, int] = 256,
                 name: str = "custom") -> None:
        self.records = records
        self.split = check_split(split)
        self.name = name
        self.image_size = to_size(image_size)
        self.categories = sorted({r.category for r in records})
        self.image_transform = ImageTransform(self.image_size)
        self.mask_transform = MaskTransform(self.image_size)

    def __len__(self) -> int:
        return len(self.records)

    def check_files(self) -> None:
        """Read every image's and mask's header: an unreadable file or a mask of another size than its image is
        an error naming the file now, before any training, rather than after it."""
        for record in self.records:
            size = image_size_of(record.path)
            if record.mask_path is not None:
                check_mask_size(record, image_size_of(record.mask_path), size)

    def __getitem__(self, index: int) -> Sample:
        record = self.records[int(index)]
        picture = read_image(record.path)
        image = self.image_transform(picture)
        if record.mask_path is not None:
            pixels = read_mask(record.mask_path)
            check_mask_size(record, pixels.shape[::-1], picture.size)
            if record.label == 1 and not pixels.any():
                warnings.warn(f"{record.mask_path}, the mask of defective image {record.path}, is all zero: its "
                              "pixel metrics count no defect there", stacklevel=2)
            mask = self.mask_transform(pixels)
        elif record.label == 0:
            mask = torch.zeros(self.image_size)
        else:
            mask = None
        return Sample(image=image, label=record.label, mask=mask, path=record.path, category=record.category,
                      defect_type=record.defect_type)

    def __repr__(self) -> str:
        normal = sum(r.label == 0 for r in self.records)
        return (f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, categories={self.categories}, "
                f"images={len(self)}, normal={normal}, anomalous={len(self) - normal})")
