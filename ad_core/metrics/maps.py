"""Every anomaly-map metric of a test set in one streamed pass, leaving images with unknown masks out.

An anomalous image without a ground-truth mask is *unknown*, not all-normal: counting its defect pixels as
normal would lower pixel AUROC and AUPRO for no fault of the model. Such images (`Batch.mask_known` False)
are left out of every pixel metric and counted, so results can say how many there were.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ad_core.metrics.aupimo import FPR_BOUNDS, AupimoMetric
from ad_core.metrics.curves import to_numpy
from ad_core.metrics.pixel import PixelMetrics


class MapMetrics:
    """Pixel AUROC, AUPRO, per-defect-type pixel AUROC and AUPIMO, fed batch by batch."""

    def __init__(self, fpr_limit: float = 0.3, aupimo_bounds: tuple[float, float] = FPR_BOUNDS) -> None:
        self.fpr_limit = float(fpr_limit)
        self.pixel = PixelMetrics()
        self.aupimo = AupimoMetric(aupimo_bounds)
        self.without_mask = 0  # anomalous images left out: their mask is unknown

    def update(self, maps: Any, masks: Any, labels: Any, mask_known: Any = None,
               defect_types: list[str] | None = None) -> None:
        """Add a batch of maps and masks [B,H,W], labels [B]; `mask_known` [B] (None: all known)."""
        labels = to_numpy(labels).reshape(-1)
        known = np.ones(labels.shape[0], dtype=bool) if mask_known is None else to_numpy(mask_known).astype(bool)
        self.without_mask += int(np.sum(~known & (labels == 1)))
        if not known.any():
            return
        maps, masks = to_numpy(maps)[known], to_numpy(masks)[known]
        types = None if defect_types is None else [t for t, k in zip(defect_types, known) if k]
        self.pixel.update(maps, masks, types)
        self.aupimo.update(maps, masks, labels[known])

    def compute(self) -> dict[str, Any]:
        """`pixel_auroc`, `pixel_aupro`, `per_defect_pixel_auroc`, `aupimo` and `anomalous_without_mask`."""
        result: dict[str, Any] = dict(self.pixel.compute(self.fpr_limit))
        if self.pixel.has_masks:
            a = self.aupimo.compute()
            per_image = np.asarray(a["per_image"], dtype=np.float64)
            result["aupimo"] = {"mean": a["aupimo"], "std": float(per_image.std()) if per_image.size else float("nan"),
                                "images": a["images"], "fpr_bounds": list(self.aupimo.fpr_bounds)}
            if "reason" in a:
                result["aupimo"]["reason"] = a["reason"]
        result["anomalous_without_mask"] = self.without_mask
        return result
