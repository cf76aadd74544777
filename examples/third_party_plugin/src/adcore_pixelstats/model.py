"""A per-pixel Gaussian over normal images: the map is the squared z-score averaged over colour channels."""

import torch

from ad_core.plugin_api import AnomalyModel, Batch, gaussian_blur


class PixelStats(AnomalyModel):
    def __init__(self, sigma: float = 0.0) -> None:
        super().__init__()
        self.sigma = sigma
        self.register_buffer("mean", torch.empty(0))
        self.register_buffer("std", torch.empty(0))
        self._reset_sums()

    def _reset_sums(self) -> None:
        """The running sums live only during a fit (not in the checkpoint), and every fit starts from zero."""
        self.count = 0
        self.total: torch.Tensor | None = None
        self.total_sq: torch.Tensor | None = None

    def update(self, batch: Batch) -> None:
        images = batch.image.double()
        if self.total is None:
            self.total = torch.zeros_like(images[0])
            self.total_sq = torch.zeros_like(images[0])
        self.total += images.sum(0)
        self.total_sq += (images**2).sum(0)
        self.count += images.shape[0]

    def finalize(self) -> None:
        mean = self.total / self.count
        var = (self.total_sq / self.count - mean**2).clamp_min(1e-6)
        self.mean, self.std = mean.float(), var.sqrt().float()
        self._reset_sums()
        self.mark_fitted()

    def compute(self, images: torch.Tensor):
        amap = (((images - self.mean) / self.std) ** 2).mean(1)
        amap = gaussian_blur(amap, self.sigma)
        return amap.flatten(1).amax(1), amap
