"""SuperSimpleNet (Rolih, Fučka and Skočaj, "SuperSimpleNet: Unifying Unsupervised and Supervised Learning for
Fast and Reliable Surface Defect Detection", ICPR 2024, and its journal extension).

A frozen backbone's layer2 and layer3 features, both upscaled to twice layer2's size, concatenated and 3x3
average-pooled, pass a 1x1 feature adaptor. During training the batch is doubled and Gaussian noise (σ 0.015) is
added to the adapted (and raw) features inside binarised Perlin masks (threshold 0.2; each mask dropped with
probability 1/2). A segmentation head (1x1 convolutions) gives the anomaly map; a classification head reads the raw
features with the map and gives the image score. Loss: focal + truncated L1 on the map, focal on the score.

Supervised mode (the paper's second setting): real defective images with masks are mixed into every batch and the
classification head's gradient also reaches the segmentation head (no stop-gradient); the variant
`supersimplenet-supervised` also clips gradients to norm 1 (run key `grad_clip`), as the authors do.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ad_core.plugin_api import AnomalyModel, BackboneConfig, Batch, StepContext, TrainingPlan, gaussian_blur
from ad_core.plugin_api import components
from ad_synth.defects import DefectSet, defect_pairs, read_defects

# The pre-processing the spec declares (ImageNet statistics): defect images read from a folder get it too.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _init_weights(module: nn.Module) -> None:
    """The authors' initialisation: Xavier-normal convolution and linear weights, BatchNorm weights 1."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.xavier_normal_(module.weight)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.constant_(module.weight, 1)


