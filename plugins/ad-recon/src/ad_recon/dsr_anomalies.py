"""DSR's simulated anomalies (Zavrtanik et al., ECCV 2022, Sec. 3.4, and the authors' training code).

- Phase 1 (`feature_anomalies`): inside a Perlin mask, each quantised feature vector is replaced by a code drawn
  uniformly among the codebook's codes ranked 5 % .. (strength x 100 %) + 1 by distance to the vector's
  unquantised feature (never the nearest 5 %, so the replacement is a real change in appearance).
- Phase 2 (`smudge`): DRAEM-style image anomalies whose "texture" is one uniform random colour, blended inside a
  rotated, thresholded Perlin mask keeping a share beta in [0, 0.8) of the image (the authors'
  `MVTecImageAnomTrainDataset`).

Every draw comes from the generator it is given.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ad_core.plugin_api import components as C
from ad_recon.draem_synthesis import rotated_perlin_mask

SKIPPED_SHARE = 0.05  # the nearest 5 % of the codes are never drawn


def candidate_count(strength: torch.Tensor, num_codes: int) -> int:
    """How many nearest codes are ranked (the authors' rule): int(strength * K) + 1, within [1, K - 1]."""
    return max(1, min(int(strength * num_codes) + 1, num_codes - 1))


def downsampled_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A [B, 1, H, W] mask max-pooled to a feature grid: a feature is anomalous if any of its pixels is."""
    ratio = (mask.shape[-2] // size[0], mask.shape[-1] // size[1])
    return F.max_pool2d(mask, ratio).float()


def feature_anomalies(features: torch.Tensor, quantized: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor,
                      strength: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Quantised features [B, D, h, w] with the masked positions replaced by distant codes.

    `features` are the unquantised features the distances are measured from, `codes` the codebook [K, D],
    `mask` [B, 1, H, W] at image resolution, `strength` [B] in (0, 1]: the share of the codebook ranked.
    """
    batch, dim, height, width = quantized.shape
    num_codes = codes.shape[0]
    skipped = int(num_codes * SKIPPED_SHARE)
    flat = features.permute(0, 2, 3, 1).reshape(batch, -1, dim)
    replaced = []
    for k in range(batch):
        distances = flat[k].pow(2).sum(1, keepdim=True) + codes.pow(2).sum(1) - 2 * flat[k] @ codes.t()
        ranked = distances.topk(candidate_count(strength[k], num_codes), dim=1, largest=False).indices[:, skipped:]
        if ranked.shape[1] == 0:
            raise ValueError(f"a codebook of {num_codes} codes leaves no candidate beyond its nearest {skipped} "
                             "codes at this anomaly strength: use more codes (num_embeddings)")
        pick = torch.randint(ranked.shape[1], (ranked.shape[0],), generator=generator).to(ranked.device)
        replaced.append(codes[ranked.gather(1, pick.unsqueeze(1)).squeeze(1)])
    random_codes = torch.stack(replaced).view(batch, height, width, dim).permute(0, 3, 1, 2)
    grid_mask = downsampled_mask(mask, (height, width))
    return grid_mask * random_codes + (1.0 - grid_mask) * quantized


def block_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The mask as the feature grid sees it, back at image resolution (every touched feature cell filled)."""
    ratio = mask.shape[-1] // size[1]
    return F.interpolate(downsampled_mask(mask, size), scale_factor=ratio)


def perlin_masks(count: int, size: tuple[int, int], generator: torch.Generator, probability: float = 0.5
                 ) -> torch.Tensor:
    """[count, 1, H, W] Perlin masks, each kept with `probability` (else empty: a normal sample)."""
    masks = []
    for _ in range(count):
        anomalous = float(torch.rand((), generator=generator)) < probability
        masks.append(rotated_perlin_mask(size, generator) if anomalous else torch.zeros(size))
    return torch.stack(masks).unsqueeze(1)


def smudge(images: torch.Tensor, generator: torch.Generator, probability: float = 0.5, max_image_share: float = 0.8
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(images with uniform-colour Perlin smudges [B, 3, H, W], masks [B, 1, H, W]); drawn on the CPU."""
    size = (int(images.shape[-2]), int(images.shape[-1]))
    out, masks = [], []
    for image in images.detach().float().cpu():
        if float(torch.rand((), generator=generator)) >= probability:
            out.append(image)
            masks.append(torch.zeros(size))
            continue
        colour = torch.rand(3, 1, 1, generator=generator).expand(3, *size)
        mask = rotated_perlin_mask(size, generator)
        image_share = float(torch.rand((), generator=generator)) * max_image_share
        out.append(C.blend_anomaly(image, colour, mask, 1.0 - image_share))
        masks.append(mask)
    return torch.stack(out).to(images), torch.stack(masks).unsqueeze(1).to(images)
