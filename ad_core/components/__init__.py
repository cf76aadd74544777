"""Building blocks shared by two or more model plugins, one small module each.

A piece moves here once a second plugin needs it; model-specific networks stay in their plugin. Names
are imported on first use (so `ad_core.components.maps` does not pull in timm), and `__all__` lists the
public ones:

- backbone: `BackboneConfig`, `FrozenBackbone`, `image_chunks`; draws: `seeded_generator`, `random_subset`
- vit: `FrozenViT` (patch-14 / register-token transformers, e.g. DINOv2 with registers)
- patch_embedding: `PatchEmbedder` (PatchCore's locally aware patch features)
- maps: `resize_map`, `gaussian_blur`, `gaussian_kernel1d`
- coreset: `greedy_coreset`, `greedy_cover`, `squared_distance_to`, `sparse_random_projection`; knn: `knn_search`, `nearest_neighbours`, `build_search_index`
- kmeans: `fit_kmeans`, `kmeans_plus_plus`; pca: `fit_pca`, `PCAFit`
- losses: `ssim`, `ssim_loss`, `focal_loss`
- reverse_decoder: `OneClassBottleneck`, `ReverseDecoder`, `resnet_layout`, `DECODER_BLOCKS`, `init_weights`
  (the reverse-distillation bottleneck and student)
- synthesis: Perlin noise and masks, texture sources, foreground masks (`ForegroundMasks`), blending, feature
  noise, the image operations of texture augmentations (`rotate`, `equalize`, `autocontrast`, `grayscale`,
  `rgb_to_hsv`, `hsv_to_rgb`, `shift_hue`)
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "BackboneConfig": "backbone",
    "FrozenBackbone": "backbone",
    "image_chunks": "backbone",
    "seeded_generator": "draws",
    "random_subset": "draws",
    "FrozenViT": "vit",
    "PatchEmbedder": "patch_embedding",
    "resize_map": "maps",
    "gaussian_blur": "maps",
    "gaussian_kernel1d": "maps",
    "greedy_coreset": "coreset",
    "greedy_cover": "coreset",
    "squared_distance_to": "coreset",
    "sparse_random_projection": "coreset",
    "knn_search": "knn",
    "nearest_neighbours": "knn",
    "build_search_index": "knn",
    "fit_kmeans": "kmeans",
    "kmeans_plus_plus": "kmeans",
    "fit_pca": "pca",
    "PCAFit": "pca",
    "ssim": "losses",
    "ssim_loss": "losses",
    "focal_loss": "losses",
    "OneClassBottleneck": "reverse_decoder",
    "ReverseDecoder": "reverse_decoder",
    "init_weights": "reverse_decoder",
    "resnet_layout": "reverse_decoder",
    "DECODER_BLOCKS": "reverse_decoder",
    "ForegroundMasks": "synthesis",
    "ForegroundMaskError": "synthesis",
    "TextureSource": "synthesis",
    "TextureSourceError": "synthesis",
    "blend_anomaly": "synthesis",
    "feature_noise": "synthesis",
    "fractal_perlin_noise": "synthesis",
    "perlin_mask": "synthesis",
    "perlin_noise": "synthesis",
    "procedural_texture": "synthesis",
    "restrict_to_foreground": "synthesis",
    "rotate": "synthesis",
    "equalize": "synthesis",
    "autocontrast": "synthesis",
    "grayscale": "synthesis",
    "rgb_to_hsv": "synthesis",
    "hsv_to_rgb": "synthesis",
    "shift_hue": "synthesis",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'ad_core.components' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ad_core.components.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
