"""Synthetic anomalies for models that train on them (DRAEM, DSR, DiffusionAD, GLASS, SuperSimpleNet).

Every draw takes a `torch.Generator`, never global random state, so a model's synthesis is reproducible
from its own seed.
"""

from ad_core.components.synthesis.blending import blend_anomaly, feature_noise, restrict_to_foreground
from ad_core.components.synthesis.perlin import fractal_perlin_noise, perlin_from_gradients, perlin_mask, perlin_noise
from ad_core.components.synthesis.textures import TextureSource, TextureSourceError, procedural_texture

__all__ = [
    "TextureSource",
    "TextureSourceError",
    "blend_anomaly",
    "feature_noise",
    "fractal_perlin_noise",
    "perlin_from_gradients",
    "perlin_mask",
    "perlin_noise",
    "procedural_texture",
    "restrict_to_foreground",
]
