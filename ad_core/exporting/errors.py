"""Errors of an export: user errors, reported by the CLI in one line."""

from __future__ import annotations


class ExportError(ValueError):
    """The export cannot be written, or the written graph disagrees with the torch detector."""


class NotExportableError(ExportError):
    """The model declares in its spec that it cannot be exported (`ModelSpec.exportable`), with the reason."""
