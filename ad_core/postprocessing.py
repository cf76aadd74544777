"""Post-processing saved with a model: decision thresholds and 0–1 normalisation for scores and maps.

An image score and an anomaly-map pixel live on different scales (FRE's score is hundreds of times its map
values; PatchCore's score is one re-weighted patch distance), so images and pixels each get their own
threshold and range. Both are buffers of the detector, set from the validation source (never the test split
unless the user asked for a test-label threshold by name) and saved in the same safetensors file.

Normalisation is `(value - threshold) / (max - min) + 0.5`, clamped to [0, 1]: each threshold maps to
exactly 0.5, so `normalized >= 0.5` is the stored decision and colours mean the same for every model.

Checkpoints written before pixel thresholds existed hold only the image buffers: they load with the pixel
buffers unset (NaN), and `normalized_map` / pixel decisions are then unavailable (None) until the model
is re-trained; image scores, labels and `normalized_score` work as before.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

IMAGE_BUFFERS = ("threshold", "score_min", "score_max")
PIXEL_BUFFERS = ("pixel_threshold", "map_min", "map_max")


def _normalize(values: torch.Tensor, threshold: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    span = (high - low).clamp_min(1e-12)
    return ((values - threshold) / span + 0.5).clamp(0.0, 1.0)


class PostProcessor(nn.Module):
    """Image threshold and score range, pixel threshold and map range; each threshold maps to 0.5."""

    def __init__(self) -> None:
        super().__init__()
        nan = float("nan")
        self.register_buffer("threshold", torch.tensor(nan))
        self.register_buffer("score_min", torch.tensor(0.0))
        self.register_buffer("score_max", torch.tensor(1.0))
        self.register_buffer("pixel_threshold", torch.tensor(nan))
        self.register_buffer("map_min", torch.tensor(0.0))
        self.register_buffer("map_max", torch.tensor(1.0))

    @property
    def calibrated(self) -> bool:
        """Whether an image threshold is set (a trained and evaluated detector)."""
        return bool(torch.isfinite(self.threshold))

    @property
    def pixel_calibrated(self) -> bool:
        """Whether a pixel threshold is set (False for models without maps and for pre-pixel checkpoints)."""
        return bool(torch.isfinite(self.pixel_threshold))

    def calibrate(self, threshold: float, score_min: float, score_max: float) -> None:
        """Set the image threshold and the score range."""
        self.threshold.fill_(float(threshold))
        self.score_min.fill_(float(score_min))
        self.score_max.fill_(float(score_max))

    def calibrate_pixels(self, threshold: float, map_min: float, map_max: float) -> None:
        """Set the pixel threshold and the anomaly-map range."""
        self.pixel_threshold.fill_(float(threshold))
        self.map_min.fill_(float(map_min))
        self.map_max.fill_(float(map_max))

    def normalize_score(self, scores: torch.Tensor) -> torch.Tensor:
        """Image scores to [0, 1], the image threshold at exactly 0.5."""
        return _normalize(scores, self.threshold, self.score_min, self.score_max)

    def normalize_map(self, maps: torch.Tensor) -> torch.Tensor:
        """Anomaly maps to [0, 1], the pixel threshold at exactly 0.5."""
        return _normalize(maps, self.pixel_threshold, self.map_min, self.map_max)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """A checkpoint without pixel buffers (written before they existed) loads with them unset."""
        absent = [name for name in PIXEL_BUFFERS if prefix + name not in state_dict]
        if absent and all(prefix + name in state_dict for name in IMAGE_BUFFERS):
            warnings.warn("this checkpoint predates pixel thresholds: normalized maps and predicted masks are "
                          "unavailable until the model is re-trained", stacklevel=2)
            state_dict = {**state_dict, **{prefix + name: getattr(self, name).clone() for name in absent}}
            state_dict[prefix + "pixel_threshold"] = torch.tensor(float("nan"))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
