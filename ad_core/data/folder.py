"""Your own data: `root/<category>/{normal, abnormal, mask}` with an editable `metadata.csv`, or the MVTec layout.

On first use the core writes `metadata.csv` (the seed's automatic CSV generation): a seeded split that puts
`test_fraction` of the normal images and every abnormal image in the test split. Edit it to change the split;
it is read back as it is. It is written into the category's folder, or, when `metadata_dir` is set
(`set_globals(metadata_dir=...)`, `ADCORE_METADATA_DIR`), to `<metadata_dir>/<dataset>/<category>/metadata.csv`
with absolute paths, leaving the data folder untouched.

Abnormal images directly in `abnormal/` get the defect type "abnormal"; images sorted into `abnormal/<kind>/`
keep `<kind>` (masks in `mask/` or `mask/<kind>/`, named `<stem>_mask.<ext>` or `<stem>.<ext>`).
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

from ad_core.data.base import (
    DatasetLayoutError,
    ImageDataset,
    explain_missing,
    Record,
    check_split,
    list_images,
    resolve_categories,
    subfolders,
)
from ad_core.data.mvtec import find_mask, mvtec_records
from ad_core.io import write_text
from ad_core.settings import settings

METADATA = "metadata.csv"
FIELDS = ["path", "label", "split", "mask_path", "defect_type"]
SIMPLE_LAYOUT = "<root>/<category>/normal/*, optional <root>/<category>/abnormal/* and <root>/<category>/mask/*"


def _abnormal_images(category_dir: Path) -> list[tuple[Path, Path | None, str]]:
    """(image, mask or None, defect kind) of `abnormal/*` ("abnormal") and `abnormal/<kind>/*` (`<kind>`)."""
    found = []
    for kind in [None, *subfolders(category_dir / "abnormal")]:
        folder = category_dir / "abnormal" / kind if kind else category_dir / "abnormal"
        for path in list_images(folder):
            mask = (find_mask(category_dir / "mask" / kind, path.stem) if kind else None) \
                or find_mask(category_dir / "mask", path.stem)
            found.append((path, mask, kind or "abnormal"))
    return found


def write_metadata_csv(category_dir: str | Path, test_fraction: float = 0.2, seed: int = 0,
                       overwrite: bool = False, target: str | Path | None = None) -> Path:
    """Write `metadata.csv` for a `normal/abnormal/mask` folder; an existing file is kept unless `overwrite`.

    `target` puts it elsewhere than `category_dir/metadata.csv`; its paths are then absolute.
    """
    category_dir = Path(category_dir)
    target = Path(target) if target is not None else category_dir / METADATA
    if target.exists() and not overwrite:
        return target
    normal = list_images(category_dir / "normal")
    if not normal:
        raise DatasetLayoutError(f"no images in {category_dir / 'normal'}; expected {SIMPLE_LAYOUT}")
    shuffled = list(normal)
    random.Random(seed).shuffle(shuffled)
    n_test = int(round(len(normal) * test_fraction)) if len(normal) > 1 else 0
    test_normal = set(shuffled[:n_test])
    inside = target.parent.resolve() == category_dir.resolve()

    def name(path: Path) -> str:
        return path.relative_to(category_dir).as_posix() if inside else str(path.resolve())

    rows = [[name(p), 0, "test" if p in test_normal else "train", "", "good"] for p in normal]
    for path, mask, kind in _abnormal_images(category_dir):
        rows.append([name(path), 1, "test", name(mask) if mask else "", kind])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(FIELDS)
    writer.writerows(rows)
    return write_text(target, buffer.getvalue())


def read_metadata_csv(path: str | Path, category: str | None = None) -> list[tuple[str, Record]]:
    """(split, record) pairs from a metadata CSV; paths are relative to the CSV's folder."""
    path = Path(path)
    category = category or path.parent.name
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"path", "label", "split"} <= set(reader.fieldnames):
            raise DatasetLayoutError(f"{path} needs at least the columns path, label, split (has {reader.fieldnames})")
        out = []
        for line, row in enumerate(reader, start=2):
            if row["split"] not in ("train", "test") or row["label"] not in ("0", "1"):
                raise DatasetLayoutError(f"{path}, line {line}: split must be train/test and label 0/1, got {row}")
            image = path.parent / row["path"]
            if not image.is_file():
                raise DatasetLayoutError(f"{path}, line {line}: {image} does not exist")
            mask = row.get("mask_path") or None
            out.append((row["split"], Record(str(image), int(row["label"]), category,
                                             row.get("defect_type") or ("good" if row["label"] == "0" else "abnormal"),
                                             str(path.parent / mask) if mask else None)))
    return out


def folder_categories(root: Path) -> list[str]:
    return [c for c in subfolders(root)
            if (root / c / "normal").is_dir() or (root / c / METADATA).is_file() or (root / c / "train").is_dir()]


class FolderDataset(ImageDataset):
    """A custom dataset, one folder per category, in the simple or the MVTec layout."""

    def __init__(self, root: str | Path, category: str | list[str] = "all", split: str = "train",
                 image_size: int | tuple[int, int] = 256, test_fraction: float = 0.2,
                 seed: int = 0, metadata_dir: str | Path | None = None) -> None:
        root = Path(root).expanduser()
        metadata_dir = metadata_dir if metadata_dir is not None else settings.metadata_dir
        if not root.is_dir():
            raise DatasetLayoutError(f"dataset folder {root} does not exist; expected {SIMPLE_LAYOUT}")
        check_split(split)
        available = folder_categories(root)
        explain_missing(root, category, available, "normal", SIMPLE_LAYOUT)
        categories = resolve_categories(category, available, f"folder dataset at {root}")
        records: list[Record] = []
        for cat in categories:
            base = root / cat
            if (base / "train").is_dir() and not (base / "normal").is_dir():
                records += mvtec_records(root, cat, split, require_masks=False)
                continue
            target = None if metadata_dir is None else Path(metadata_dir).expanduser() / root.name / cat / METADATA
            csv_path = write_metadata_csv(base, test_fraction, seed, target=target)
            records += [r for s, r in read_metadata_csv(csv_path, cat) if s == split]
        if not records:
            raise DatasetLayoutError(f"no {split} images for {categories} under {root}")
        super().__init__(records, split, image_size, name=root.name)
