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


# -- CFA -------------------------------------------------------------------------------------------------
CFA_PAPER = ("Lee et al., CFA: Coupled-hypersphere-based Feature Adaptation for Target-Oriented Anomaly "
             "Localization, IEEE Access 2022 (arXiv:2206.04325)")


def cfa_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="cfa",
        paradigm=PARADIGM,
        factory="ad_adapt.cfa:Cfa",
        trainer="gradient",
        paper=CFA_PAPER,
        description="A CoordConv patch descriptor over pooled layer1-3 features adapted to a memory bank of the "
                    "target's mean features by the coupled-hypersphere loss; soft-min distances to the bank.",
        defaults={"backbone": "wide_resnet50_2", "layers": ["layer1", "layer2", "layer3"], "gamma_c": 1,
                  "gamma_d": 1, "num_nearest": 3, "num_hard_negatives": 3, "radius": 1e-5, "lr": 1e-3,
                  "weight_decay": 5e-4, "sigma": 4.0, "image_size": 256, "batch_size": 4, "num_epochs": 30},
        variants={"cfa-r18": {"backbone": "resnet18"}},
        test_overrides={"cfa": {"backbone": "resnet18", "batch_size": 8, "num_epochs": 1}},
    )]


@hookimpl
def adcore_register_models(register: Callable[[ModelSpec], None]) -> None:
    for spec in [*dfm_specs(), *cfa_specs()]:
        register(spec)
