"""MVTec AD and any data set in its layout (e.g. shared/data/magnetic_tile)."""

from __future__ import annotations

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
from ad_core.data.formats import MVTEC_CATEGORIES  # noqa: F401  (re-exported)

LAYOUT = "<root>/<category>/train/good/*, <root>/<category>/test/<defect|good>/*, " \
         "<root>/<category>/ground_truth/<defect>/<name>_mask.png"


def mvtec_categories(root: Path) -> list[str]:
    """Categories present on disk: folders that have train/good."""
    return [c for c in subfolders(root) if (root / c / "train" / "good").is_dir()]


def find_mask(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}_mask", stem):
        for path in list_images(folder):
            if path.stem == name:
                return path
    return None


def mvtec_records(root: Path, category: str, split: str, require_masks: bool = True,
                  normal_name: str = "good") -> list[Record]:
    """Records of one category in the MVTec layout; every anomalous image needs its mask."""
    base = root / category
    if split == "train":
        images = list_images(base / "train" / normal_name)
        if not images:
            raise DatasetLayoutError(f"no training images in {base / 'train' / normal_name}; expected {LAYOUT}")
        return [Record(str(p), 0, category) for p in images]
    test = base / "test"
    if not test.is_dir():
        raise DatasetLayoutError(f"no test folder {test}; expected {LAYOUT}")
    records, missing = [], []
    for defect in subfolders(test):
        for path in list_images(test / defect):
            if defect == normal_name:
                records.append(Record(str(path), 0, category))
                continue
            mask_dir = base / "ground_truth" / defect
            mask = find_mask(mask_dir, path.stem)
            if mask is None:
                missing.append(mask_dir / f"{path.stem}_mask.png")
            records.append(Record(str(path), 1, category, defect, str(mask) if mask else None))
    if missing and require_masks:
        shown = ", ".join(str(p) for p in missing[:3])
        raise DatasetLayoutError(
            f"{len(missing)} anomalous test image(s) of {category!r} have no mask, e.g. {shown}. Add the masks, "
            "or go on without them (image-level metrics only for those images): train(..., require_masks=False) in "
            "Python, --set require_masks=false on the command line."
        )
    if not records:
        raise DatasetLayoutError(f"no test images under {test}; expected {LAYOUT}")
    return records


class MVTecAD(ImageDataset):
    """`root/<category>/{train/good, test/<defect>, ground_truth/<defect>}`; categories found on disk."""

    def __init__(self, root: str | Path, category: str | list[str] = "all", split: str = "train",
                 image_size: int | tuple[int, int] = 256, require_masks: bool = True) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DatasetLayoutError(f"MVTec AD root {root} does not exist; expected {LAYOUT}")
        available = mvtec_categories(root)
        explain_missing(root, category, available, "train/good", LAYOUT)
        categories = resolve_categories(category, available, f"MVTec AD at {root}")
        check_split(split)
        records = [r for c in categories for r in mvtec_records(root, c, split, require_masks)]
        super().__init__(records, split, image_size, name="mvtec")
