"""A run folder written as a set: staged, moved in, and sealed by a manifest written last, under a lock.

A run writes its outputs into a hidden sibling staging folder. Only when all of them are written are they moved
into the run folder (renames on one file system: no copying, no space needed), the previous run's manifest
having been removed first and the new `manifest.json`, which binds every file by its SHA-256, moved in last.
So a failure while writing (a full disk, an exception, a kill) leaves the previous run untouched, and a folder
caught half-moved has no manifest matching its `model.json`, which `load_model` refuses. A lock held for the
whole run refuses a second run into the same folder; stale staging folders and temporary files of a killed run
are removed by the next run into that folder.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ad_core.io import current_umask, file_sha256, remove_stale_temporaries, write_json

MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".adcore.lock"
STAGING_MARK = ".staging-"

F = TypeVar("F", bound=Callable[..., Any])


class RunFolderBusyError(RuntimeError):
    """Another process (or run) is writing the same output folder."""


class FileLock:
    """An exclusive, non-blocking lock through a lock file, released by `release` or when the process ends.

    The lock file is removed on release; a process that opened the file just before it was removed notices
    (the path no longer names the file it locked) and tries again, so two holders are impossible.
    """

    def __init__(self, path: Path, what: str, holder: str) -> None:
        self.path = Path(path)
        self.what = what  # what is locked, for the message: "/out/demo/weave/padim"
        self.holder = holder  # who else would hold it: "`adcore train` run"
        self._fd: int | None = None

    def acquire(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
            if not _try_lock(fd):
                holder = _read_holder(fd)
                os.close(fd)
                raise RunFolderBusyError(
                    f"{self.what} is in use by another {self.holder}{holder}; wait for it to finish or "
                    f"choose another output folder"
                )
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"pid {os.getpid()}\n".encode())
                self._fd = fd
                return self
            os.close(fd)  # the previous holder removed the file between our open and lock

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):  # Windows cannot remove an open file: there it stays, unlocked
            os.unlink(self.path)
        os.close(self._fd)  # closing drops the lock
        self._fd = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip() if hasattr(os, "pread") else ""
    except OSError:
        text = ""
    return f" ({text})" if text else ""


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The folder's manifest, or None when it has none (a folder not written by a run, or caught mid-commit)."""
    path = Path(directory) / MANIFEST_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # present but unreadable: matches nothing


class RunFolder:
    """One run's outputs: written under `staging`, committed into `path` as a set by `commit`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.run_id = uuid.uuid4().hex
        self.lock = FileLock(self.path / LOCK_NAME, str(self.path), "`adcore train` run")
        self.staging: Path | None = None

    def open(self) -> RunFolder:
        self.lock.acquire()
        try:
            for stale in self.path.parent.glob(f".{self.path.name}{STAGING_MARK}*"):
                shutil.rmtree(stale, ignore_errors=True)
            remove_stale_temporaries(self.path)
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.path.name}{STAGING_MARK}", dir=self.path.parent))
            os.chmod(self.staging, 0o777 & ~current_umask())
        except BaseException:
            self.lock.release()
            raise
        return self

    def commit(self) -> Path:
        """Seal the staged files with a manifest and move them in; the previous run's files go."""
        assert self.staging is not None, "commit() on a run folder that is not open"
        files = sorted(p for p in self.staging.rglob("*") if p.is_file())
        write_json(self.staging / MANIFEST_NAME, {
            "run_id": self.run_id,
            "files": {p.relative_to(self.staging).as_posix(): file_sha256(p) for p in files},
        })
        previous = read_manifest(self.path) or {}
        (self.path / MANIFEST_NAME).unlink(missing_ok=True)  # from here on the folder is uncommitted
        staged = {p.name for p in self.staging.iterdir()}
        for name in {Path(f).parts[0] for f in previous.get("files", {})} - staged:
            _remove(self.path / name)  # the previous run's outputs this run does not write
        for entry in sorted(self.staging.iterdir(), key=lambda p: p.name == MANIFEST_NAME):
            target = self.path / entry.name
            if entry.is_dir():
                _remove(target)
            os.replace(entry, target)
        self.staging.rmdir()
        self.staging = None
        return self.path

    def close(self) -> None:
        """Discard whatever was staged and not committed, and release the lock."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        self.lock.release()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


_OPEN: contextvars.ContextVar[list[RunFolder] | None] = contextvars.ContextVar("adcore_run_folders", default=None)


def run_folder_scope(function: F) -> F:
    """Decorate a function that opens run folders: whatever happens in it, they are closed when it returns."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = _OPEN.set([])
        try:
            return function(*args, **kwargs)
        finally:
            for folder in reversed(_OPEN.get() or []):
                folder.close()
            _OPEN.reset(token)

    return wrapper  # type: ignore[return-value]


def open_run_folder(path: str | Path) -> RunFolder:
    """Lock `path` for this run and stage its outputs; needs an enclosing `run_folder_scope`."""
    opened = _OPEN.get()
    if opened is None:
        raise RuntimeError("open_run_folder() must be called inside a function decorated with @run_folder_scope")
    folder = RunFolder(Path(path)).open()
    opened.append(folder)
    return folder
