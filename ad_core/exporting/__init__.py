"""Export of trained detectors to ONNX (and OpenVINO) with parity checked at every export.

`export(run_dir, ...)` writes an export folder (see `ad_core.exporting.metadata` and docs/architecture.md);
`graph` builds the traced module, `parity` compares it with the torch detector, `metadata` writes and reads
the folder's `model.json`.
"""

from ad_core.exporting.errors import ExportError, NotExportableError
from ad_core.exporting.exporter import ExportResult, export, export_detector
from ad_core.exporting.metadata import read_export_metadata

__all__ = ["ExportError", "ExportResult", "NotExportableError", "export", "export_detector", "read_export_metadata"]
