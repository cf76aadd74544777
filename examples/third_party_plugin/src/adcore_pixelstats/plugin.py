"""Registers the model. Kept light: no torch import here, so `adcore list-models` stays fast.

Layout (as in every first-party plugin): paper constants, one `*_specs()` function per model, one hook.
"""

from collections.abc import Callable

from ad_core.plugin_api import ModelSpec, hookimpl

PIXELSTATS_PAPER = "per-pixel Gaussian of normal images (a sanity baseline)"


def pixelstats_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="pixelstats",
        paradigm="baseline",
        factory="adcore_pixelstats.model:PixelStats",
        trainer="feature_bank",
        paper=PIXELSTATS_PAPER,
        defaults={"image_size": 128, "batch_size": 16, "normalize": False},
        variants={"pixelstats-blur": {"sigma": 2.0}},
        test_overrides={"pixelstats": {"image_size": 64}},  # the conformance suite's tiny config
    )]


@hookimpl
def adcore_register_models(register: Callable[[ModelSpec], None]) -> None:
    for spec in pixelstats_specs():
        register(spec)
