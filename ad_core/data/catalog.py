"""Dataset names as users type them (`train("mvtec", ...)`) and what they map to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ad_core.data.base import DatasetLayoutError, ImageDataset
from ad_core.data.btad import BTAD, BTAD_CATEGORIES
from ad_core.data.folder import FolderDataset, folder_categories
from ad_core.data.formats import list_datasets  # noqa: F401  (re-exported)
from ad_core.data.mvtec import MVTecAD, mvtec_categories
from ad_core.data.synthetic import DEMO_CATEGORIES, DemoDataset
from ad_core.data.visa import VisA, read_split
from ad_core.settings import settings
from ad_core.specs import resolve_ref

DATASETS: dict[str, type] = {"mvtec": MVTecAD, "visa": VisA, "btad": BTAD, "folder": FolderDataset, "demo": DemoDataset}


def _plugin_datasets() -> dict[str, str]:
    """Dataset formats registered by plugins through `adcore_register_datasets`."""
    from ad_core.plugins import get_registry

    return get_registry().datasets


def dataset_root(name: str, root: str | Path | None = None) -> Path:
    return Path(root).expanduser() if root is not None else Path(settings.dataset_dir) / name


def get_dataset(name: str, category: str | list[str] = "all", split: str = "train",
                image_size: int | tuple[int, int] = 256, root: str | Path | None = None,
                **kwargs: Any) -> ImageDataset:
    """A built-in dataset by name; any other name is a folder dataset under `dataset_dir/<name>`."""
    key = name.lower()
    if key in ("demo", "folder") or (key not in DATASETS and key not in _plugin_datasets()):
        kwargs.pop("require_masks", None)  # these never require masks: an abnormal image without one is kept
    if key == "demo":
        return DemoDataset(category=category, split=split, image_size=image_size, **kwargs)
    path = dataset_root(name, root)
    if key in DATASETS:
        return DATASETS[key](path, category, split, image_size, **kwargs)
    plugin_factory = _plugin_datasets().get(key)
    if plugin_factory is not None:
        return resolve_ref(plugin_factory)(path, category, split, image_size, **kwargs)
    if not path.is_dir():
        raise DatasetLayoutError(
            f"unknown dataset {name!r}: it is not built in ({', '.join(DATASETS)}) and {path} does not exist. "
            "Put your images in <dataset_dir>/<name>/<category>/{normal,abnormal,mask} or pass root=..."
        )
    return FolderDataset(path, category, split, image_size, **kwargs)


def list_categories(name: str, root: str | Path | None = None) -> list[str]:
    """Categories of a dataset as found on disk (the static list for `demo`)."""
    key = name.lower()
    if key == "demo":
        return list(DEMO_CATEGORIES)
    path = dataset_root(name, root)
    if key == "visa":
        return sorted({row["object"] for row in read_split(path)})
    if key in ("mvtec",):
        found = mvtec_categories(path)
    elif key == "btad":
        found = [c for c in BTAD_CATEGORIES if (path / c / "train" / "ok").is_dir()]
    else:
        found = folder_categories(path)
    if not found:
        raise DatasetLayoutError(f"no categories found for {name!r} under {path}")
    return found
