"""ad-runtime: score images with an ad-core export (ONNX graph + model.json) using onnxruntime, numpy and Pillow.

    from ad_runtime import Detector
    detector = Detector.load("export/")
    for result in detector.predict(["part1.png", "line_a/"]):
        result.path, result.score, result.normalized_score, result.label, result.normalized_map
"""

from ad_runtime.detector import Detector, RuntimePrediction
from ad_runtime.images import ImageReadError, ImageTooLargeError
from ad_runtime.metadata import EXPORT_FORMAT, FORMAT_VERSION, ExportError, ExportInfo, read_export_info

__version__ = "0.1.0"
__all__ = ["Detector", "RuntimePrediction", "ExportError", "ExportInfo", "ImageReadError", "ImageTooLargeError",
           "read_export_info", "EXPORT_FORMAT", "FORMAT_VERSION", "__version__"]
