"""Fixtures: export folders built from the tiny contract graphs of `contract_graphs`, and image folders."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))  # makes `contract_graphs` importable by the test modules

from contract_graphs import build_graph, metadata  # noqa: E402

ExportFactory = Callable[..., Path]


@pytest.fixture
def make_export(tmp_path: Path) -> ExportFactory:
    """`make_export(height=24, width=32, batch=None, has_map=True, **json_changes)` -> an export folder."""
    count = iter(range(1000))

    def make(height: int = 24, width: int = 32, batch: int | None = None, has_map: bool = True,
             **changes: Any) -> Path:
        directory = tmp_path / f"export{next(count)}"
        directory.mkdir()
        build_graph(directory / "model.onnx", height, width, batch, has_map)
        info = {**metadata(height, width, batch, has_map), **changes}
        (directory / "model.json").write_text(json.dumps(info), encoding="utf-8")
        return directory

    return make


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """A folder of five RGB PNGs of other sizes than the exports': two bright (anomalous), three dark."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, level in enumerate([40, 60, 220, 80, 240]):
        pixels = np.clip(rng.normal(level, 20, size=(30 + i, 41, 3)), 0, 255).astype(np.uint8)
        target = folder / ("sub" if i == 4 else "") / f"img{i}.png"
        Image.fromarray(pixels, "RGB").save(target)
    return folder
