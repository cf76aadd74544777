"""Each member's statistics on normal training images: what makes the members' outputs comparable."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ad_core.api import Batch, ImageTransform, Prediction, Sample, collect_images, read_image
from ad_core.ensemble.model import EnsembleModel
from ad_core.ensemble.normalization import NormalStats


class NormalImages(Dataset):
    """A folder of normal images held out from the members' training: unbiased normal statistics."""

    def __init__(self, folder: str | Path, image_size: int | tuple[int, int]) -> None:
        self.paths = collect_images([Path(folder)])
        self.transform = ImageTransform(image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Sample:
        path = self.paths[index]
        return Sample(image=self.transform(read_image(path)), label=0, mask=None, path=str(path), category="normal")


def member_outputs_on(model: EnsembleModel, loader: Iterable[Batch], device: torch.device) -> list[Prediction]:
    """Every member's raw predictions on all images of `loader`, concatenated (maps on the CPU)."""
    with torch.inference_mode():
        per_batch = [[p.to("cpu") for p in model.member_outputs(batch.image.to(device))] for batch in loader]
    if not per_batch:
        raise ValueError("no normal images to compute the members' statistics on")
    outputs = []
    for i in range(len(model.members)):
        preds = [batch[i] for batch in per_batch]
        maps = None if preds[0].anomaly_map is None else torch.cat([p.anomaly_map for p in preds])
        outputs.append(Prediction(score=torch.cat([p.score for p in preds]), anomaly_map=maps))
    return outputs


def fit_normal_stats(model: EnsembleModel, normal: list[Prediction]) -> None:
    """Store, per member, the statistics of its scores and map pixels on normal images."""
    device = next(model.buffers()).device
    model.score_stats = torch.nn.ModuleList([NormalStats.fit(p.score).to(device) for p in normal])
    model.map_stats = torch.nn.ModuleDict({
        str(i): NormalStats.fit(p.anomaly_map).to(device) for i, p in enumerate(normal) if p.anomaly_map is not None
    })
