"""Test plugins installed as distributions on a folder, so child processes (benchmark cells, Ray workers,
torchrun ranks) that put the folder on PYTHONPATH load them through the `adcore` entry point like any plugin."""

from __future__ import annotations

import textwrap
from pathlib import Path


def install_test_plugin(folder: Path, name: str, target: str, source: str | None = None) -> None:
    """Write `<name>-1.0.dist-info` declaring the entry point `name = target` (module or module:attr) and, with
    `source`, the module itself (`target`'s module name + .py)."""
    info = folder / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[adcore]\n{name} = {target}\n")
    if source is not None:
        (folder / f"{target.split(':')[0]}.py").write_text(textwrap.dedent(source))
