"""Reverse Distillation (Deng and Li, "Anomaly Detection via Reverse Distillation from One-Class
Embedding", CVPR 2022).

A frozen pretrained ResNet encoder (the teacher) gives layer1-3 features. A trainable one-class bottleneck
embedding (OCBE) fuses them (multi-scale feature fusion: strided 3x3 convolutions bring layer1 and layer2 to
layer3's grid, concatenated with layer3) and compresses them with a ResNet stage (one-class embedding). A
decoder (the student) that mirrors the encoder, upsampling with 2x2 transposed convolutions, reconstructs the
encoder's three feature maps from that embedding. Trained on normal images with 1 − cosine similarity per
scale; on anomalies the reconstruction fails, so the per-position 1 − cos maps, upsampled and summed (Eq. 3),
then Gaussian-smoothed (σ = 4), are the anomaly map and their maximum the image score.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ad_core.components.backbone import BackboneConfig
from ad_core.components.maps import gaussian_blur
from ad_core.components.reverse_decoder import (
    DECODER_BLOCKS,
    OneClassBottleneck,
    ReverseDecoder,
    init_weights,
    resnet_layout,
)
from ad_core.model import AnomalyModel
from ad_core.training import StepContext, TrainingPlan
from ad_core.types import Batch
from ad_kd.distillation import cosine_distance, fuse_maps
from ad_kd.reverse_distillation_inference import FoldedReconstruction

LAYERS = ("layer1", "layer2", "layer3")


def reconstruction_loss(encoded: Sequence[torch.Tensor], decoded: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ_scales mean_batch (1 − cos) of each scale's whole feature map flattened (as the authors' code)."""
    total = encoded[0].new_zeros(())
    for e, d in zip(encoded, decoded):
        total = total + (1 - F.cosine_similarity(e.flatten(1), d.flatten(1), dim=1)).mean()
    return total


def check_reconstruction(images: torch.Tensor, encoded: Sequence[torch.Tensor],
                         decoded: Sequence[torch.Tensor]) -> None:
    """The decoder's grids match the encoder's only for image sides that are multiples of 32."""
    if any(e.shape != d.shape for e, d in zip(encoded, decoded)):
        raise ValueError(f"Reverse Distillation needs image sides that are multiples of 32 (the decoder doubles "
                         f"the embedding's grid three times); got {tuple(images.shape[-2:])}")


class ReverseDistillation(AnomalyModel):
    """Frozen encoder, trainable OCBE and decoder; trains with the core's gradient trainer."""

    def __init__(
        self,
        backbone: str = "wide_resnet50_2",
        pretrained: bool = True,
        weights_file: str | None = None,
        backbone_dir: str | None = None,
        lr: float = 0.005,
        betas: Sequence[float] = (0.5, 0.999),
        fusion: str = "sum",
        sigma: float = 4.0,
    ) -> None:
        super().__init__()
        if fusion not in ("sum", "product"):
            raise ValueError(f"fusion must be 'sum' (the paper) or 'product', got {fusion!r}")
        block, depths, base_width = resnet_layout(backbone)
        self.encoder = BackboneConfig(backbone, LAYERS, pretrained, weights_file, backbone_dir).frozen()
        decoder_block = DECODER_BLOCKS[block]
        expected = [64 * decoder_block.expansion, 128 * decoder_block.expansion, 256 * decoder_block.expansion]
        if self.encoder.channels != expected:
            raise ValueError(f"{backbone}: encoder channels {self.encoder.channels}, expected {expected}")
        self.bottleneck = OneClassBottleneck(block, decoder_block.expansion, depths[3], base_width)
        self.decoder = ReverseDecoder(decoder_block, depths[:3], base_width)
        init_weights(self.bottleneck)
        init_weights(self.decoder)
        self.lr, self.betas = float(lr), (float(betas[0]), float(betas[1]))
        self.fusion, self.sigma = fusion, float(sigma)
        self._folded: tuple[tuple[tuple[int, int], ...], FoldedReconstruction] | None = None

    def _weights_key(self) -> tuple[tuple[int, int], ...]:
        """Identifies the current bottleneck and decoder weights: storage and in-place version of each tensor
        (an optimiser step, a loaded state dict or a move to another device changes it)."""
        tensors = [*self.bottleneck.parameters(), *self.bottleneck.buffers(), *self.decoder.parameters(),
                   *self.decoder.buffers()]
        return tuple((t.data_ptr(), t._version) for t in tensors)

    def folded_reconstruction(self) -> FoldedReconstruction:
        """The predict path's bottleneck and decoder (BatchNorm folded, channels-last), rebuilt when the
        weights changed since the last call."""
        key = self._weights_key()
        if self._folded is None or self._folded[0] != key:
            self._folded = (key, FoldedReconstruction(self.bottleneck, self.decoder))
        return self._folded[1]

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(encoder features, decoder reconstructions), both [layer1, layer2, layer3]."""
        encoded = self.encoder(images)
        decoded = self.decoder(self.bottleneck(encoded))
        check_reconstruction(images, encoded, decoded)
        return encoded, decoded

    def training_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        return reconstruction_loss(*self(batch.image))

    def configure_optimizers(self, plan: TrainingPlan) -> torch.optim.Optimizer:
        params = [*self.bottleneck.parameters(), *self.decoder.parameters()]
        return torch.optim.Adam(params, lr=self.lr, betas=self.betas)

    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = self.encoder(images)
        if self.training:  # BatchNorm normalises by the batch's statistics: nothing fixed to fold
            decoded = self.decoder(self.bottleneck(encoded))
        else:
            decoded = self.folded_reconstruction()(encoded)
        check_reconstruction(images, encoded, decoded)
        maps = [cosine_distance(e, d) for e, d in zip(encoded, decoded)]
        amap = gaussian_blur(fuse_maps(maps, images.shape[-2:], self.fusion), self.sigma)
        return amap.amax(dim=(1, 2)), amap
