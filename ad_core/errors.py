"""Which exceptions are the user's to fix and how the CLI says them; every other one is a bug, shown in full.

A user error is bad input or a bad environment: a wrong option, a missing or damaged file, a dataset in another
layout, a full disk, a busy folder, a broken plugin, a diverged training. The core reports those with
`ValueError` (and its subclasses such as `CheckpointError`, `DatasetLayoutError`, `OptionError`), `OSError`,
`FloatingPointError` or a class below. A `TypeError`, `KeyError`, `AttributeError` or plain `RuntimeError` from
inside a model is a bug: the CLI lets its traceback through. Nothing here imports torch.
"""

from __future__ import annotations

import errno

from ad_core.plugins import PluginError, UnknownModelError, get_registry
from ad_core.run_folder import RunFolderBusyError
from ad_core.specs import FactoryImportError

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, FloatingPointError, PluginError,
                                                UnknownModelError, FactoryImportError, RunFolderBusyError)


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, USER_ERRORS)


def describe(exc: BaseException) -> str:
    """One actionable sentence for a user error."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" while writing {exc.filename}" if exc.filename else ""
        return (f"no space left on the device{where}. Free some space and run again; a run folder being "
                "replaced keeps its previous outputs.")
    if isinstance(exc, FactoryImportError):
        return f"{exc}{_plugin_of(exc)}"
    return str(exc) or type(exc).__name__


def _plugin_of(exc: FactoryImportError) -> str:
    entry = get_registry().models.get(exc.model)
    return f" (plugin {entry.plugin!r})" if entry is not None else ""
