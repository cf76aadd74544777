"""Registers the synthetic-anomaly discriminators with ad-core. Light by design: no torch, no model code.

Layout (every plugin.py): paper constants, one `*_specs()` function per model, one hook registering them all.
"""

from __future__ import annotations

from collections.abc import Callable

from ad_core.plugin_api import ModelSpec, hookimpl

PARADIGM = "synth"


# -- SuperSimpleNet ------------------------------------------------------------------------------------------
SUPERSIMPLENET_PAPER = ("Rolih, Fučka and Skočaj, SuperSimpleNet: Unifying Unsupervised and Supervised Learning "
                        "for Fast and Reliable Surface Defect Detection, ICPR 2024 (arXiv:2408.03143)")


def supersimplenet_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="supersimplenet",
        paradigm=PARADIGM,
        factory="ad_synth.supersimplenet:SuperSimpleNet",
        trainer="gradient",
        paper=SUPERSIMPLENET_PAPER,
        description="Upscaled layer2+3 features, a feature adaptor, Gaussian feature noise in Perlin masks; a "
                    "segmentation head (the map) and a classification head (the score).",
        defaults={"backbone": "wide_resnet50_2", "layers": ["layer2", "layer3"], "noise_std": 0.015,
                  "perlin_threshold": 0.2, "adaptor_lr": 1e-4, "head_lr": 2e-4, "head_weight_decay": 1e-5,
                  "lr_gamma": 0.4, "lr_milestones": [0.8, 0.9], "sigma": 4.0, "image_size": 256,
                  "batch_size": 32, "num_epochs": 300},
        variants={
            # Real defects with masks (defect_dir) mixed into the batches; no stop-gradient; clipping as the authors.
            "supersimplenet-supervised": {"supervised": True, "grad_clip": 1.0},
            "supersimplenet-r18": {"backbone": "resnet18"},
        },
        # Random-init ResNet-18 features spread far wider than pretrained ones: the paper's σ 0.015 is lost in them,
        # so the tiny test config draws stronger noise.
        test_overrides={"supersimplenet": {"backbone": "resnet18", "batch_size": 8, "num_epochs": 3,
                                           "noise_std": 0.5}},
    )]


# -- GLASS ---------------------------------------------------------------------------------------------------
GLASS_PAPER = ("Chen et al., A Unified Anomaly Synthesis Strategy with Gradient Ascent for Industrial Anomaly "
               "Detection and Localization, ECCV 2024 (arXiv:2407.09359)")


def glass_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="glass",
        paradigm=PARADIGM,
        factory="ad_synth.glass:Glass",
        trainer="gradient",
        paper=GLASS_PAPER,
        description="A patch discriminator over projected layer2+3 patch features, trained on normal features, "
                    "gradient-ascended feature noise (GAS) and texture anomalies in Perlin masks (LAS).",
        defaults={"backbone": "wide_resnet50_2", "layers": ["layer2", "layer3"], "patch_size": 3, "embed_dim": 1536,
                  "discriminator_layers": 2, "discriminator_hidden": 1024, "noise_std": 0.015, "ascent_steps": 20,
                  "ascent_lr": 0.001, "project_every": 5, "radius_quantile": 0.75, "manifold_radius": 0.5,
                  "hard_mining": 0.5, "distribution": "auto", "lr": 1e-4, "sigma": 4.0, "image_size": 288,
                  "batch_size": 8, "num_epochs": 640},
        variants={"glass-r18": {"backbone": "resnet18"}},
        # A narrow embedding and few ascent steps keep the tiny fit short; the code path is the paper's.
        test_overrides={"glass": {"backbone": "resnet18", "embed_dim": 128, "discriminator_hidden": 64,
                                  "ascent_steps": 5, "batch_size": 8, "num_epochs": 2}},
    )]


@hookimpl
def adcore_register_models(register: Callable[[ModelSpec], None]) -> None:
    for spec in [*supersimplenet_specs(), *glass_specs()]:
        register(spec)