class UpscaledFeatures(nn.Module):
    """Frozen layer2+layer3 features, each resized to twice layer2's size, concatenated, 3x3 average-pooled."""

    def __init__(self, config: BackboneConfig, patch_size: int = 3) -> None:
        super().__init__()
        self.backbone = config.frozen()
        self.channels = sum(self.backbone.channels)
        self.pool = nn.AvgPool2d(patch_size, stride=1, padding=patch_size // 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)
        h, w = features[0].shape[-2:]
        resized = [F.interpolate(f, size=(2 * h, 2 * w), mode="bilinear") for f in features]
        return self.pool(torch.cat(resized, dim=1))


class SegmentationDetection(nn.Module):
    """The segmentation head (map logits) and the classification head (score logit) over the map and features."""

    def __init__(self, channels: int, stop_grad: bool, hidden: int = 1024, cls_hidden: int = 128) -> None:
        super().__init__()
        self.stop_grad = stop_grad
        self.seg_head = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(hidden, 1, 1, bias=False))
        self.cls_conv = nn.Sequential(
            nn.Conv2d(channels + 1, cls_hidden, 5, padding="same"), nn.BatchNorm2d(cls_hidden),
            nn.ReLU(inplace=True))
        self.cls_fc = nn.Linear(2 * cls_hidden + 2, 1)
        self.apply(_init_weights)

    def forward(self, seg_features: torch.Tensor, cls_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map logits [B, 1, h, w] and score logits [B]."""
        amap = self.seg_head(seg_features)
        read = amap.detach() if self.stop_grad else amap
        decoded = self.cls_conv(torch.cat((cls_features, read), dim=1))
        pooled = torch.cat((decoded.amax(dim=(2, 3)), decoded.mean(dim=(2, 3)),
                            read.amax(dim=(2, 3)), read.mean(dim=(2, 3))), dim=1)
        return amap, self.cls_fc(pooled).squeeze(1)


def perlin_feature_masks(count: int, size: tuple[int, int], threshold: float,
                         generator: torch.Generator) -> torch.Tensor:
    """`count` binary masks [count, 1, h, w]: Perlin noise drawn at the next powers of two (2^0..2^5 cells per
    axis), rescaled to [-1, 1] when nothing exceeds `threshold`, resized bilinearly, thresholded; each mask is
    then emptied with probability 1/2 (the authors' generator: half the copies stay normal)."""
    h, w = size
    ph, pw = 1 << (h - 1).bit_length(), 1 << (w - 1).bit_length()
    masks = []
    for _ in range(count):
        exponents = torch.randint(0, 6, (2,), generator=generator)
        noise = components.perlin_noise((ph, pw), (2 ** int(exponents[0]), 2 ** int(exponents[1])), generator)
        if not (noise > threshold).any():
            noise = 2 * (noise - noise.min()) / (noise.max() - noise.min()) - 1
        noise = F.interpolate(noise.view(1, 1, ph, pw), size=(h, w), mode="bilinear")
        mask = (noise > threshold).float()
        if float(torch.rand(1, generator=generator)) > 0.5:
            mask = torch.zeros_like(mask)
        masks.append(mask)
    return torch.cat(masks)


def inject_anomalies(features: torch.Tensor | None, adapted: torch.Tensor, masks: torch.Tensor,
                     labels: torch.Tensor, noise: torch.Tensor,
                     perlin: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Double the batch and add `noise` [2B, C, h, w] where `perlin` [2B, 1, h, w] is 1 and no real defect is.

    Returns the noised raw features (None if not given), noised adapted features, the union masks [2B, 1, h, w]
    and labels [2B] (1 where a real or a synthetic defect is)."""
    adapted = torch.cat((adapted, adapted))
    masks, labels = torch.cat((masks, masks)), torch.cat((labels, labels)).float()
    noise_mask = (1 - masks) * perlin.to(masks)
    masks = (masks + noise_mask > 0).float()
    labels = ((labels + noise_mask.flatten(1).any(dim=1).float()) > 0).float()
    noised_adapted = adapted + noise * noise_mask
    noised = None if features is None else torch.cat((features, features)) + noise * noise_mask
    return noised, noised_adapted, masks, labels


def sigmoid_focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 4.0) -> torch.Tensor:
    """Mean focal loss of sigmoid logits, without class weighting: BCE · (1 - p_t)^gamma."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    return (ce * (1 - p_t) ** gamma).mean()


def truncated_l1(logits: torch.Tensor, target: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """mean(max(0, x + m)) over normal positions + mean(max(0, m - x)) over anomalous ones (0 for an empty set)."""
    normal, anomalous = logits[target == 0], logits[target > 0]
    loss = logits.new_zeros(())
    if normal.numel():
        loss = loss + (normal + margin).clamp(min=0).mean()
    if anomalous.numel():
        loss = loss + (margin - anomalous).clamp(min=0).mean()
    return loss


def ssn_loss(map_logits: torch.Tensor, score_logits: torch.Tensor, masks: torch.Tensor,
             labels: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """The authors' loss: focal + truncated L1 on the map, focal on the image score."""
    return (sigmoid_focal_loss(map_logits, masks) + truncated_l1(map_logits, masks, margin)
            + sigmoid_focal_loss(score_logits, labels))


def downsample_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pixel masks [B, H, W] to feature masks [B, 1, h, w]: bilinear, then 1 where at least 0.5."""
    small = F.interpolate(masks.float().unsqueeze(1), size=size, mode="bilinear")
    return (small >= 0.5).float()


class SuperSimpleNet(AnomalyModel):
    """SuperSimpleNet in its unsupervised (synthetic anomalies) or supervised (plus real defects) mode."""

    def __init__(
        self,
        backbone: str = "wide_resnet50_2",
        layers: Sequence[str | int] = ("layer2", "layer3"),
        pretrained: bool = True,
        weights_file: str | None = None,
        backbone_dir: str | None = None,
        supervised: bool = False,
        defect_dir: str | None = None,
        noise_std: float = 0.015,
        perlin_threshold: float = 0.2,
        adapt_cls_features: bool = False,
        adaptor_lr: float = 1e-4,
        head_lr: float = 2e-4,
        head_weight_decay: float = 1e-5,
        lr_gamma: float = 0.4,
        lr_milestones: Sequence[float] = (0.8, 0.9),
        sigma: float = 4.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if defect_dir is not None and not supervised:
            raise ValueError("defect_dir is read in the supervised mode only: set supervised=True "
                             "(the supersimplenet-supervised variant) or drop defect_dir")
        self.features = UpscaledFeatures(BackboneConfig(backbone, layers, pretrained, weights_file, backbone_dir))
        channels = self.features.channels
        self.adaptor = nn.Conv2d(channels, channels, 1)
        self.adaptor.apply(_init_weights)
        self.segdec = SegmentationDetection(channels, stop_grad=not supervised)
        self.supervised, self.defect_dir = bool(supervised), defect_dir
        self.noise_std, self.perlin_threshold = float(noise_std), float(perlin_threshold)
        self.adapt_cls_features = bool(adapt_cls_features)
        self.adaptor_lr, self.head_lr = float(adaptor_lr), float(head_lr)
        self.head_weight_decay = float(head_weight_decay)
        self.lr_gamma, self.lr_milestones = float(lr_gamma), tuple(float(m) for m in lr_milestones)
        self.sigma, self.seed = float(sigma), int(seed)
        self.generator = components.seeded_generator(self.seed)
        self.defects: DefectSet | None = None
        self.real_defects_seen = 0

    # -- training ------------------------------------------------------------------------------------------------
    def on_fit_start(self, loader) -> None:
        self.generator = components.seeded_generator(self.seed)
        self.real_defects_seen = 0
        if self.defect_dir is not None:
            defect_pairs(self.defect_dir)  # a missing folder or a defect without its mask fails before any step
        if self.supervised and self.defect_dir is None:
            warnings.warn("supersimplenet-supervised without defect_dir learns only from labelled defects in the "
                          "training batches; name a folder of defects with masks (defect_dir=...)", stacklevel=2)

    def training_state(self) -> dict[str, torch.Tensor]:
        """The synthesis generator and the count of real defects seen: a resumed run continues both."""
        return {"generator": self.generator.get_state(), "real_defects_seen": torch.tensor(self.real_defects_seen)}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            self.generator.set_state(state["generator"])
            self.real_defects_seen = int(state["real_defects_seen"])

    def _defect_batch(self, size: tuple[int, int], count: int, device: torch.device) -> DefectSet | None:
        """`count` real defects drawn from the defect folder (read once, at the training size), normalised."""
        if self.defect_dir is None:
            return None
        if self.defects is None or tuple(self.defects.images.shape[-2:]) != size:
            self.defects = read_defects(self.defect_dir, size)
        index = torch.randint(len(self.defects.images), (count,), generator=self.generator)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        images = (self.defects.images[index] - mean) / std
        return DefectSet(images.to(device), self.defects.masks[index].to(device))

    def training_inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images, pixel masks [B, H, W] and labels [B] of one step: the batch, plus real defects when supervised
        (half as many as the batch's images, at least one)."""
        images, labels = batch.image, batch.label.float()
        if bool((batch.label > 0).any()) and batch.mask is None:
            raise ValueError("a training batch holds anomalous images without masks: SuperSimpleNet needs the "
                             "mask of every defective training image")
        masks = batch.mask if batch.mask is not None else images.new_zeros(images.shape[0], *images.shape[-2:])
        masks = masks * (batch.label > 0).view(-1, 1, 1).to(masks)  # a normal image has no defect pixels
        if self.supervised:
            extra = self._defect_batch(tuple(images.shape[-2:]), max(1, len(images) // 2), images.device)
            if extra is not None:
                images = torch.cat((images, extra.images))
                masks = torch.cat((masks, extra.masks))
                labels = torch.cat((labels, labels.new_ones(len(extra.images))))
        self.real_defects_seen += int((labels > 0).sum())
        return images, masks, labels

    def forward_train(self, features: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor,
                      perlin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Map logits, score logits, masks and labels of the doubled batch from the backbone's `features`, for
        given draws (noise, Perlin masks)."""
        adapted = self.adaptor(features)
        small = downsample_masks(masks, tuple(features.shape[-2:]))
        if self.adapt_cls_features:
            _, noised_adapted, small, labels = inject_anomalies(None, adapted, small, labels, noise, perlin)
            noised = noised_adapted
        else:
            noised, noised_adapted, small, labels = inject_anomalies(features, adapted, small, labels, noise, perlin)
        map_logits, score_logits = self.segdec(noised_adapted, noised)
        return map_logits, score_logits, small, labels

    def draws(self, batch_size: int, channels: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The feature noise [2B, C, h, w] and the Perlin masks [2B, 1, h, w] of one step, from the model's seed."""
        noise = torch.randn((2 * batch_size, channels, *size), generator=self.generator) * self.noise_std
        return noise, perlin_feature_masks(2 * batch_size, size, self.perlin_threshold, self.generator)

    def training_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        images, masks, labels = self.training_inputs(batch)
        features = self.features(images)
        noise, perlin = self.draws(len(images), features.shape[1], tuple(features.shape[-2:]))
        map_logits, score_logits, small, labels = self.forward_train(
            features, masks, labels, noise.to(features.device), perlin.to(features.device))
        return ssn_loss(map_logits, score_logits, small, labels)

    def configure_optimizers(self, plan: TrainingPlan) -> dict:
        optimizer = torch.optim.AdamW([
            {"params": self.adaptor.parameters(), "lr": self.adaptor_lr},
            {"params": self.segdec.parameters(), "lr": self.head_lr, "weight_decay": self.head_weight_decay},
        ])
        if plan.num_epochs is not None and plan.max_steps is None:
            milestones, interval = [int(plan.num_epochs * m) for m in self.lr_milestones], "epoch"
        else:
            milestones, interval = [int(plan.total_steps * m) for m in self.lr_milestones], "step"
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=self.lr_gamma)
        return {"optimizer": optimizer, "scheduler": scheduler, "interval": interval}

    def fit_notes(self) -> list[str]:
        if not self.supervised:
            return []
        return [f"supervised: {self.real_defects_seen} real defective image(s) were mixed into the training batches"]

    # -- inference -----------------------------------------------------------------------------------------------
    def logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map logits [B, 1, h, w] and score logits [B] of clean images."""
        features = self.features(images)
        adapted = self.adaptor(features)
        return self.segdec(adapted, adapted if self.adapt_cls_features else features)

    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        map_logits, score_logits = self.logits(images)
        amap = F.interpolate(map_logits, size=images.shape[-2:], mode="bilinear").squeeze(1)
        return score_logits.sigmoid(), gaussian_blur(amap, self.sigma).sigmoid()
