"""Synthetic anomalies for models that train on them (DRAEM, DSR, DiffusionAD, GLASS, SuperSimpleNet), and the
foreground masks that keep them on the object.

Every draw takes a `torch.Generator`, never global random state, so a model's synthesis is reproducible
from its own seed.
"""

from ad_core.components.synthesis.blending import blend_anomaly, feature_noise, restrict_to_foreground
from ad_core.components.synthesis.foreground import ForegroundMaskError, ForegroundMasks
from ad_core.components.synthesis.image_ops import (
    autocontrast,
    equalize,
    grayscale,
    hsv_to_rgb,
    rgb_to_hsv,
    rotate,
    shift_hue,
)
from ad_core.components.synthesis.perlin import fractal_perlin_noise, perlin_from_gradients, perlin_mask, perlin_noise
from ad_core.components.synthesis.textures import TextureSource, TextureSourceError, procedural_texture

__all__ = [
    "ForegroundMaskError",
    "ForegroundMasks",
    "TextureSource",
    "TextureSourceError",
    "autocontrast",
    "blend_anomaly",
    "equalize",
    "feature_noise",
    "fractal_perlin_noise",
    "grayscale",
    "hsv_to_rgb",
    "perlin_from_gradients",
    "perlin_mask",
    "perlin_noise",
    "procedural_texture",
    "restrict_to_foreground",
    "rgb_to_hsv",
    "rotate",
    "shift_hue",
]
