"""AUPIMO (Bertoldo et al., 2024): the area under each anomalous image's per-image overlap curve.

For a threshold t shared by all images, the x axis is the false-positive rate measured on the *normal
images only* (the mean of their per-image FPRs; with images of one size that is the pooled FPR), and each
anomalous image's y value is its own overlap: the share of its anomalous pixels at or above t. Each
image's curve is integrated over log10(FPR) in [1e-5, 1e-4] by the trapezoid rule, interpolating linearly
in log FPR at both ends, and divided by the width of that log range, so a perfect image scores 1. The
metric is the mean over anomalous images with a mask; the per-image values are kept.

Pixels are streamed into the monotone bins of `ad_core.metrics.pixel` (about 0.05 % wide): normal-image
pixels into one histogram, each anomalous image's defect pixels into its own sparse (bin, count) list,
so the state grows with the number of anomalous images and their distinct defect values, never with the
normal images. When the normal images hold too few pixels to resolve the lower FPR bound (fewer than
1 / 1e-5 pixels, or ties at the top), AUPIMO is undefined and reported as NaN with the reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ad_core.metrics.curves import NAN_MESSAGE, to_numpy
from ad_core.metrics.pixel import first_anchor, monotone_bins

FPR_BOUNDS = (1e-5, 1e-4)


def clipped_area(x: np.ndarray, y: np.ndarray, low: float, high: float) -> float:
    """Trapezoid area under the polyline (x, y), x non-decreasing, restricted to low <= x <= high.

    Vertical steps (equal x) add nothing; segments crossing a bound are cut there by linear interpolation.
    """
    x1, x2, y1, y2 = x[:-1], x[1:], y[:-1], y[1:]
    a, b = np.clip(x1, low, high), np.clip(x2, low, high)
    keep = b > a
    x1, x2, y1, y2, a, b = x1[keep], x2[keep], y1[keep], y2[keep], a[keep], b[keep]
    slope = (y2 - y1) / (x2 - x1)
    ya, yb = y1 + slope * (a - x1), y1 + slope * (b - x1)
    return float(np.sum((b - a) * (ya + yb) / 2.0))


class AupimoMetric:
    """Streaming AUPIMO; feed whole images with `update(maps, masks, labels)`."""

    def __init__(self, fpr_bounds: tuple[float, float] = FPR_BOUNDS, mantissa_bits: int = 11) -> None:
        lo, hi = (float(b) for b in fpr_bounds)
        if not 0.0 < lo < hi <= 1.0:
            raise ValueError(f"fpr_bounds must satisfy 0 < low < high <= 1, got {fpr_bounds}")
        self.fpr_bounds = (lo, hi)
        self.mantissa_bits = int(mantissa_bits)
        self._normal = np.zeros(1 << (9 + self.mantissa_bits), dtype=np.int64)
        self._images: list[tuple[np.ndarray, np.ndarray]] = []  # per anomalous image: distinct bins, counts
        self._anchor: np.float32 | None = None
        self.normal_pixels = 0

    def update(self, maps: Any, masks: Any, labels: Any) -> None:
        """Add a batch: maps and ground-truth masks [B,H,W], image labels [B] (0 normal, 1 anomalous).

        Leave out anomalous images whose mask is unknown; an anomalous image with an empty mask adds nothing.
        """
        maps = to_numpy(maps).astype(np.float32, copy=False)
        masks, labels = to_numpy(masks) > 0.5, to_numpy(labels).reshape(-1)
        if maps.ndim != 3 or maps.shape != masks.shape or labels.shape[0] != maps.shape[0]:
            raise ValueError(f"expected maps and masks [B,H,W] and B labels, got {maps.shape}, {masks.shape}, "
                             f"{labels.shape}")
        if not np.isfinite(maps).all():
            raise ValueError(NAN_MESSAGE.format(name="anomaly maps"))
        if maps.size == 0:
            return
        if self._anchor is None:
            self._anchor = first_anchor(maps)
        for amap, mask, label in zip(maps, masks, labels):
            bins = monotone_bins(amap, self._anchor, self.mantissa_bits)
            if int(label) == 0:
                self._normal += np.bincount(bins.ravel(), minlength=self._normal.shape[0])
                self.normal_pixels += bins.size
            elif mask.any():
                self._images.append(np.unique(bins[mask], return_counts=True))

    def compute(self) -> dict[str, Any]:
        """`aupimo` (mean over anomalous images), `per_image`, `images`, and `reason` when it is undefined."""
        nan = {"aupimo": float("nan"), "per_image": [], "images": len(self._images)}
        if not self._images:
            return {**nan, "reason": "no anomalous image with a mask"}
        if self.normal_pixels == 0:
            return {**nan, "reason": "no normal image"}
        used = np.flatnonzero(self._normal)[::-1]  # bins holding normal pixels, highest first
        fpr = np.cumsum(self._normal[used]) / self.normal_pixels  # FPR at `bin >= used[k]`, ascending
        if fpr[0] > self.fpr_bounds[0]:
            return {**nan, "reason": f"the normal images cannot resolve FPR {self.fpr_bounds[0]:g}: their "
                                     f"{self.normal_pixels} pixels have {int(self._normal[used[0]])} tied at the top "
                                     f"(at least {int(np.ceil(1 / self.fpr_bounds[0]))} untied pixels are needed)"}
        # Lowering the threshold from one normal bin to just above the next adds defect pixels at a constant
        # FPR (a vertical step), then crosses the next bin: the curve visits (x_k, low_k) then (x_k, high_k).
        x = np.repeat(np.log10(fpr), 2)
        low, high = np.log10(self.fpr_bounds[0]), np.log10(self.fpr_bounds[1])
        per_image = []
        for bins, counts in self._images:
            below = np.concatenate([[0], np.cumsum(counts)])  # below[j]: defect pixels in bins[:j]
            at_or_above = below[-1] - below[np.searchsorted(bins, used, side="left")]
            above_next = below[-1] - below[np.searchsorted(bins, np.append(used[1:] + 1, 0), side="left")]
            y = np.stack([at_or_above, above_next], axis=1).reshape(-1) / below[-1]
            per_image.append(float(clipped_area(x, y, low, high) / (high - low)))
        return {"aupimo": float(np.mean(per_image)), "per_image": per_image, "images": len(per_image)}
