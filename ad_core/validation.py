"""The validation source: labelled images that are not the test split, for every decision a run makes.

Early stopping, the saved image threshold and score range, the pixel threshold and map range, and an
ensemble's fusion rule are all chosen on it, so the test figures stay an honest estimate. Three sources:

- `holdout` (the default): a seeded share of the normal training images (`validation_fraction`, 10 %,
  at least `MIN_HOLDOUT` images, at most half of a tiny training set) is held out of training; each held-out image is used once as it is
  (normal) and once with a synthetic defect drawn on a copy (anomalous, with its exact mask).
- a folder the user names (`validation_dir`): `<dir>/normal/*` held-out normal images, optionally
  `<dir>/abnormal/*` labelled defects with masks in `<dir>/mask/` (MVTec-style `<stem>_mask.png`).
  Without labelled defects, synthetic ones are drawn on copies of the normal images.
- `test_split`, only when asked for: a seeded, label-stratified share of the test set is taken out;
  the test figures are then computed on the rest, and the results say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ad_core.data.base import DatasetLayoutError, ImageDataset, Record, list_images
from ad_core.data.mvtec import find_mask
from ad_core.data.synthetic import DEFECTS, _apply_defect
from ad_core.types import Sample

SOURCES = ("holdout", "test_split")
DEFAULT_FRACTION = 0.1
MIN_HOLDOUT = 4  # held-out normal images at least (at most half of a tiny training set)
SYNTHETIC = "synthetic"


def draw_validation_defects(images: torch.Tensor, generator: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Copies of [B,3,H,W] images in [0,1], each with one synthetic defect, and their exact masks [B,H,W].

    The defects are the demo set's (scratch, hole, stain, missing piece) drawn anywhere on the image.
    """
    out, masks = [], []
    for image in images:
        pixels = image.permute(1, 2, 0).double().numpy()
        kind = DEFECTS[int(generator.integers(len(DEFECTS)))]
        support = np.ones(pixels.shape[:2], dtype=bool)
        drawn, mask = _apply_defect(generator, kind, pixels, support, 1.0)
        out.append(torch.from_numpy(drawn).float().permute(2, 0, 1).contiguous())
        masks.append(torch.from_numpy(mask.astype(np.float32)))
    return torch.stack(out), torch.stack(masks)


