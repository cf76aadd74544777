"""The ensemble as a model: run every member at its own image size, normalise, fuse."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ad_core.api import Detector, Prediction, check_images, resize_map, to_size
from ad_core.ensemble.fusion import check_rule, fuse
from ad_core.ensemble.normalization import NormalStats


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of [B,3,H,W] images (antialiased when shrinking); a no-op at the same size."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0.0, 1.0)


class EnsembleModel(nn.Module):
    """Trained detectors fused into one: `predict` takes [0,1] images and returns fused scores and maps.

    Every member sees the images resized to its own size; its maps come back at the input's size. Members
    without maps take part in the score only. `score_stats[i]` / `map_stats[str(i)]` are member i's statistics
    on normal images; `fusion` is one of `FUSION_RULES` and may be changed after construction.
    """

    def __init__(self, members: Sequence[Detector], member_sizes: Sequence[int | Sequence[int]],
                 score_stats: Sequence[NormalStats] | None = None,
                 map_stats: dict[str, NormalStats] | None = None, fusion: str = "mean") -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        if len(member_sizes) != len(members):
            raise ValueError("need one image size per member")
        self.members = nn.ModuleList(members)
        self.member_sizes = [to_size(s) for s in member_sizes]
        self.score_stats = nn.ModuleList(score_stats or [])
        self.map_stats = nn.ModuleDict(map_stats or {})
        self.fusion = check_rule(fusion)
        self._memo: dict[tuple, list[Prediction]] | None = None

    @property
    def calibrated(self) -> bool:
        return len(self.score_stats) == len(self.members)

    @contextlib.contextmanager
    def reusing_member_outputs(self) -> Iterator[None]:
        """Within the block, images seen before get the members' outputs from memory, so evaluating every
        fusion rule on one test set runs the members once. The memory holds every map: use it for one test set."""
        self._memo = {}
        try:
            yield
        finally:
            self._memo = None

    def member_outputs(self, images: torch.Tensor) -> list[Prediction]:
        """Each member's raw prediction, maps resized to the input's size."""
        check_images(images)
        if self._memo is None:
            return self._run_members(images)
        pixels = images.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
        key = (tuple(images.shape), str(images.device), hashlib.blake2b(pixels, digest_size=16).hexdigest())
        if key not in self._memo:
            self._memo[key] = self._run_members(images)
        return self._memo[key]

    def _run_members(self, images: torch.Tensor) -> list[Prediction]:
        size = images.shape[-2:]
        outputs = []
        for member, member_size in zip(self.members, self.member_sizes):
            pred = member.predict(resize_images(images, member_size))
            amap = None if pred.anomaly_map is None else resize_map(pred.anomaly_map, size)
            outputs.append(Prediction(score=pred.score, anomaly_map=amap))
        return outputs

    def fuse_outputs(self, outputs: Sequence[Prediction], rule: str | None = None) -> Prediction:
        """Fuse the members' raw predictions with the stored statistics and `rule` (default: `self.fusion`)."""
        if not self.calibrated:
            raise RuntimeError("the ensemble has no normal statistics yet: build it with ad_core.build_ensemble "
                               "or load it with ad_core.load_model")
        rule = check_rule(rule or self.fusion)
        score = fuse([o.score for o in outputs], list(self.score_stats), rule)
        with_maps = [i for i, o in enumerate(outputs) if o.anomaly_map is not None and str(i) in self.map_stats]
        amap = None
        if with_maps:
            amap = fuse([outputs[i].anomaly_map for i in with_maps], [self.map_stats[str(i)] for i in with_maps],
                        rule)
        return Prediction(score=score.float(), anomaly_map=None if amap is None else amap.float())

    def fixed_thresholds(self) -> dict[str, float]:
        """An ensemble sets no threshold by itself (`ad_core.protocols.Model`)."""
        return {}

    def predict(self, images: torch.Tensor) -> Prediction:
        with torch.inference_mode():
            return self.fuse_outputs(self.member_outputs(images))
