"""BTAD (Mishra et al., 2021): products 01, 02, 03 with `ok`/`ko` folders."""

from __future__ import annotations

from pathlib import Path

from ad_core.data.base import (
    DatasetLayoutError,
    ImageDataset,
    check_split,
    explain_missing,
    resolve_categories,
    subfolders,
)
from ad_core.data.formats import BTAD_CATEGORIES  # noqa: F401  (re-exported)
from ad_core.data.mvtec import mvtec_records

LAYOUT = "<root>/<01|02|03>/{train/ok, test/ok, test/ko, ground_truth/ko}"


class BTAD(ImageDataset):
    """The MVTec-like BTAD layout where normal is `ok`; masks may be .png or .bmp, with or without `_mask`."""

    def __init__(self, root: str | Path, category: str | list[str] = "all", split: str = "train",
                 image_size: int | tuple[int, int] = 256, require_masks: bool = True) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DatasetLayoutError(f"BTAD root {root} does not exist; expected {LAYOUT}")
        check_split(split)
        available = [c for c in subfolders(root) if (root / c / "train" / "ok").is_dir()]
        explain_missing(root, category, available, "train/ok", LAYOUT)
        categories = resolve_categories(category, available, f"BTAD at {root}")
        records = [r for c in categories for r in mvtec_records(root, c, split, require_masks, normal_name="ok")]
        super().__init__(records, split, image_size, name="btad")
