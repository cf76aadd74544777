"""Registers the model. Kept light: no torch import here, so `adcore list-models` stays fast."""

from ad_core import ModelSpec, hookimpl


@hookimpl
def adcore_register_models(register):
    register(ModelSpec(
        name="pixelstats",
        paradigm="baseline",
        factory="adcore_pixelstats.model:PixelStats",
        trainer="feature_bank",
        paper="per-pixel Gaussian of normal images (a sanity baseline)",
        defaults={"image_size": 128, "batch_size": 16, "normalize": False},
        variants={"pixelstats-blur": {"sigma": 2.0}},
    ))
