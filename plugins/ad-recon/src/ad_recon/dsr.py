"""DSR (Zavrtanik, Kristan and Skočaj, "DSR - A dual subspace re-projection network for surface anomaly
detection", ECCV 2022; authors' code VitjanZ/DSR_anomaly_detection).

A frozen dual-subspace VQ-VAE (`ad_recon.dsr_networks`, pretrained on ImageNet in the paper) quantises an image
into Q_lo (stride 8, codebook K_lo) and Q_hi (stride 4, K_hi); its general appearance decoder rebuilds the image
from them. Two subspace restriction modules re-project the quantised features onto normal appearance and an
object-specific decoder rebuilds the image from those; the anomaly detection module segments the difference
between the two images, and the upsampling module refines that segmentation at full resolution.

One fit, two phases (the authors' `train_dsr.py`), switched by the trainer's step count:
1. the first (1 - `upsampling_fraction`) of the steps (100 of 150 epochs): object-specific decoder, both subspace
   restriction modules and the anomaly detection module, on anomalies made in the quantised feature space
   (`ad_recon.dsr_anomalies.feature_anomalies`); loss = MSE(restored F_hi, Q_hi) + MSE(restored F_lo, Q_lo)
   + 10 MSE(image, object-specific image) + focal(segmentation, mask); Adam lr 2e-4, x0.1 at 80 % of the phase.
2. the rest (50 epochs): the upsampling module alone, on images with uniform-colour Perlin smudges
   (`ad_recon.dsr_anomalies.smudge`); loss = focal(upsampled segmentation, mask); Adam lr 2e-4.

Scoring (the authors' test code): map = the upsampling module's anomalous-class probability; image score = maximum
of the anomaly detection module's anomalous-class probability average-pooled over 21x21.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from ad_core.plugin_api import AnomalyModel, Batch, MissingWeightsError, StepContext, TrainingPlan
from ad_core.plugin_api import components as C
from ad_recon.draem import pooled_max
from ad_recon.dsr_anomalies import block_mask, feature_anomalies, perlin_masks, smudge
from ad_recon.dsr_networks import DualSubspaceVQ, ObjectSpecificDecoder, SubspaceRestriction, Unet
from ad_recon.dsr_vq import HOW_TO_GET_WEIGHTS, RANDOM, codebooks_from_features, load_vq_weights
from ad_recon.sizes import as_size, check_multiple

STRIDE = 32  # Q_lo is at stride 8 and the subspace restriction module pools it twice more
MIN_SIZE = 64  # at 32 px the restriction module's bottleneck is 1x1, which instance norm cannot train on


def init_dcgan(module: torch.nn.Module) -> None:
    """The authors' `weights_init` for the decoder and the detection module: convolutions N(0, 0.02)."""
    for layer in module.modules():
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            layer.weight.data.normal_(0.0, 0.02)


class Phase1Draws(NamedTuple):
    """The random choices of one phase-1 step besides the masks and the codes, when a caller fixes them."""

    strength_lo: torch.Tensor  # [B] share of K_lo ranked for replacement codes
    strength_hi: torch.Tensor
    use_both: torch.Tensor  # [B, 1, 1, 1] 1: anomalies in both subspaces, else in one
    use_lo: torch.Tensor  # [B, 1, 1, 1] 1: in Q_lo only (when not both), 0: in Q_hi only


class Phase1Output(NamedTuple):
    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    segmentation: torch.Tensor  # softmax [B, 2, H, W]
    target: torch.Tensor  # [B, 1, H, W] the mask as the anomalous feature cells cover it


