"""GLASS (Chen et al., "A Unified Anomaly Synthesis Strategy with Gradient Ascent for Industrial Anomaly Detection
and Localization", ECCV 2024).

Frozen layer2+layer3 patch features (3x3 neighbourhoods, 1536-d, PatchCore's aggregation) pass a linear projection;
one discriminator (a 1024-wide hidden layer, sigmoid output) scores every patch. Three branches train it:

- normal: the projected features of the training image, target 0 (BCE);
- GAS (global anomaly synthesis): the normal features plus N(0, 0.015²) noise, refined by 20 steps of gradient
  ascent on the discriminator's loss (step 0.001 along the normalised gradient); every 5 steps the distance to the
  normal feature (manifold) or to the centre of the normal features (hypersphere) is clipped into [r, 2r]; target 1
  (BCE);
- LAS (local anomaly synthesis): the features of the image with a texture (altered by 3 of the authors' 9 random
  augmentations, `ad_synth.glass_textures`) blended into it under a Perlin mask
  (restricted to the foreground when a mask folder is given), target the mask pooled to the patch grid; focal loss
  on the hardest half of the patches. In the hypersphere case the LAS features inside the mask are pushed to a
  distance in [2r, 4r] from the centre.

Manifold or hypersphere: the authors' rule, computed from the training images (the spectrum of their mean image,
`spectral_distribution`), unless the `distribution` option names one. Scores: the discriminator's patch
outputs, the map upsampled and blurred (σ 4), the image score the map's maximum patch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ad_core.plugin_api import AnomalyModel, BackboneConfig, Batch, StepContext, TrainingPlan, components, gaussian_blur
from ad_synth.glass_textures import augment_las_texture
from ad_synth.supersimplenet import IMAGENET_MEAN, IMAGENET_STD

DISTRIBUTIONS = ("auto", "manifold", "hypersphere")


def _init_weights(module: nn.Module) -> None:
    """The authors' initialisation: Xavier-normal linear weights with zero bias, BatchNorm weights N(1, 0.02)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm1d):
        module.weight.data.normal_(1.0, 0.02)
        module.bias.data.fill_(0)


class Discriminator(nn.Module):
    """Patch features [N, D] -> probability of an anomaly [N, 1]: (Linear, BatchNorm, LeakyReLU) x (layers - 1),
    then Linear without bias and a sigmoid."""

    def __init__(self, dim: int, layers: int = 2, hidden: int = 1024) -> None:
        super().__init__()
        blocks, width = [], dim
        for _ in range(layers - 1):
            blocks += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2)]
            width = hidden
        self.body = nn.Sequential(*blocks)
        self.tail = nn.Sequential(nn.Linear(width, 1, bias=False), nn.Sigmoid())
        self.apply(_init_weights)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(features))


def truncated_projection(points: torch.Tensor, anchors: torch.Tensor, low: torch.Tensor | float,
                         high: torch.Tensor | float) -> torch.Tensor:
    """Move each point along its ray from its anchor so its distance to the anchor lies in [low, high]."""
    offset = points - anchors
    norm = torch.linalg.vector_norm(offset, dim=1)
    target = torch.clamp(norm, low, high)
    return anchors + (target / (norm + 1e-10)).view(-1, 1) * offset


