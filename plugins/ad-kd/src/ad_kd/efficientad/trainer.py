"""EfficientAD's own training loop (the spec names it as its trainer).

What the core's gradient trainer cannot do for it: hold out a part of the normal training images, normalise
the teacher's channels over the rest before training, draw a penalty image and a colour-jittered copy for
every step, and fix the map normalisation on the held-out images after training. It shares the core's
NaN/Inf guard, device handling, progress settings and resumable training state (`ad_core.training.state`).
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ad_core.settings import resolve_device, settings
from ad_core.training import seed_everything
from ad_core.training.gradient import check_finite
from ad_core.training.state import TrainingStateError, load_training_state, read_training_meta, save_training_state
from ad_core.types import Batch, FitReport
from ad_kd.efficientad.augment import colour_jitter
from ad_kd.efficientad.model import EfficientAD, normalize_images
from ad_kd.efficientad.penalty import SUBSTITUTE_NOTE, penalty_source

TRAINER = "efficientad"  # names the trainer in its saved state
CHECKPOINT_EVERY = 1000  # steps between saved states (about 1.4% of the paper's 70,000)


@dataclass
class TeacherStatistics:
    """Per-image channel sums of the teacher's output, so the held-out images can be left out afterwards.

    The sums are kept as Python floats, not as small tensors: a small tensor kept alive between the large
    feature maps freed at every image pins glibc's heap, and the process grew by the size of one feature map
    per training image (5.6 GB peak RSS on 762 images at 128 px instead of about 1 GB).
    """

    sums: dict[str, list[float]] = field(default_factory=dict)
    squares: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    batches: list[list[str]] = field(default_factory=list)

    def add(self, paths: list[str], features: torch.Tensor) -> None:
        f = features.double()
        sums, squares = f.sum((2, 3)).tolist(), (f * f).sum((2, 3)).tolist()
        for path, s, q in zip(paths, sums, squares):
            self.sums[path], self.squares[path] = s, q
            self.counts[path] = features.shape[2] * features.shape[3]
        self.batches.append(list(paths))

    def mean_std(self, paths: Iterable[str]) -> tuple[torch.Tensor, torch.Tensor]:
        paths = list(paths)
        n = sum(self.counts[p] for p in paths)
        mean = torch.tensor([self.sums[p] for p in paths], dtype=torch.float64).sum(0) / n
        var = torch.tensor([self.squares[p] for p in paths], dtype=torch.float64).sum(0) / n - mean * mean
        return mean.float(), var.clamp_min(0).sqrt().float()


def held_out(paths: list[str], fraction: float) -> set[str]:
    """A random `fraction` of the training images (at least one, never all) for the map normalisation."""
    if len(paths) < 2 or fraction <= 0:
        return set()
    count = min(len(paths) - 1, max(1, round(fraction * len(paths))))
    order = torch.randperm(len(paths)).tolist()
    return {paths[i] for i in order[:count]}


@dataclass
class Progress:
    """Where training stands, saved with the state: steps, finished epochs, and the steps and loss sums of the
    epoch under way (so its history record is whole after a resume)."""

    step: int = 0
    epoch: int = 0
    epoch_step: int = 0
    sums: dict[str, float] = field(default_factory=dict)

    def add(self, losses: dict[str, float]) -> None:
        self.step += 1
        self.epoch_step += 1
        for key, value in losses.items():
            self.sums[key] = self.sums.get(key, 0.0) + value

    def close_epoch(self) -> dict[str, float]:
        self.epoch += 1
        record = {"epoch": self.epoch, "step": self.step,
                  **{key: total / max(self.epoch_step, 1) for key, total in self.sums.items()}}
        self.epoch_step, self.sums = 0, {}
        return record

    def meta(self) -> dict[str, object]:
        return {"step": self.step, "epoch": self.epoch, "epoch_step": self.epoch_step, "epoch_loss_sums": self.sums}

    @classmethod
    def from_meta(cls, meta: dict) -> Progress:
        return cls(int(meta["step"]), int(meta["epoch"]), int(meta["epoch_step"]), dict(meta["epoch_loss_sums"]))


def training_set_digest(paths: Iterable[str]) -> str:
    """A fingerprint of the training images, so a resumed run is known to train on the saved run's data."""
    return hashlib.sha256("\n".join(sorted(paths)).encode()).hexdigest()