class Dsr(AnomalyModel):
    """DSR; see the module docstring. Takes [0, 1] images (no ImageNet normalisation)."""

    automatic_optimization = False  # each phase steps its own optimiser

    def __init__(self, image_size: int | Sequence[int] = 256, vq_weights: str | Path | None = None,
                 embedding_dim: int = 128, num_embeddings: int = 4096, hidden_channels: int = 128,
                 residual_channels: int = 64, residual_layers: int = 2, detection_width: int = 64,
                 latent_anomaly_strength: float = 0.2, anomaly_probability: float = 0.5, lr: float = 2e-4,
                 upsampling_lr: float = 2e-4, lr_milestone: float = 0.8, lr_gamma: float = 0.1,
                 upsampling_fraction: float = 1 / 3, score_pooling: int = 21, seed: int = 0,
                 normalize: bool = False) -> None:
        super().__init__()
        if normalize:
            raise ValueError("DSR works on images in [0, 1] (its VQ stage was trained on them): it cannot run with "
                             "normalize=True. Leave normalize at its default (False).")
        check_multiple("DSR", as_size(image_size), STRIDE, MIN_SIZE)
        if not 0.0 < upsampling_fraction < 1.0:
            raise ValueError(f"upsampling_fraction is the share of the fit spent on the upsampling module, in (0, 1); "
                             f"got {upsampling_fraction}")
        if not 0.0 < latent_anomaly_strength <= 1.0:
            raise ValueError(f"latent_anomaly_strength must be in (0, 1], got {latent_anomaly_strength}")
        dim = int(embedding_dim)
        self.vq = DualSubspaceVQ(dim, int(num_embeddings), int(hidden_channels), int(residual_channels),
                                 int(residual_layers))
        self.vq.requires_grad_(False)
        self.restriction_hi = SubspaceRestriction(dim)
        self.restriction_lo = SubspaceRestriction(dim)
        self.specific_decoder = ObjectSpecificDecoder(2 * dim, int(hidden_channels), int(residual_channels),
                                                      int(residual_layers))
        self.detection = Unet(6, 2, int(detection_width))
        self.upsampling = Unet(8, 2, int(detection_width))
        init_dcgan(self.specific_decoder)
        init_dcgan(self.detection)
        self.vq_weights = None if vq_weights is None else str(vq_weights)
        self.latent_anomaly_strength = float(latent_anomaly_strength)
        self.anomaly_probability = float(anomaly_probability)
        self.lr, self.upsampling_lr = float(lr), float(upsampling_lr)
        self.lr_milestone, self.lr_gamma = float(lr_milestone), float(lr_gamma)
        self.upsampling_fraction = float(upsampling_fraction)
        self.score_pooling, self.seed = int(score_pooling), int(seed)
        self.phase1_steps = 0  # set from the plan by configure_optimizers
        self._notes: list[str] = []

    # -- the networks ------------------------------------------------------------------------------------------
    def phase1_modules(self) -> list[torch.nn.Module]:
        return [self.restriction_hi, self.restriction_lo, self.specific_decoder, self.detection]

    def restored_image(self, quantized_lo: torch.Tensor, quantized_hi: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(restored F_hi, restored F_lo, the object-specific decoder's image of their re-quantisations)."""
        feat_hi, restored_hi = self.restriction_hi(quantized_hi, self.vq.quantizer_hi)
        feat_lo, restored_lo = self.restriction_lo(quantized_lo, self.vq.quantizer_lo)
        return feat_hi, feat_lo, self.vq.decode(restored_lo, restored_hi, self.specific_decoder)

    def segment(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(object-specific image, general image, detection softmax [B, 2, H, W]) of clean or smudged images."""
        output = self.vq(images)
        _, _, specific = self.restored_image(output.quantized_lo.quantized, output.quantized_hi.quantized)
        general = output.reconstruction
        return specific, general, torch.softmax(self.detection(specific, general), dim=1)

    def upsampled(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(detection softmax, upsampling-module softmax), the phase-1 networks without gradients."""
        with torch.no_grad():
            specific, general, segmentation = self.segment(images)
        return segmentation, torch.softmax(self.upsampling(specific, general, segmentation), dim=1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image scores [B], anomaly maps [B, H, W]), computed image by image.

        Quantisation is an argmin: the last-bit differences that convolution kernels make between batch sizes can
        flip a near-tie to another code and change a map visibly. One image at a time, a prediction does not depend
        on the batch it came in.
        """
        check_multiple("DSR", (int(images.shape[-2]), int(images.shape[-1])), STRIDE, MIN_SIZE)
        scores, maps = [], []
        for image in images.split(1):
            segmentation, refined = self.upsampled(image)
            scores.append(pooled_max(segmentation[:, 1], self.score_pooling))
            maps.append(refined[:, 1])
        return torch.cat(scores), torch.cat(maps)

    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self(images)

    # -- phase 1: anomalies in the quantised feature space -----------------------------------------------------
    def draw_strengths(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image, the share of K_lo and of K_hi ranked for replacement codes, in [strength, 1)."""
        low = self.latent_anomaly_strength
        return tuple(torch.rand(count, generator=generator) * (1.0 - low) + low for _ in range(2))

    @staticmethod
    def draw_subspaces(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image, (use_both, use_lo) in {0, 1}: anomalies in both subspaces, else in Q_lo or in Q_hi only."""
        return tuple(torch.randint(0, 2, (count, 1, 1, 1), generator=generator).float() for _ in range(2))

    def phase1(self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator,
               draws: Phase1Draws | None = None) -> Phase1Output:
        """The phase-1 loss on `images` with feature anomalies inside `masks` [B, 1, H, W].

        Draw order as in the authors' code: strengths, replacement codes of Q_lo, of Q_hi (under the anomalous
        Q_lo), the subspace choice, replacement codes of Q_hi (under the clean Q_lo). `draws` fixes the strengths
        and the subspace choice instead.
        """
        count = images.shape[0]
        vq = self.vq
        with torch.no_grad():
            strength_lo, strength_hi = (draws.strength_lo, draws.strength_hi) if draws is not None \
                else self.draw_strengths(count, generator)
            output = vq(images)
            q_lo, q_hi = output.quantized_lo.quantized, output.quantized_hi.quantized
            codes_lo, codes_hi = vq.quantizer_lo.codes, vq.quantizer_hi.codes
            anomalous_lo = feature_anomalies(output.z_lo, q_lo, codes_lo, masks, strength_lo, generator)
            z_hi_under_anomalous_lo = vq.hi_features(output.encoded_hi, anomalous_lo)
            q_hi_under_anomalous_lo = vq.quantizer_hi(z_hi_under_anomalous_lo).quantized
            anomalous_both_hi = feature_anomalies(z_hi_under_anomalous_lo, q_hi_under_anomalous_lo, codes_hi, masks,
                                                  strength_hi, generator)
            both, lo_only = (draws.use_both, draws.use_lo) if draws is not None \
                else self.draw_subspaces(count, generator)
            both, lo_only = both.to(images), lo_only.to(images)
            anomalous_hi = feature_anomalies(output.z_hi, q_hi, codes_hi, masks, strength_hi, generator)
            hi_only = 1.0 - lo_only
            features_hi = both * anomalous_both_hi + (1.0 - both) * (hi_only * anomalous_hi + lo_only * q_hi)
            features_lo = both * anomalous_lo + (1.0 - both) * (hi_only * q_lo + lo_only * anomalous_lo)
            general = vq.decode(features_lo, features_hi)
            mask_lo = block_mask(masks, tuple(q_lo.shape[-2:]))
            mask_hi = block_mask(masks, tuple(q_hi.shape[-2:]))
            target = both * mask_lo + (1.0 - both) * (lo_only * mask_lo + hi_only * mask_hi)
        feat_hi, feat_lo, specific = self.restored_image(features_lo, features_hi)
        segmentation = torch.softmax(self.detection(specific.detach(), general), dim=1)
        parts = {"features_hi": F.mse_loss(feat_hi, q_hi), "features_lo": F.mse_loss(feat_lo, q_lo),
                 "image": 10.0 * F.mse_loss(images, specific), "focal": C.focal_loss(segmentation, target)}
        return Phase1Output(sum(parts.values()), parts, segmentation, target)

    # -- phase 2: the upsampling module on smudged images ------------------------------------------------------
    def phase2(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """The upsampling module's focal loss on (smudged) `images` against `masks` [B, 1, H, W]."""
        _, refined = self.upsampled(images)
        return C.focal_loss(refined, masks)

    # -- the trainer's hooks -----------------------------------------------------------------------------------
    def on_fit_start(self, loader: Iterable[Batch]) -> None:
        """Load the pretrained VQ stage, or refuse to train without one unless random weights were chosen."""
        if self.vq_weights is None:
            raise MissingWeightsError(f"DSR was given no VQ weights. {HOW_TO_GET_WEIGHTS}")
        if self.vq_weights == RANDOM:
            first = next(iter(loader), None)
            if first is None:
                raise ValueError("the training set is empty: at least one normal image is needed")
            device = next(self.detection.parameters()).device
            codebooks_from_features(self.vq, first.image.to(device), C.seeded_generator(self.seed))
            self._notes = ["the VQ stage is untrained (vq_weights=\"random\", codebooks drawn from the first "
                           "batch's features): for tests only"]
        else:
            load_vq_weights(self.vq, self.vq_weights)
            self._notes = [f"VQ stage loaded from {self.vq_weights}"]

    def fit_notes(self) -> list[str]:
        return [*self._notes, f"phase 1 (restriction, decoder, detection): {self.phase1_steps} steps; phase 2 "
                              "(upsampling module): the rest"]

    def configure_optimizers(self, plan: TrainingPlan) -> list[dict[str, Any]]:
        total = plan.total_steps
        self.phase1_steps = max(1, min(total - 1, round(total * (1.0 - self.upsampling_fraction)))) if total > 1 \
            else total
        phase1 = torch.optim.Adam([p for m in self.phase1_modules() for p in m.parameters()], lr=self.lr)
        milestone = max(1, int(self.lr_milestone * self.phase1_steps))
        scheduler = torch.optim.lr_scheduler.MultiStepLR(phase1, milestones=[milestone], gamma=self.lr_gamma)
        phase2 = torch.optim.Adam(self.upsampling.parameters(), lr=self.upsampling_lr)
        return [{"optimizer": phase1, "scheduler": scheduler, "interval": "step"}, {"optimizer": phase2}]

    def training_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        images = batch.image
        generator = C.seeded_generator(self.seed * 1_000_003 + ctx.step)  # reproducible, and resumable by step
        size = (int(images.shape[-2]), int(images.shape[-1]))
        if ctx.step < self.phase1_steps:
            optimizer = ctx.optimizers[0]
            masks = perlin_masks(images.shape[0], size, generator, self.anomaly_probability).to(images)
            result = self.phase1(images, masks, generator)
            loss = result.loss
            ctx.log(phase=1, **{f"loss_{k}": v.item() for k, v in result.parts.items()})
        else:
            optimizer = ctx.optimizers[1]
            smudged, masks = smudge(images, generator, self.anomaly_probability)
            loss = self.phase2(smudged, masks)
            ctx.log(phase=2, loss_upsampling=loss.item())
        optimizer.zero_grad(set_to_none=True)
        ctx.backward(loss)
        ctx.step_optimizer(optimizer)
        return loss.detach()
