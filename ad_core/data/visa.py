"""VisA (Zou et al., 2022) with its official one-class split file `split_csv/1cls.csv`."""

from __future__ import annotations

import csv
from pathlib import Path

from ad_core.data.base import DatasetLayoutError, ImageDataset, Record, check_split, resolve_categories
from ad_core.data.formats import VISA_CATEGORIES  # noqa: F401  (re-exported)

SPLIT_FILE = Path("split_csv") / "1cls.csv"
COLUMNS = {"object", "split", "label", "image", "mask"}


def read_split(root: Path) -> list[dict[str, str]]:
    path = root / SPLIT_FILE
    if not path.is_file():
        raise DatasetLayoutError(
            f"VisA split file {path} not found: VisA needs split_csv/1cls.csv next to the category folders "
            "(it ships with the data set)"
        )
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not COLUMNS <= set(rows[0]):
        raise DatasetLayoutError(f"{path} must have the columns {sorted(COLUMNS)}")
    return rows


class VisA(ImageDataset):
    """`root/<category>/Data/{Images,Masks}/...`, split and labels from `root/split_csv/1cls.csv`."""

    def __init__(self, root: str | Path, category: str | list[str] = "all", split: str = "train",
                 image_size: int | tuple[int, int] = 256, require_masks: bool = True) -> None:
        root = Path(root).expanduser()
        check_split(split)
        rows = read_split(root)
        categories = resolve_categories(category, sorted({r["object"] for r in rows}), f"VisA at {root}")
        records, missing = [], []
        for row in rows:
            if row["object"] not in categories or row["split"] != split:
                continue
            label = 0 if row["label"] == "normal" else 1
            image = root / row["image"]
            if not image.is_file():
                raise DatasetLayoutError(f"{root / SPLIT_FILE} lists {row['image']}, which does not exist")
            mask = root / row["mask"] if label and row["mask"] else None
            if label and (mask is None or not mask.is_file()):
                missing.append(row["mask"] or row["image"])
                mask = None
            records.append(Record(str(image), label, row["object"], "anomaly" if label else "good",
                                  str(mask) if mask else None))
        if missing and require_masks:
            raise DatasetLayoutError(f"{len(missing)} anomalous VisA image(s) lack a mask, e.g. {missing[:3]}; "
                                     "to go on without them pass train(..., require_masks=False) in Python, "
                                     "--set require_masks=false on the command line")
        if not records:
            raise DatasetLayoutError(f"no {split} images for {categories} in {root / SPLIT_FILE}")
        super().__init__(records, split, image_size, name="visa")
