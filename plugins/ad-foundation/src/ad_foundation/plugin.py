"""Registers the foundation-paradigm models with ad-core. Light by design: no torch, no model code.

Layout (every plugin.py): paper constants, one `*_specs()` function per model, one hook registering them all.
"""

from __future__ import annotations

from collections.abc import Callable

from ad_core.plugin_api import ModelSpec, hookimpl

PARADIGM = "foundation"


# -- UniNet ----------------------------------------------------------------------------------------------
UNINET_PAPER = ("Wei et al., UniNet: A Contrastive Learning-guided Unified Framework with Feature Selection for "
                "Anomaly Detection, CVPR 2025")


def uninet_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="uninet",
        min_image_size=32,  # the bottleneck (stride 32) at 1x1
        paradigm=PARADIGM,
        factory="ad_foundation.uninet:UniNet",
        trainer="gradient",
        paper=UNINET_PAPER,
        description="Frozen source and trainable target teachers, a student decoder with domain-related feature "
                    "selection, cosine + contrastive loss; weighted top-k decision over six maps.",
        # temperature 2: the authors' default, used for 10 of the 15 MVTec AD categories (0.1 for transistor,
        # pill, cable, bottle, grid); see the README.
        defaults={"backbone": "wide_resnet50_2", "temperature": 2.0, "lambda_weight": 0.7, "margin": 1.0,
                  "feature_selection": True, "lr": 5e-3, "target_lr": 1e-6, "weight_decay": 1e-5,
                  "alpha": 0.01, "beta": 3e-5, "sigma": 4.0, "image_size": 256, "batch_size": 8,
                  "num_epochs": 100},
        variants={"uninet-r18": {"backbone": "resnet18"}},
        test_overrides={"uninet": {"backbone": "resnet18", "image_size": 64, "batch_size": 8, "num_epochs": 1}},
    )]


@hookimpl
def adcore_register_models(register: Callable[[ModelSpec], None]) -> None:
    for spec in [*uninet_specs()]:
        register(spec)
