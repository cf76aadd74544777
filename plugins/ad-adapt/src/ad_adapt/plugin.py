"""Registers the feature-adaptation models with ad-core. Light by design: no torch, no model code.

Layout (every plugin.py): paper constants, one `*_specs()` function per model, one hook registering them all.
"""

from __future__ import annotations

from collections.abc import Callable

from ad_core.plugin_api import ModelSpec, hookimpl

PARADIGM = "adapt"


# -- DFM -------------------------------------------------------------------------------------------------
DFM_PAPER = ("Ahuja et al., Probabilistic Modeling of Deep Features for Out-of-Distribution and Adversarial "
             "Detection, 2019 (arXiv:1909.11786)")


def dfm_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="dfm",
        paradigm=PARADIGM,
        factory="ad_adapt.dfm:Dfm",
        trainer="feature_bank",
        paper=DFM_PAPER,
        description="PCA (97 % of the variance) of average-pooled layer-3 features per image; the feature "
                    "reconstruction error (with its map) or the Gaussian negative log-likelihood.",
        defaults={"backbone": "resnet50", "layer": "layer3", "pooling_kernel_size": 4, "variance_ratio": 0.97,
                  "score_type": "fre", "image_size": 256, "batch_size": 32},
        variants={
            "dfm-r18": {"backbone": "resnet18"},
            "dfm-wrn50": {"backbone": "wide_resnet50_2"},
            "dfm-nll": {"score_type": "nll"},
        },
        # 64 px: layer3 is 4x4, pooled by 2 to 2x2 (kernel 4 would leave one position per image).
        test_overrides={"dfm": {"backbone": "resnet18", "pooling_kernel_size": 2, "batch_size": 8}},
    )]


@hookimpl
def adcore_register_models(register: Callable[[ModelSpec], None]) -> None:
    for spec in [*dfm_specs()]:
        register(spec)
