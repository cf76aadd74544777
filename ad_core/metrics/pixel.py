"""Pixel AUROC and AUPRO over a whole test set, streamed batch by batch in constant memory.

A full test set holds hundreds of millions of pixels (500 images of 1024x1024 is 2 GB of float32
maps), so the maps are never kept. Each pixel goes into a histogram bin instead, and both metrics
are read off three histograms that share one set of bins:

- normal pixel counts (every pixel whose mask is 0, in good and defective images alike): FPR;
- anomalous pixel counts: pixel AUROC;
- anomalous pixels weighted by 1 / (size of their defect region): the per-region overlap (PRO).
  Averaging each region's overlap over all regions equals summing these weights above a
  threshold and dividing by the number of regions, so no per-region histogram is needed.
  Regions are the 8-connected components of each mask, as in the MVTec AD evaluation code.

The bins are log-spaced about an anchor (the median of the first batch): a value `v` falls in the
bin named by the sign, exponent and top `mantissa_bits` bits of the float32 `v - anchor`. Binning is
monotone, so ranking between different bins is exact; only pixels that share a bin tie. Bins are
at most 2**-mantissa_bits of |v - anchor| wide (about 0.05 % with the default 11 bits): fine near
the bulk of the data and relative far from it, so no range has to be known or guessed in advance,
a later batch with a far wider range (anomalies, outliers) never forces re-binning, and a constant
offset in the maps costs nothing. What it cannot resolve is values that differ by less than that
relative width, e.g. later maps that drift far from the first batch with a tiny spread. The state is 3 * 2**(9 + mantissa_bits) numbers (24 MiB with the
default), whatever the number of images.

Measured on random 64x64 maps (plain, heavy-tailed, offset, quantised, good images first; the
cases of tests/test_metrics.py over five seeds): pixel AUROC within 3e-7 of the exact Mann-Whitney
value and AUPRO within 2e-6 of a threshold sweep over every distinct value. Binning costs about
15 ms per 1024x1024 image on one CPU core.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ad_core.metrics.curves import NAN_MESSAGE, to_numpy

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_CHUNK_PIXELS = 1 << 22  # pixels binned at once: bounds the temporary arrays of one update


def partial_trapezoid(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under (x, y) for x in [x[0], limit], interpolating y at `limit`; x non-decreasing."""
    end = int(np.searchsorted(x, limit, side="right"))
    area = float(np.sum(np.diff(x[:end]) * (y[1:end] + y[: end - 1]) / 2.0))
    if end < x.shape[0] and x[end - 1] < limit:
        y_limit = y[end - 1] + (y[end] - y[end - 1]) * (limit - x[end - 1]) / (x[end] - x[end - 1])
        area += (limit - x[end - 1]) * (y[end - 1] + y_limit) / 2.0
    return area