def spectral_distribution(mean_image: torch.Tensor) -> str:
    """The authors' rule: 'hypersphere' or 'manifold' from the spectrum of the mean training image [3, H, W] in [0, 1].

    Grey values (0-255) at 289x289, a 39x39 box blur, the centred log-magnitude spectrum 20·ln|F| thresholded at
    170; the bright points' density inside their bounding box (L1) or their disc (L2) above 0.21, with a radius above
    12 and more than 60 points, means a regular, aligned category: hypersphere."""
    rgb = F.interpolate(mean_image.clamp(0, 1)[None].double(), size=(289, 289), mode="bilinear", align_corners=False)
    grey = (0.299 * rgb[0, 0] + 0.587 * rgb[0, 1] + 0.114 * rgb[0, 2]) * 255
    padded = F.pad(grey[None, None], (19, 19, 19, 19), mode="reflect")
    blurred = F.avg_pool2d(padded, 39, stride=1)[0, 0]
    spectrum = torch.fft.fftshift(torch.fft.fft2(blurred))
    magnitude = 20 * torch.log(spectrum.abs().clamp_min(1e-12))
    ys, xs = torch.nonzero(magnitude > 170, as_tuple=True)
    if len(ys) == 0:
        return "manifold"
    cy, cx = 289 // 2, 289 // 2
    dist = torch.sqrt(((xs - cx) ** 2 + (ys - cy) ** 2).double())
    side_x, side_y = int((xs - cx).abs().max()), int((ys - cy).abs().max())
    radius, count = float(dist.max()), len(dist)
    yy, xx = torch.meshgrid(torch.arange(2 * 289), torch.arange(2 * 289), indexing="ij")
    disc = int((torch.sqrt(((xx - cx) ** 2 + (yy - cy) ** 2).double()) <= radius).sum())
    l1_density = count / (4 * max(side_x, 1) * max(side_y, 1))
    l2_density = count / (disc + 1e-10)
    sphere = (l1_density > 0.21 or l2_density > 0.21) and radius > 12 and count > 60
    return "hypersphere" if sphere else "manifold"


def las_mask(size: tuple[int, int], generator: torch.Generator, foreground: torch.Tensor | None = None,
             tries: int = 16) -> torch.Tensor:
    """A non-empty binary mask [H, W]: one Perlin mask, the union or the intersection of two (1/3 each, as the
    authors), kept on the foreground; redrawn until it is not empty (after `tries`, the whole foreground)."""
    for _ in range(tries):
        first = components.perlin_mask(size, generator)
        second = components.perlin_mask(size, generator)
        choice = float(torch.rand(1, generator=generator))
        mask = torch.maximum(first, second) if choice > 2 / 3 else first * second if choice > 1 / 3 else first
        mask = components.restrict_to_foreground(mask, foreground)
        if mask.any():
            return mask
    return torch.ones(size) if foreground is None else foreground.float()


