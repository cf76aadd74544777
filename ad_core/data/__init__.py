"""Datasets: the real on-disk layouts (MVTec AD, VisA, BTAD, your own folders) and a synthetic demo set.

Names are imported on first use, so that `ad_core.data.formats` (what `adcore list-datasets` reads) does not
pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BTAD": "btad",
    "BTAD_CATEGORIES": "formats",
    "DATASETS": "catalog",
    "DEFECTS": "synthetic",
    "DEMO_CATEGORIES": "formats",
    "MVTEC_CATEGORIES": "formats",
    "VISA_CATEGORIES": "formats",
    "DatasetLayoutError": "base",
    "DemoDataset": "synthetic",
    "FolderDataset": "folder",
    "ImageDataset": "base",
    "ImageReadError": "images",
    "ImageTransform": "transforms",
    "MVTecAD": "mvtec",
    "MaskTransform": "transforms",
    "Record": "base",
    "VisA": "visa",
    "get_dataset": "catalog",
    "list_categories": "catalog",
    "list_datasets": "formats",
    "read_image": "images",
    "read_mask": "images",
    "read_metadata_csv": "folder",
    "render": "synthetic",
    "resolve_categories": "base",
    "to_size": "transforms",
    "write_demo_dataset": "synthetic",
    "write_metadata_csv": "folder",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"ad_core.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'ad_core.data' has no attribute {name!r}")