def label_regions(mask: np.ndarray, structure: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected defect regions; scipy is imported here, after the fit, so it never adds to a fit's peak memory."""
    from scipy import ndimage

    return ndimage.label(mask, structure=structure)


def monotone_bins(values: np.ndarray, anchor: np.float32, mantissa_bits: int) -> np.ndarray:
    """Monotone bin index of each value: equal values share a bin, a larger value never gets a lower one."""
    d = np.subtract(values, anchor, dtype=np.float32)
    d += np.float32(0.0)  # turns -0.0 into +0.0 so that equal values never land in two bins
    bits = d.view(np.uint32)
    # Flip negatives entirely and set the sign bit of positives: unsigned order then equals float order.
    flip = (bits >> np.uint32(31)) * np.uint32(0x7FFFFFFF) | np.uint32(0x80000000)
    return (bits ^ flip) >> np.uint32(23 - mantissa_bits)


def first_anchor(maps: np.ndarray) -> np.float32:
    """The binning anchor: the median of (about a million pixels of) the first batch."""
    sample = maps.reshape(-1)[:: max(1, maps.size >> 20)]
    return np.float32(np.median(sample))


class PixelMetrics:
    """Streaming accumulator of pixel AUROC and AUPRO; see the module docstring for the binning."""

    def __init__(self, mantissa_bits: int = 11) -> None:
        if not 2 <= int(mantissa_bits) <= 14:
            raise ValueError(f"mantissa_bits must lie in [2, 14], got {mantissa_bits}")
        self.mantissa_bits = int(mantissa_bits)
        bins = 1 << (9 + self.mantissa_bits)  # sign + 8 exponent bits + kept mantissa bits
        self._normal = np.zeros(bins, dtype=np.int64)
        self._anomalous = np.zeros(bins, dtype=np.int64)
        self._region_weight = np.zeros(bins, dtype=np.float64)
        self._by_type: dict[str, np.ndarray] = {}  # anomalous pixel counts per defect type
        self._anchor: np.float32 | None = None
        self.images = 0
        self.regions = 0
        self.anomalous_pixels = 0
        self.normal_pixels = 0

    @property
    def has_masks(self) -> bool:
        """Whether any anomalous pixel was seen: without one, pixel metrics are undefined."""
        return self.anomalous_pixels > 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the accumulator's state: it grows with the number of defect types, never with images."""
        return (self._normal.nbytes + self._anomalous.nbytes + self._region_weight.nbytes
                + sum(h.nbytes for h in self._by_type.values()))

    def _bins(self, values: np.ndarray) -> np.ndarray:
        return monotone_bins(values, self._anchor, self.mantissa_bits)

    def update(self, maps: Any, masks: Any, defect_types: list[str] | None = None) -> None:
        """Add a batch: `maps` [B,H,W] float anomaly maps, `masks` [B,H,W] ground truth (> 0.5 is anomalous).

        Every mask must be ground truth: leave out anomalous images whose mask is unknown. With
        `defect_types` (one per image), anomalous pixels are also counted per type for a per-type AUROC.
        """
        maps = to_numpy(maps).astype(np.float32, copy=False)
        masks = to_numpy(masks)
        if maps.ndim == 2:
            maps, masks = maps[None], masks.reshape((1,) + masks.shape[-2:])
        if maps.ndim != 3 or maps.shape != masks.shape:
            raise ValueError(
                f"maps and masks must both be [B,H,W] of the same shape, got {maps.shape} and {masks.shape}"
            )
        if maps.size == 0:
            return
        if not np.isfinite(maps).all():
            raise ValueError(NAN_MESSAGE.format(name="anomaly maps"))
        positive = masks > 0.5
        if self._anchor is None:
            self._anchor = first_anchor(maps)
        step = max(1, _CHUNK_PIXELS // (maps.shape[1] * maps.shape[2]))
        if defect_types is not None and len(defect_types) != maps.shape[0]:
            raise ValueError(f"{len(defect_types)} defect types for {maps.shape[0]} maps")
        for start in range(0, maps.shape[0], step):
            types = None if defect_types is None else defect_types[start : start + step]
            self._add(maps[start : start + step], positive[start : start + step], types)
        self.images += maps.shape[0]

    def _add(self, maps: np.ndarray, positive: np.ndarray, types: list[str] | None) -> None:
        bins = self._bins(maps)
        n = self._normal.shape[0]
        self._normal += np.bincount(bins[~positive], minlength=n)
        self.normal_pixels += int((~positive).sum())
        if not positive.any():
            return
        anomalous_bins, weights = [], []
        for i, (image_bins, mask) in enumerate(zip(bins, positive)):
            if not mask.any():
                continue
            regions, count = label_regions(mask, structure=EIGHT_CONNECTED)
            inverse_size = 1.0 / np.maximum(np.bincount(regions.ravel()), 1)
            anomalous_bins.append(image_bins[mask])
            if types is not None:
                counts = self._by_type.setdefault(str(types[i]), np.zeros(n, dtype=np.int64))
                counts += np.bincount(anomalous_bins[-1], minlength=n)
            weights.append(inverse_size[regions[mask]])
            self.regions += count
        anomalous_bins = np.concatenate(anomalous_bins)
        self._anomalous += np.bincount(anomalous_bins, minlength=n)
        self._region_weight += np.bincount(anomalous_bins, weights=np.concatenate(weights), minlength=n)
        self.anomalous_pixels += anomalous_bins.shape[0]

    def compute(self, fpr_limit: float = 0.3) -> dict[str, Any]:
        """`pixel_auroc` and `pixel_aupro` (area under PRO vs FPR up to `fpr_limit`, divided by it); NaN if undefined."""
        if not 0.0 < float(fpr_limit) <= 1.0:
            raise ValueError(f"fpr_limit must lie in (0, 1], got {fpr_limit}")
        if self.anomalous_pixels == 0 or self.normal_pixels == 0:
            return {"pixel_auroc": float("nan"), "pixel_aupro": float("nan")}
        used = np.flatnonzero((self._normal > 0) | (self._anomalous > 0))
        normal = self._normal[used].astype(np.float64)
        auroc = self._auroc(self._anomalous, used)
        # PRO curve: lower the threshold bin by bin, from the top, starting at (FPR 0, PRO 0).
        fpr = np.concatenate([[0.0], np.cumsum(normal[::-1]) / self.normal_pixels])
        pro = np.concatenate([[0.0], np.cumsum(self._region_weight[used][::-1]) / self.regions])
        pro = np.minimum(pro, 1.0)
        aupro = partial_trapezoid(fpr, pro, float(fpr_limit)) / float(fpr_limit)
        result: dict[str, Any] = {"pixel_auroc": auroc, "pixel_aupro": float(aupro)}
        if self._by_type:
            result["per_defect_pixel_auroc"] = {t: self._auroc(h, used) for t, h in sorted(self._by_type.items())}
        return result

    def _auroc(self, anomalous_counts: np.ndarray, used: np.ndarray) -> float:
        """AUROC of these anomalous pixels against every normal pixel: each beats the normal pixels in lower
        bins and ties (1/2) with its own bin."""
        normal = self._normal[used].astype(np.float64)
        anomalous = anomalous_counts[used].astype(np.float64)
        below = np.cumsum(normal) - normal
        return float(np.sum(anomalous * (below + 0.5 * normal)) / (anomalous.sum() * self.normal_pixels))