class Glass(AnomalyModel):
    """GLASS: a patch discriminator trained on normal, gradient-ascended (GAS) and texture (LAS) anomalies."""

    def __init__(
        self,
        backbone: str = "wide_resnet50_2",
        layers: Sequence[str | int] = ("layer2", "layer3"),
        pretrained: bool = True,
        weights_file: str | None = None,
        backbone_dir: str | None = None,
        patch_size: int = 3,
        embed_dim: int = 1536,
        discriminator_layers: int = 2,
        discriminator_hidden: int = 1024,
        noise_std: float = 0.015,
        ascent_steps: int = 20,
        ascent_lr: float = 0.001,
        project_every: int = 5,
        radius_quantile: float = 0.75,
        manifold_radius: float = 0.5,
        hard_mining: float = 0.5,
        distribution: str = "auto",
        anomaly_source_dir: str | None = None,
        texture_augmentations: int = 3,
        foreground_dir: str | None = None,
        lr: float = 1e-4,
        sigma: float = 4.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
        self.backbone = BackboneConfig(backbone, layers, pretrained, weights_file, backbone_dir).frozen()
        self.embedder = components.PatchEmbedder(self.backbone.channels, patch_size, embed_dim, embed_dim)
        self.projection = nn.Linear(embed_dim, embed_dim)
        self.projection.apply(_init_weights)
        self.discriminator = Discriminator(embed_dim, discriminator_layers, discriminator_hidden)
        self.noise_std, self.ascent_steps, self.ascent_lr = float(noise_std), int(ascent_steps), float(ascent_lr)
        self.project_every, self.radius_quantile = int(project_every), float(radius_quantile)
        self.manifold_radius, self.hard_mining = float(manifold_radius), float(hard_mining)
        self.distribution, self.lr, self.sigma, self.seed = distribution, float(lr), float(sigma), int(seed)
        self.textures = components.TextureSource(anomaly_source_dir)
        if not 0 <= int(texture_augmentations) <= 9:
            raise ValueError(f"texture_augmentations must be in [0, 9] (of the authors' nine), "
                             f"got {texture_augmentations}")
        self.texture_augmentations = int(texture_augmentations)
        self.foreground = components.ForegroundMasks(foreground_dir)
        self.generator = components.seeded_generator(self.seed)
        # 1: hypersphere, 0: manifold (the rule's outcome, kept with the model for the record).
        self.register_buffer("hypersphere", torch.zeros((), dtype=torch.bool))
        self.center = torch.empty(0)
        self._center_epoch = -1  # the epoch `center` was computed for
        self._resumed_center: tuple[int, torch.Tensor] | None = None
        self._loader: Iterable[Batch] | None = None

    # -- features ------------------------------------------------------------------------------------------------
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Projected patch features [B*h*w, D] and the patch grid (h, w)."""
        patches, grid = self.embedder(self.backbone(images))
        return self.projection(patches), grid

    # -- the fit -------------------------------------------------------------------------------------------------
    def on_fit_start(self, loader: Iterable[Batch]) -> None:
        self.generator = components.seeded_generator(self.seed)
        self._loader = loader
        if self.distribution == "auto":
            total, count = None, 0
            for batch in loader:
                images = self._pixels(batch.image)
                total = images.sum(0) if total is None else total + images.sum(0)
                count += len(images)
            self.hypersphere.fill_(spectral_distribution(total / max(count, 1)) == "hypersphere")
        else:
            self.hypersphere.fill_(self.distribution == "hypersphere")

    def training_state(self) -> dict[str, torch.Tensor]:
        """The synthesis generator and the epoch's feature centre: a run resumed mid-epoch keeps both."""
        return {"generator": self.generator.get_state(), "center": self.center.detach().cpu(),
                "center_epoch": torch.tensor(self._center_epoch)}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            self.generator.set_state(state["generator"])
            self._resumed_center = (int(state["center_epoch"]), state["center"])

    def on_train_epoch_start(self, epoch: int) -> None:
        """The centre of the normal features, per patch position, recomputed before every epoch (the authors);
        an epoch re-entered by a resumed run takes the centre computed at its start."""
        resumed, self._resumed_center = self._resumed_center, None
        self._center_epoch = epoch
        if resumed is not None and resumed[0] == epoch:
            self.center = resumed[1].to(next(self.projection.parameters()).device)
            return
        total, count = None, 0
        with torch.no_grad():
            for batch in self._loader or []:
                device = next(self.projection.parameters()).device
                images = batch.image.to(device)
                feats, grid = self.embed(images)
                feats = feats.view(len(images), grid[0] * grid[1], -1)
                total = feats.sum(0) if total is None else total + feats.sum(0)
                count += len(images)
        self.center = total / count if total is not None else torch.empty(0)

    @staticmethod
    def _pixels(images: torch.Tensor) -> torch.Tensor:
        """Normalised model input back to [0, 1] pixels (the spec's ImageNet statistics)."""
        mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
        return (images * std + mean).clamp(0, 1)

    def local_anomalies(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """LAS: images with textures blended in under Perlin masks (normalised like the batch), and the masks."""
        pixels = self._pixels(batch.image).cpu()
        size = tuple(pixels.shape[-2:])
        augmented, masks = [], []
        for i, image in enumerate(pixels):
            mask = las_mask(size, self.generator, self.foreground.load(batch.path[i], size) if batch.path else None)
            texture = augment_las_texture(self.textures.sample(size, self.generator), self.generator,
                                          self.texture_augmentations)
            opacity = 1 - float(torch.clamp(0.5 + 0.1 * torch.randn(1, generator=self.generator), 0.2, 0.8))
            augmented.append(components.blend_anomaly(image, texture, mask, opacity))
            masks.append(mask)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        images = ((torch.stack(augmented) - mean) / std).to(batch.image)
        return images, torch.stack(masks).to(batch.image)

    def glass_loss(self, true_feats: torch.Tensor, fake_feats: torch.Tensor, patch_masks: torch.Tensor,
                   noise: torch.Tensor, center: torch.Tensor) -> dict[str, torch.Tensor]:
        """The authors' loss for given draws: BCE(normal, 0) + BCE(GAS, 1) after the gradient ascent, plus the focal
        loss of the LAS features on their hardest patches. `patch_masks` [N] marks the LAS patches, `center` [N, D].
        Also returns the final GAS features (`gas_features`)."""
        hypersphere = bool(self.hypersphere)
        target = patch_masks.view(-1, 1)
        normal = target[:, 0] == 0
        dist_t = torch.linalg.vector_norm(torch.cat([fake_feats[normal], true_feats])
                                          - torch.cat([center[normal], center]), dim=1)
        r_t = torch.quantile(dist_t, q=self.radius_quantile)
        gaus_feats = true_feats + noise
        if not gaus_feats.requires_grad:  # features given without the projection's graph: ascend on them all the same
            gaus_feats.requires_grad_(True)
        bce = nn.BCELoss()
        for step in range(self.ascent_steps + 1):
            scores = self.discriminator(torch.cat([true_feats, gaus_feats]))
            true_scores, gaus_scores = scores[: len(true_feats)], scores[len(true_feats):]
            true_loss = bce(true_scores, torch.zeros_like(true_scores))
            gaus_loss = bce(gaus_scores, torch.ones_like(gaus_scores))
            if step == self.ascent_steps:
                break
            grad = torch.autograd.grad(gaus_loss, [gaus_feats])[0]
            with torch.no_grad():  # the ascent moves the points; the final BCE still reaches the projection
                gaus_feats.add_(self.ascent_lr * grad / (torch.linalg.vector_norm(grad, dim=1, keepdim=True) + 1e-10))
            if (step + 1) % self.project_every == 0:
                if hypersphere:
                    gaus_feats = truncated_projection(gaus_feats, center, r_t, 2 * r_t)
                else:
                    gaus_feats = truncated_projection(gaus_feats, true_feats, self.manifold_radius,
                                                      2 * self.manifold_radius)
        if hypersphere:
            anomalous = ~normal
            fake_feats = fake_feats.clone()
            fake_feats[anomalous] = truncated_projection(fake_feats[anomalous], center[anomalous], 2 * r_t, 4 * r_t)
        fake_scores = self.discriminator(fake_feats)
        if self.hard_mining > 0:
            fake_dist = (fake_scores - target) ** 2
            hard = (fake_dist >= torch.quantile(fake_dist, q=self.hard_mining)).view(-1)
            fake_scores, target = fake_scores[hard], target[hard]
        focal = components.focal_loss(torch.cat([1 - fake_scores, fake_scores], dim=1), target.view(-1))
        return {"loss": true_loss + gaus_loss + focal, "true_loss": true_loss, "gaus_loss": gaus_loss,
                "focal_loss": focal, "gas_features": gaus_feats.detach()}

    def training_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        aug_images, masks = self.local_anomalies(batch)
        fake_feats, grid = self.embed(aug_images)
        true_feats, _ = self.embed(batch.image)
        patch_masks = F.adaptive_max_pool2d(masks.unsqueeze(1), grid).flatten()
        noise = (torch.randn(true_feats.shape, generator=self.generator) * self.noise_std).to(true_feats)
        center = self.center.to(true_feats).repeat(len(batch.image), 1)
        with torch.enable_grad():
            return self.glass_loss(true_feats, fake_feats, patch_masks, noise, center)["loss"]

    def configure_optimizers(self, plan: TrainingPlan) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.projection.parameters(), self.lr, weight_decay=1e-5),
                torch.optim.AdamW(self.discriminator.parameters(), lr=2 * self.lr)]

    def on_fit_end(self, loader: Iterable[Batch]) -> None:
        self._loader = None

    def fit_notes(self) -> list[str]:
        chosen = "hypersphere" if bool(self.hypersphere) else "manifold"
        how = "the spectral rule on the mean training image" if self.distribution == "auto" else "the option"
        notes = [f"GAS projection: {chosen} (chosen by {how})"]
        if self.textures.procedural:
            notes.append("LAS textures: procedural Perlin textures (no anomaly_source_dir; the paper uses DTD)")
        return notes

    # -- inference -----------------------------------------------------------------------------------------------
    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, grid = self.embed(images)
        patch_scores = self.discriminator(feats).view(len(images), *grid)
        amap = F.interpolate(patch_scores.unsqueeze(1), size=images.shape[-2:], mode="bilinear",
                             align_corners=False).squeeze(1)
        return patch_scores.flatten(1).amax(1), gaussian_blur(amap, self.sigma)
