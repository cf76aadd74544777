"""EfficientAD's own training loop (the spec names it as its trainer).

What the core's gradient trainer cannot do for it: hold out a part of the normal training images, normalise
the teacher's channels over the rest before training, draw a penalty image and a colour-jittered copy for
every step, and fix the map normalisation on the held-out images after training. It shares the core's
NaN/Inf guard, device handling and progress settings.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ad_core.settings import resolve_device, settings
from ad_core.training import seed_everything
from ad_core.training.gradient import check_finite
from ad_core.types import Batch, FitReport
from ad_kd.efficientad.augment import colour_jitter
from ad_kd.efficientad.model import EfficientAD, normalize_images
from ad_kd.efficientad.penalty import SUBSTITUTE_NOTE, penalty_source


@dataclass
class TeacherStatistics:
    """Per-image channel sums of the teacher's output, so the held-out images can be left out afterwards."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    squares: dict[str, torch.Tensor] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    batches: list[list[str]] = field(default_factory=list)

    def add(self, paths: list[str], features: torch.Tensor) -> None:
        f = features.double()
        for path, s, q in zip(paths, f.sum((2, 3)).cpu(), (f * f).sum((2, 3)).cpu()):
            self.sums[path], self.squares[path] = s, q
            self.counts[path] = features.shape[2] * features.shape[3]
        self.batches.append(list(paths))

    def mean_std(self, paths: Iterable[str]) -> tuple[torch.Tensor, torch.Tensor]:
        paths = list(paths)
        n = sum(self.counts[p] for p in paths)
        mean = torch.stack([self.sums[p] for p in paths]).sum(0) / n
        var = torch.stack([self.squares[p] for p in paths]).sum(0) / n - mean * mean
        return mean.float(), var.clamp_min(0).sqrt().float()


def held_out(paths: list[str], fraction: float) -> set[str]:
    """A random `fraction` of the training images (at least one, never all) for the map normalisation."""
    if len(paths) < 2 or fraction <= 0:
        return set()
    count = min(len(paths) - 1, max(1, round(fraction * len(paths))))
    order = torch.randperm(len(paths)).tolist()
    return {paths[i] for i in order[:count]}


class EfficientADTrainer:
    """Trains an `EfficientAD` as in the paper's Algorithm 1 (batch size 1 and 70,000 steps by default)."""

    def __init__(
        self,
        device: str | torch.device | None = None,
        num_epochs: int | None = None,
        max_steps: int | None = None,
        grad_clip: float | None = None,
        progress: bool | None = None,
        seed: int | None = None,
        **_: object,
    ) -> None:
        if num_epochs is None and max_steps is None:
            num_epochs = 1
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.num_epochs = num_epochs
        self.max_steps = max_steps
        self.grad_clip = grad_clip
        self.progress = settings.progress if progress is None else progress
        self.seed = seed

    def fit(self, model: EfficientAD, train: Iterable[Batch], val: Iterable[Batch] | None = None) -> FitReport:
        """`val` is not used: the paper normalises the maps on held-out normal training images instead."""
        start = time.perf_counter()
        if self.seed is not None:
            seed_everything(self.seed)
        model.to(self.device)
        notes: list[str] = []
        stats = self._teacher_pass(model, train)
        paths = sorted(stats.counts)
        if not paths:
            raise ValueError("the training set is empty: at least one normal image is needed")
        validation = held_out(paths, model.validation_fraction)
        if not validation:
            notes.append("EfficientAD: a single training image, so the maps were normalised on the training "
                         "image itself (the paper holds out a part of the training images)")
        mean, std = stats.mean_std(p for p in paths if p not in validation)
        model.set_teacher_statistics(mean.to(self.device), std.to(self.device))
        if model.imagenet_dir is None:
            warnings.warn(SUBSTITUTE_NOTE, stacklevel=2)
            notes.append(SUBSTITUTE_NOTE)
        penalty = penalty_source(model.imagenet_dir)
        steps_per_epoch = sum(1 for batch in stats.batches if any(p not in validation for p in batch))
        total = self.max_steps or 0
        if self.num_epochs is not None:
            total = min(total or math.inf, self.num_epochs * steps_per_epoch)
        optimizer, scheduler = model.configure_optimizers(int(total))
        history = self._train(model, train, validation, penalty, optimizer, scheduler, int(total))
        self._normalise_maps(model, train, validation)
        model.mark_fitted()
        return FitReport(
            seconds=time.perf_counter() - start,
            epochs=len(history),
            steps=int(history[-1]["step"]) if history else 0,
            history=history,
            extra={"validation_images": len(validation),
                   "penalty": "imagenet_dir" if model.imagenet_dir else "augmented training images"},
            notes=notes,
        )

    @torch.no_grad()
    def _teacher_pass(self, model: EfficientAD, train: Iterable[Batch]) -> TeacherStatistics:
        stats = TeacherStatistics()
        for batch in train:
            images = batch.image.to(self.device)
            stats.add(list(batch.path), model.teacher(normalize_images(images)))
        return stats

    def _train(self, model, train, validation, penalty, optimizer, scheduler, total: int) -> list[dict[str, float]]:
        history: list[dict[str, float]] = []
        step = epoch = 0
        bar = tqdm(total=total, desc="training", unit="step", disable=not self.progress, leave=False)
        model.train()
        while step < total:
            losses = []
            for batch in train:
                keep = [i for i, p in enumerate(batch.path) if p not in validation]
                if not keep:
                    continue
                images = batch.image[keep].to(self.device)
                out = model.losses(images, colour_jitter(images), penalty.sample(images))
                check_finite(out["loss"], epoch, step)
                optimizer.zero_grad(set_to_none=True)
                out["loss"].backward()
                if self.grad_clip:
                    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], self.grad_clip)
                optimizer.step()
                scheduler.step()
                losses.append({k: v.item() for k, v in out.items()})
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]['loss']:.4g}")
                if step >= total:
                    break
            epoch += 1
            history.append({"epoch": epoch, "step": step,
                            **{k: float(np.mean([loss[k] for loss in losses])) for k in losses[0]}})
        bar.close()
        model.eval()
        return history

    @torch.no_grad()
    def _normalise_maps(self, model: EfficientAD, train: Iterable[Batch], validation: set[str]) -> None:
        model.eval()
        local, global_ = [], []
        for batch in train:
            keep = [i for i, p in enumerate(batch.path) if not validation or p in validation]
            if keep:
                maps = model.raw_maps(batch.image[keep].to(self.device))
                local.append(maps[0].cpu())
                global_.append(maps[1].cpu())
        model.set_map_quantiles(torch.cat(local), torch.cat(global_))