class WithSyntheticDefects(Dataset):
    """Each normal image twice: as it is (label 0), then with a seeded synthetic defect (label 1, mask)."""

    def __init__(self, normal: Dataset, seed: int) -> None:
        self.normal = normal
        self.seed = int(seed)

    def __len__(self) -> int:
        return 2 * len(self.normal)

    def __getitem__(self, index: int) -> Sample:
        sample = self.normal[int(index) // 2]
        h, w = sample.image.shape[-2:]
        if int(index) % 2 == 0:
            return Sample(sample.image, 0, torch.zeros(h, w), sample.path, sample.category, "good")
        generator = np.random.default_rng([self.seed, int(index) // 2])
        image, mask = draw_validation_defects(sample.image[None], generator)
        return Sample(image[0], 1, mask[0], f"{sample.path}#{SYNTHETIC}", sample.category, SYNTHETIC)


@dataclass
class ValidationSplit:
    """What a run fits on, validates on and tests on, and a description for results.json."""

    train: Dataset
    validation: Dataset
    test: Dataset
    info: dict[str, Any]


def _labels(dataset: Dataset) -> list[int]:
    """Image labels, from the records when the dataset has them (no image is read then)."""
    if isinstance(dataset, ImageDataset):
        return [int(r.label) for r in dataset.records]
    return [int(dataset[i].label) for i in range(len(dataset))]


def _holdout(train_set: Dataset, test_set: Dataset, fraction: float, seed: int) -> ValidationSplit:
    n = len(train_set)
    held = max(min(MIN_HOLDOUT, n // 2), int(round(fraction * n)))
    if held < 1 or n - held < 1:
        raise ValueError(f"the training split has {n} image(s): too few to hold out a validation share and still "
                         f"train; add normal images or pass validation_dir= with held-out images")
    order = np.random.default_rng(seed).permutation(n)
    held_idx, train_idx = sorted(order[:held].tolist()), sorted(order[held:].tolist())
    validation = WithSyntheticDefects(Subset(train_set, held_idx), seed)
    info = {"source": "holdout", "fraction": fraction, "seed": seed, "normal_images": held,
            "anomalous_images": held, "defects": "synthetic, drawn on copies of the held-out images",
            "train_images": len(train_idx), "held_out": held_idx}
    return ValidationSplit(Subset(train_set, train_idx), validation, test_set, info)


def folder_validation_set(folder: str | Path, image_size: Any, seed: int) -> tuple[Dataset, dict[str, Any]]:
    """A user's held-out images: `normal/` (required), optional `abnormal/` with masks in `mask/`."""
    folder = Path(folder).expanduser()
    normal = list_images(folder / "normal") if (folder / "normal").is_dir() else []
    if not normal:
        raise DatasetLayoutError(f"validation_dir {folder} has no images in {folder / 'normal'}: expected "
                                 f"<dir>/normal/*, optionally <dir>/abnormal/* with masks in <dir>/mask/")
    abnormal = list_images(folder / "abnormal") if (folder / "abnormal").is_dir() else []
    category = folder.name
    records = [Record(str(p), 0, category, "good") for p in normal]
    info: dict[str, Any] = {"source": str(folder.resolve()), "normal_images": len(normal)}
    if not abnormal:
        dataset: Dataset = WithSyntheticDefects(ImageDataset(records, "test", image_size, name="validation"),
                                                seed)
        info.update({"anomalous_images": len(normal), "defects": "synthetic, drawn on copies of the normal images"})
        return dataset, info
    for path in abnormal:
        mask = find_mask(folder / "mask", path.stem)
        records.append(Record(str(path), 1, category, "abnormal", str(mask) if mask else None))
    info.update({"anomalous_images": len(abnormal), "defects": "labelled"})
    return ImageDataset(records, "test", image_size, name="validation"), info


def _test_split(train_set: Dataset, test_set: Dataset, fraction: float, seed: int) -> ValidationSplit:
    labels = np.asarray(_labels(test_set))
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for label in (0, 1):
        members = np.flatnonzero(labels == label)
        take = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
        if take < 1:
            raise ValueError(f"the test split has {len(members)} image(s) of label {label}: too few to split off "
                             "a validation share; use validation='holdout' or validation_dir=")
        held += rng.choice(members, size=take, replace=False).tolist()
    held = sorted(held)
    rest = sorted(set(range(len(labels))) - set(held))
    info = {"source": "test_split", "fraction": fraction, "seed": seed,
            "normal_images": int(np.sum(labels[held] == 0)), "anomalous_images": int(np.sum(labels[held] == 1)),
            "defects": "labelled, taken from the test split", "held_out": held,
            "test_note": f"test figures are on the {len(rest)} test images not used for validation"}
    return ValidationSplit(train_set, Subset(test_set, held), Subset(test_set, rest), info)


def validation_split(train_set: Dataset, test_set: Dataset, source: str = "holdout",
                     fraction: float = DEFAULT_FRACTION, seed: int = 0, folder: str | Path | None = None,
                     image_size: Any = 256) -> ValidationSplit:
    """Split off the validation source; `folder` (a user's held-out images) wins over `source`."""
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"validation_fraction must lie in (0, 1), got {fraction}")
    if folder is not None:
        validation, info = folder_validation_set(folder, image_size, seed)
        return ValidationSplit(train_set, validation, test_set, info)
    if source == "holdout":
        return _holdout(train_set, test_set, float(fraction), int(seed))
    if source == "test_split":
        return _test_split(train_set, test_set, float(fraction), int(seed))
    raise ValueError(f"unknown validation source {source!r}; valid ones: {', '.join(SOURCES)} "
                     "(or validation_dir=<folder of held-out images>)")


def describe_validation(info: dict[str, Any]) -> str:
    """One line for `selected_on`: what the validation set is and how large."""
    source = info["source"]
    what = {"holdout": f"held-out training images ({info.get('fraction', 0):.0%}, seed {info.get('seed')})",
            "test_split": f"a seeded share of the test split ({info.get('fraction', 0):.0%}, seed {info.get('seed')})",
            "normal_dir": "the given normal images"}
    return (f"validation: {what.get(source, source)}, {info['normal_images']} normal + "
            f"{info['anomalous_images']} anomalous ({info['defects']})")


def members_validation_split(infos: list[dict[str, Any] | None], train_set: Dataset, test_set: Dataset,
                             normal_images: Dataset | None = None, seed: int = 0) -> ValidationSplit:
    """The validation source of an ensemble: the one its members share, so its fusion rule and thresholds
    are chosen on images no member trained on and the test split never sees. `train` is then what the
    members fitted on (the held-out share removed).

    `normal_images` (normal images the members never saw) win; otherwise the members' recorded holdout or
    test-split share must be the same for all of them.
    """
    if normal_images is not None:
        info = {"source": "normal_dir", "normal_images": len(normal_images), "anomalous_images": len(normal_images),
                "defects": "synthetic, drawn on copies of the normal images"}
        return ValidationSplit(train_set, WithSyntheticDefects(normal_images, seed), test_set, info)
    first = infos[0]
    same = first is not None and all(i is not None and (i.get("source"), i.get("seed"), i.get("held_out")) ==
                                     (first["source"], first.get("seed"), first.get("held_out")) for i in infos)
    if not same or first["source"] not in SOURCES:
        raise ValueError("the members were not validated on one shared held-out set (different seeds or fractions, "
                         "their own folders, or checkpoints older than validation records): pass normal_dir= with "
                         "normal images none of them trained on")
    held = list(first["held_out"])
    info = {key: first[key] for key in ("source", "fraction", "seed", "normal_images", "anomalous_images", "defects")
            if key in first}
    if first["source"] == "holdout":
        trained_on = sorted(set(range(len(train_set))) - set(held))  # what the members fitted on
        return ValidationSplit(Subset(train_set, trained_on), WithSyntheticDefects(Subset(train_set, held),
                                                                                   first["seed"]), test_set,
                               {**info, "held_out": held})
    rest = sorted(set(range(len(test_set))) - set(held))
    return ValidationSplit(train_set, Subset(test_set, held), Subset(test_set, rest),
                           {**info, "held_out": held, "test_note": f"test figures are on the {len(rest)} test images "
                                                                   "not used for validation"})
