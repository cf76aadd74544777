"""Process-wide settings (the seed's `set_globals`): where data, weights and outputs live."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


@dataclass
class Settings:
    dataset_dir: Path = Path(os.environ.get("ADCORE_DATASET_DIR", "datasets"))
    backbone_dir: Path = Path(os.environ.get("ADCORE_BACKBONE_DIR", "backbones"))
    output_dir: Path = Path(os.environ.get("ADCORE_OUTPUT_DIR", "outputs"))
    # where folder datasets' metadata.csv go; None: into each category folder of the data
    metadata_dir: Path | None = Path(os.environ["ADCORE_METADATA_DIR"]) if os.environ.get("ADCORE_METADATA_DIR") else None
    seed: int = 42
    num_workers: int = 0
    pin_memory: bool = True  # only takes effect with CUDA
    persistent_workers: bool = False  # only takes effect with num_workers > 0
    device: str = "auto"
    allow_download: bool = os.environ.get("ADCORE_ALLOW_DOWNLOAD", "0") == "1"
    progress: bool = os.environ.get("ADCORE_PROGRESS", "1") != "0"

    def as_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


settings = Settings()


def set_globals(show_globals: bool = False, **values: Any) -> Settings:
    """Update the global settings; unknown names are an error that lists the valid ones."""
    valid = {f.name for f in fields(Settings)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise TypeError(f"unknown setting(s) {unknown}; valid settings: {sorted(valid)}")
    for key, value in values.items():
        if key.endswith("_dir") and value is not None:
            value = Path(value).expanduser()
        setattr(settings, key, value)
    if show_globals:
        shown = settings.as_dict()
        width = max(map(len, shown))
        for key, value in shown.items():
            print(f"{key:>{width}}: {value}")
    return settings


def resolve_device(device: str | None = None):
    """'auto' picks CUDA when present, else CPU."""
    import torch

    name = device or settings.device
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
