"""Atomic file writes: an interrupted run never leaves a half-written checkpoint or report."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


TMP_MARK = ".tmp"  # in the name of every temporary file `atomic_path` makes: `.<name>.<random>.tmp<suffix>`


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in chunks: binds a checkpoint's files to each other."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def current_umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete temporary files an interrupted `atomic_path` left in `directory` (recursively); returns them.

    Only safe while nothing else writes there, e.g. under the run folder's lock.
    """
    stale = [p for p in Path(directory).rglob(".*") if p.is_file() and TMP_MARK in p.name]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_MARK + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp (and some writers) make files owner-only
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    """Strict JSON: NaN and infinities (e.g. AUROC of a one-class test set) are written as null."""
    text = json.dumps(_finite(data), indent=2, sort_keys=False, default=_jsonable, allow_nan=False)
    return write_text(path, text + "\n")


def _finite(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy and torch scalars and arrays
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
