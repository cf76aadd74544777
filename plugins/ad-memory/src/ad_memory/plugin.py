"""Registers the memory-bank models with ad-core. Light by design: no torch, no model code.

Layout (every plugin.py): paper constants, one `*_specs()` function per model, one hook registering them all.
"""

from __future__ import annotations

from collections.abc import Callable

from ad_core.plugin_api import ModelSpec, hookimpl

PARADIGM = "memory"
PADIM_PAPER = ("Defard et al., PaDiM: a Patch Distribution Modeling Framework for Anomaly Detection "
               "and Localization, ICPR 2020 workshops")
PATCHCORE_PAPER = "Roth et al., Towards Total Recall in Industrial Anomaly Detection, CVPR 2022"
DFKDE_PAPER = "Deep Feature KDE as in anomalib (Akcay et al., Anomalib, ICIP 2022); Gaussian KDE, Scott's rule"

TINY = {"backbone": "resnet18", "batch_size": 8}  # the conformance suite's config: random-weight ResNet-18, 64 px


def padim_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="padim",
        min_image_size=32,  # layer3 (stride 16) at 2x2
        paradigm=PARADIGM,
        factory="ad_memory.padim:Padim",
        trainer="feature_bank",
        paper=PADIM_PAPER,
        description="Per-position Gaussian of multi-layer CNN features; Mahalanobis distance map.",
        defaults={"backbone": "resnet18", "layers": ["layer1", "layer2", "layer3"], "n_features": 100,
                  "epsilon": 0.01, "sigma": 4.0, "image_size": 256, "batch_size": 32},
        variants={"padim-wrn50": {"backbone": "wide_resnet50_2", "n_features": 550, "stats_dtype": "float32"}},
        # ResNet-18's layers 1-3 have 448 channels, fewer than the WRN-50 variant's 550 selected features.
        test_overrides={"padim": TINY, "padim-wrn50": {"n_features": 300}},
    )]


def patchcore_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="patchcore",
        min_image_size=32,  # layer3 (stride 16) at 2x2
        paradigm=PARADIGM,
        factory="ad_memory.patchcore:PatchCore",
        trainer="feature_bank",
        paper=PATCHCORE_PAPER,
        description="Coreset memory bank of locally aware patch features; nearest-neighbour scores.",
        defaults={"backbone": "wide_resnet50_2", "layers": ["layer2", "layer3"], "coreset_ratio": 0.1,
                  "num_neighbors": 9, "pretrain_embed_dim": 1024, "target_embed_dim": 1024,
                  "projection_dim": 128, "sigma": 4.0, "image_size": 256, "batch_size": 32},
        variants={"patchcore-r18": {"backbone": "resnet18"}},
        test_overrides={"patchcore": TINY},
    )]


def dfkde_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="dfkde",
        min_image_size=32,  # layer4 (stride 32) at 1x1
        paradigm=PARADIGM,
        factory="ad_memory.dfkde:Dfkde",
        trainer="feature_bank",
        paper=DFKDE_PAPER,
        description="Gaussian KDE over PCA-reduced, globally pooled deep features (image scores only).",
        defaults={"backbone": "resnet18", "layers": ["layer4"], "n_pca_components": 16,
                  "feature_scaling": "scale", "max_training_points": 40000, "image_size": 256,
                  "batch_size": 32},
        # DFKDE scores whole images from globally pooled layer-4 features. With a random-weight backbone those are
        # close to global colour statistics, so only defects that change a good share of the image move them: the
        # ranking check runs on the object category whose defects (holes, missing pieces) do that.
        test_overrides={"dfkde": {**TINY, "test_category": "plate"}},
    )]


@hookimpl
def adcore_register_models(register: Callable[[ModelSpec], None]) -> None:
    for spec in [*padim_specs(), *patchcore_specs(), *dfkde_specs()]:
        register(spec)
