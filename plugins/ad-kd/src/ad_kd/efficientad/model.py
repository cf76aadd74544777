"""EfficientAD (Batzner, Heckler, König, "EfficientAD: Accurate Visual Anomaly Detection at Millisecond-Level
Latencies", WACV 2024).

A frozen teacher PDN (distilled from a pretrained backbone) describes 33x33 patches; a student PDN with twice
the channels learns, on normal images, to predict the teacher's normalised features (first half) and an
autoencoder's output (second half). The local map is the teacher-student difference, the global map the
autoencoder-student difference; each is normalised by its 0.9 and 0.995 quantiles on held-out normal images and
the two are averaged. The image score is the maximum of the combined map.

Trained by the core's gradient trainer through the hooks: `on_fit_start` measures the teacher's channel
statistics and holds out `validation_fraction` of the training images, `training_step` draws a penalty image
and a colour-jittered copy per image, and `on_fit_end` fixes the map normalisation on the held-out images.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ad_core.backbones import MissingWeightsError, WeightsMismatchError, read_state_dict
from ad_core.data.transforms import to_size
from ad_core.model import AnomalyModel
from ad_core.preprocessing import IMAGENET_MEAN, IMAGENET_STD, normalize
from ad_core.training import StepContext, TrainingPlan
from ad_core.types import Batch
from ad_kd.efficientad.augment import colour_jitter
from ad_kd.efficientad.fitting import TeacherStatistics, held_out, training_set_digest
from ad_kd.efficientad.networks import OUT_CHANNELS, AutoEncoder, build_pdn, check_image_size
from ad_kd.efficientad.penalty import SUBSTITUTE_NOTE, penalty_source

# torch.quantile refuses tensors above 2**24 elements; kthvalue has no such limit.
QUANTILE_LIMIT = 1 << 24
UNPADDED_MAP_BORDER = 4  # the unpadded PDN's map lacks 4 features per side of the padded one's


def quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """The q-quantile of all elements, linearly interpolated (torch.quantile's definition, any size)."""
    flat = values.detach().reshape(-1)
    if flat.numel() <= QUANTILE_LIMIT:
        return torch.quantile(flat, q)
    position = q * (flat.numel() - 1)
    low = int(position)
    below = flat.kthvalue(low + 1).values
    above = flat.kthvalue(min(low + 2, flat.numel())).values
    return below + (above - below) * (position - low)


def hard_feature_loss(distance: torch.Tensor, q: float = 0.999) -> torch.Tensor:
    """Mean of the squared differences at or above their q-quantile (the paper's hard-feature loss, Eq. 1)."""
    threshold = quantile(distance, q)
    return distance[distance >= threshold].mean()


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """The pre-processor's ImageNet normalisation, applied inside the model: the networks expect it, but the
    augmentations work on [0,1] images, so EfficientAD's spec keeps the detector's pre-processor the identity."""
    return normalize(images, IMAGENET_MEAN, IMAGENET_STD)


def load_teacher(teacher: torch.nn.Module, path: str | Path) -> None:
    """Copy a teacher PDN's weights from a file, key by key, or say exactly what does not fit."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingWeightsError(f"teacher weights file {path} does not exist")
    state = read_state_dict(path)
    if not any(key in state for key in teacher.state_dict()):
        state = {key.split(".", 1)[1]: value for key, value in state.items() if key.startswith("teacher.")}
    own = teacher.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{key} {tuple(state[key].shape)} != {tuple(own[key].shape)}"
             for key in own if key in state and state[key].shape != own[key].shape]
    if missing or unexpected or wrong:
        raise WeightsMismatchError(
            f"{path} does not fit this teacher PDN: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"other shapes {wrong[:2]} (was it distilled for another size, small or medium?)"
        )
    teacher.load_state_dict({key: value.to(own[key].dtype) for key, value in state.items()}, strict=True)


class EfficientAD(AnomalyModel):
    """EfficientAD-S or -M; see the module docstring. Takes [0,1] images (it normalises them itself)."""

    def __init__(
        self,
        size: str = "small",
        image_size: int | tuple[int, int] = 256,
        pretrained: bool = True,
        teacher_weights: str | None = None,
        imagenet_dir: str | None = None,
        padding: bool = True,
        out_channels: int = OUT_CHANNELS,
        lr: float = 1e-4,
        weight_decay: float = 1e-5,
        lr_drop_fraction: float = 0.95,
        hard_quantile: float = 0.999,
        map_quantiles: tuple[float, float] = (0.9, 0.995),
        validation_fraction: float = 0.1,
        ae_dropout: float = 0.2,
    ) -> None:
        super().__init__()
        height, width = to_size(image_size)
        check_image_size(height, width)
        self.size = size
        self.channels = out_channels
        self.padding = padding
        self.imagenet_dir = imagenet_dir
        self.lr, self.weight_decay, self.lr_drop_fraction = lr, weight_decay, lr_drop_fraction
        self.hard_quantile = hard_quantile
        self.map_quantiles = tuple(map_quantiles)
        self.validation_fraction = validation_fraction
        self.teacher = build_pdn(size, out_channels, padding)
        self.student = build_pdn(size, 2 * out_channels, padding)
        self.ae = AutoEncoder((height, width), out_channels, padding, ae_dropout)
        # pretrained=False skips the file, as for every backbone (tests; a checkpoint holds the teacher itself).
        if pretrained and teacher_weights is not None:
            load_teacher(self.teacher, teacher_weights)
        elif pretrained:
            raise MissingWeightsError(
                "EfficientAD needs a pretrained teacher PDN and none was given. Either pass "
                "teacher_weights=<file> (.safetensors, or a .pth state dict), or distil one offline from a "
                f"backbone over a folder of images: `adcore efficientad-distill --images DIR --size {size} "
                "--out teacher.safetensors`. pretrained=False uses a random teacher (tests only)."
            )
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.register_buffer("teacher_mean", torch.zeros(1, out_channels, 1, 1))
        self.register_buffer("teacher_std", torch.ones(1, out_channels, 1, 1))
        self.register_buffer("st_quantiles", torch.tensor([0.0, 1.0]))  # (q_a, q_b) of the local map
        self.register_buffer("ae_quantiles", torch.tensor([0.0, 1.0]))  # (q_a, q_b) of the global map
        # Set by `on_fit_start` for one fit: held-out image paths, penalty source, notes, data fingerprint.
        self._held_out: set[str] = set()
        self._penalty: Any = None
        self._notes: list[str] = []
        self._data: dict[str, Any] = {}

    def train(self, mode: bool = True) -> EfficientAD:
        super().train(mode)
        self.teacher.eval()  # frozen whatever the mode
        return self

    # -- training (the core trainer's hooks) ---------------------------------------------------
    def on_fit_start(self, loader: Iterable[Batch]) -> None:
        """Hold out a part of the training images and normalise the teacher's channels over the rest."""
        device = self.teacher_mean.device
        stats = TeacherStatistics()
        with torch.no_grad():
            for batch in loader:
                stats.add(list(batch.path), self.teacher(normalize_images(batch.image.to(device))))
        paths = sorted(stats.counts)
        self._held_out = held_out(paths, self.validation_fraction)
        mean, std = stats.mean_std(p for p in paths if p not in self._held_out)
        self.set_teacher_statistics(mean.to(device), std.to(device))
        self._data = {"training_images": len(paths), "training_set": training_set_digest(paths),
                      "held_out": sorted(self._held_out)}
        self._notes = []
        if not self._held_out:
            self._notes.append("EfficientAD: a single training image, so the maps were normalised on the training "
                               "image itself (the paper holds out a part of the training images)")
        if self.imagenet_dir is None:
            warnings.warn(SUBSTITUTE_NOTE, stacklevel=2)
            self._notes.append(SUBSTITUTE_NOTE)
        self._penalty = penalty_source(self.imagenet_dir)

    def configure_optimizers(self, plan: TrainingPlan) -> dict[str, Any]:
        """Adam on student and autoencoder; the learning rate drops tenfold after `lr_drop_fraction` of the steps."""
        params = [*self.student.parameters(), *self.ae.parameters()]
        optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        drop = max(1, int(self.lr_drop_fraction * plan.total_steps))
        return {"optimizer": optimizer, "scheduler": torch.optim.lr_scheduler.StepLR(optimizer, drop, gamma=0.1),
                "interval": "step"}

    def training_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor | None:
        """The paper's Algorithm 1 on the batch's images that are not held out (None when all are)."""
        keep = [i for i, path in enumerate(batch.path) if path not in self._held_out]
        if not keep:
            return None
        images = batch.image[keep]
        out = self.losses(images, colour_jitter(images), self._penalty.sample(images))
        ctx.log(**{name: value.item() for name, value in out.items() if name != "loss"})
        return out["loss"]

    @torch.no_grad()
    def on_fit_end(self, loader: Iterable[Batch]) -> None:
        """Fix the map normalisation on the held-out images (all images when none is held out)."""
        local, global_ = [], []
        for batch in loader:
            keep = [i for i, p in enumerate(batch.path) if not self._held_out or p in self._held_out]
            if keep:
                maps = self.raw_maps(batch.image[keep].to(self.teacher_mean.device))
                local.append(maps[0].cpu())
                global_.append(maps[1].cpu())
        self.set_map_quantiles(torch.cat(local), torch.cat(global_))

    def fit_fingerprint(self) -> dict[str, Any]:
        """The training images and the held-out ones: a resumed run must use the same."""
        return dict(self._data)

    def fit_notes(self) -> list[str]:
        return list(self._notes)

    @torch.no_grad()
    def teacher_features(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's features, normalised by the channel statistics of the training images."""
        return (self.teacher(normalize_images(images)) - self.teacher_mean) / self.teacher_std

    def set_teacher_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.teacher_mean.copy_(mean.view_as(self.teacher_mean))
        self.teacher_std.copy_(std.clamp_min(1e-12).view_as(self.teacher_std))

    def losses(self, images: torch.Tensor, augmented: torch.Tensor, penalty: torch.Tensor) -> dict[str, torch.Tensor]:
        """The paper's three losses for [0,1] images, their colour-jittered copies and penalty images.

        The student sees the three batches in one pass and the teacher the two it needs in another: the PDNs have
        no batch statistics, so this is exactly the separate passes, only faster.
        """
        self.ae.check_input(*images.shape[-2:])
        c, b = self.channels, images.shape[0]
        student = self.student(normalize_images(torch.cat([images, penalty, augmented])))
        target = self.teacher_features(torch.cat([images, augmented]))
        target_image, target_aug = target[:b], target[b:]
        loss_hard = hard_feature_loss((target_image - student[:b, :c]) ** 2, self.hard_quantile)
        loss_penalty = (student[b : 2 * b, :c] ** 2).mean()
        ae = self.ae(normalize_images(augmented))
        loss_ae = ((target_aug - ae) ** 2).mean()
        loss_stae = ((ae - student[2 * b :, c:]) ** 2).mean()
        total = loss_hard + loss_penalty + loss_ae + loss_stae
        return {"loss": total, "hard": loss_hard, "penalty": loss_penalty, "ae": loss_ae, "stae": loss_stae}

    # -- scoring -------------------------------------------------------------------------------
    def raw_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Local (teacher-student) and global (autoencoder-student) maps [B,H,W] at the input size, unnormalised."""
        self.ae.check_input(*images.shape[-2:])
        c = self.channels
        x = normalize_images(images)
        target = (self.teacher(x) - self.teacher_mean) / self.teacher_std
        student = self.student(x)
        maps = torch.stack([((target - student[:, :c]) ** 2).mean(1), ((self.ae(x) - student[:, c:]) ** 2).mean(1)],
                           dim=1)
        if not self.padding:
            maps = F.pad(maps, (UNPADDED_MAP_BORDER,) * 4)
        maps = F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return maps[:, 0], maps[:, 1]

    def set_map_quantiles(self, local_maps: torch.Tensor, global_maps: torch.Tensor) -> None:
        """Fix the normalisation of both maps from maps of held-out normal images."""
        qa, qb = self.map_quantiles
        self.st_quantiles.copy_(torch.stack([quantile(local_maps, qa), quantile(local_maps, qb)]))
        self.ae_quantiles.copy_(torch.stack([quantile(global_maps, qa), quantile(global_maps, qb)]))

    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        local, global_ = self.raw_maps(images)
        (sa, sb), (aa, ab) = self.st_quantiles, self.ae_quantiles
        # q_a maps to 0 and q_b to 0.1 (the paper's normalisation), then the two maps are averaged.
        combined = 0.5 * 0.1 * (local - sa) / (sb - sa).clamp_min(1e-12) + 0.5 * 0.1 * (global_ - aa) / (
            ab - aa
        ).clamp_min(1e-12)
        return combined.amax(dim=(-2, -1)), combined