class EfficientADTrainer:
    """Trains an `EfficientAD` as in the paper's Algorithm 1 (batch size 1 and 70,000 steps by default).

    With a `checkpoint_dir` it saves its state every `checkpoint_every` steps and at the end of training
    (`ad_core.training.state`); `resume=True` continues a saved run to the same total instead of starting over.
    """

    def __init__(
        self,
        device: str | torch.device | None = None,
        num_epochs: int | None = None,
        max_steps: int | None = None,
        grad_clip: float | None = None,
        progress: bool | None = None,
        seed: int | None = None,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        checkpoint_every: int | None = None,
        **_: object,
    ) -> None:
        if num_epochs is None and max_steps is None:
            num_epochs = 1
        every = CHECKPOINT_EVERY if checkpoint_every is None else checkpoint_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"checkpoint_every must be a positive whole number of steps, got {checkpoint_every!r}")
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.num_epochs = num_epochs
        self.max_steps = max_steps
        self.grad_clip = grad_clip
        self.progress = settings.progress if progress is None else progress
        self.seed = seed
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.resume = resume
        self.checkpoint_every = every

    def fit(self, model: EfficientAD, train: Iterable[Batch], val: Iterable[Batch] | None = None) -> FitReport:
        """`val` is not used: the paper normalises the maps on held-out normal training images instead."""
        start = time.perf_counter()
        if self.seed is not None:
            seed_everything(self.seed)
        model.to(self.device)
        notes: list[str] = []
        saved = read_training_meta(self.checkpoint_dir) if self.resume else None
        if saved is None:
            stats = self._teacher_pass(model, train)
            batches, paths = stats.batches, sorted(stats.counts)
        else:  # the teacher statistics are in the saved model: only the paths are needed
            batches = [list(batch.path) for batch in train]
            paths = sorted({path for batch in batches for path in batch})
        if not paths:
            raise ValueError("the training set is empty: at least one normal image is needed")
        if saved is None:
            validation = held_out(paths, model.validation_fraction)
            mean, std = stats.mean_std(p for p in paths if p not in validation)
            model.set_teacher_statistics(mean.to(self.device), std.to(self.device))
        else:
            self._check_saved(saved, paths, len(batches))
            validation = set(saved["held_out"])
        if not validation:
            notes.append("EfficientAD: a single training image, so the maps were normalised on the training "
                         "image itself (the paper holds out a part of the training images)")
        if model.imagenet_dir is None:
            warnings.warn(SUBSTITUTE_NOTE, stacklevel=2)
            notes.append(SUBSTITUTE_NOTE)
        penalty = penalty_source(model.imagenet_dir)
        total = int(saved["total_steps"]) if saved else self._total_steps(batches, validation)
        optimizer, scheduler = model.configure_optimizers(total)
        progress = Progress()
        if saved is not None:
            progress = Progress.from_meta(load_training_state(self.checkpoint_dir, model, optimizer, scheduler))
            notes.append(f"EfficientAD: resumed from step {progress.step} of {total} ({self.checkpoint_dir})")
        run = {"trainer": TRAINER, "max_steps": self.max_steps, "num_epochs": self.num_epochs,
               "total_steps": total, "batches_per_epoch": len(batches), "training_images": len(paths),
               "training_set": training_set_digest(paths), "held_out": sorted(validation)}
        resumed_at = progress.step
        history = self._train(model, train, validation, penalty, optimizer, scheduler, total, progress, run)
        self._normalise_maps(model, train, validation)
        model.mark_fitted()
        extra = {"validation_images": len(validation),
                 "penalty": "imagenet_dir" if model.imagenet_dir else "augmented training images"}
        if saved is not None:
            extra["resumed_from_step"] = resumed_at
        return FitReport(seconds=time.perf_counter() - start, epochs=progress.epoch, steps=progress.step,
                         history=history, extra=extra, notes=notes)

    def _total_steps(self, batches: list[list[str]], validation: set[str]) -> int:
        steps_per_epoch = sum(1 for batch in batches if any(p not in validation for p in batch))
        total = self.max_steps or 0
        if self.num_epochs is not None:
            total = min(total or math.inf, self.num_epochs * steps_per_epoch)
        return int(total)

    def _check_saved(self, saved: dict, paths: list[str], batches_per_epoch: int) -> None:
        """Refuse to resume a state this run would silently mix with its own images or settings."""
        restart = f"Resume with the saved run's data and settings, or delete {self.checkpoint_dir} to start over."
        if saved.get("trainer") != TRAINER:
            raise TrainingStateError(f"{self.checkpoint_dir} holds a training state not written by EfficientAD's "
                                     f"trainer. {restart}")
        missing = sorted(set(saved["held_out"]) - set(paths))
        if missing:
            raise TrainingStateError(
                f"{len(missing)} of the saved run's held-out images are not in this run's training set "
                f"(e.g. {missing[0]}): its maps would be normalised on other images. {restart}")
        if saved["training_set"] != training_set_digest(paths):
            raise TrainingStateError(
                f"this run's {len(paths)} training images are not the {saved['training_images']} the saved run "
                f"trained on. {restart}")
        for key, now in (("max_steps", self.max_steps), ("num_epochs", self.num_epochs),
                         ("batches_per_epoch", batches_per_epoch)):
            if saved[key] != now:
                hint = " (another batch_size?)" if key == "batches_per_epoch" else ""
                raise TrainingStateError(
                    f"the saved run has {key}={saved[key]} ({saved['total_steps']} steps in all), this run "
                    f"{key}={now}{hint}. {restart}")

    def _save(self, model, optimizer, scheduler, progress: Progress, run: dict) -> None:
        if self.checkpoint_dir is not None:
            save_training_state(self.checkpoint_dir, model, optimizer, scheduler, {**run, **progress.meta()})

    @torch.no_grad()
    def _teacher_pass(self, model: EfficientAD, train: Iterable[Batch]) -> TeacherStatistics:
        stats = TeacherStatistics()
        for batch in train:
            images = batch.image.to(self.device)
            stats.add(list(batch.path), model.teacher(normalize_images(images)))
        return stats

    def _train(self, model, train, validation, penalty, optimizer, scheduler, total: int, progress: Progress,
               run: dict) -> list[dict[str, float]]:
        history: list[dict[str, float]] = []
        bar = tqdm(total=total, initial=progress.step, desc="training", unit="step", disable=not self.progress,
                   leave=False)
        skip = progress.epoch_step  # a resumed epoch goes on after the batches it had trained on
        model.train()
        while progress.step < total:
            for batch in train:
                keep = [i for i, p in enumerate(batch.path) if p not in validation]
                if not keep:
                    continue
                if skip:
                    skip -= 1
                    continue
                images = batch.image[keep].to(self.device)
                out = model.losses(images, colour_jitter(images), penalty.sample(images))
                check_finite(out["loss"], progress.epoch, progress.step)
                optimizer.zero_grad(set_to_none=True)
                out["loss"].backward()
                if self.grad_clip:
                    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], self.grad_clip)
                optimizer.step()
                scheduler.step()
                losses = {k: v.item() for k, v in out.items()}
                progress.add(losses)
                bar.update(1)
                bar.set_postfix(loss=f"{losses['loss']:.4g}")
                if progress.step >= total:
                    break
                if progress.step % self.checkpoint_every == 0:
                    self._save(model, optimizer, scheduler, progress, run)
            skip = 0
            history.append(progress.close_epoch())
        bar.close()
        self._save(model, optimizer, scheduler, progress, run)
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
