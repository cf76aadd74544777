"""Registers the foundation-model detectors with ad-core. Light by design: no torch, no model code.

Layout (every plugin.py): paper constants, one `*_specs()` function per model, one hook registering them all.
"""

from __future__ import annotations

from collections.abc import Callable

from ad_core.plugin_api import ModelSpec, hookimpl

PARADIGM = "foundation"


# -- Dinomaly --------------------------------------------------------------------------------------------
DINOMALY_PAPER = ("Guo et al., Dinomaly: The Less Is More Philosophy in Multi-Class Unsupervised Anomaly Detection, "
                  "CVPR 2025 (arXiv:2405.14325)")
DINOMALY_ENCODERS = {size: f"vit_{size}_patch14_reg4_dinov2" for size in ("small", "base", "large")}
# Input size -> (resize, centre crop) as the authors' scripts: R448-C392 by default, R448-C448 for 448, and
# R256-C224 (the same 8:7 ratio as 448:392) for 224.
DINOMALY_SIZES = {224: (256, 224), 392: (448, 392), 448: (448, 448)}
# A tiny DINOv2-reg for the conformance suite (random weights): ten blocks reach ViT-S/B's block 9.
TINY_DINO = {"depth": 10, "embed_dim": 32, "num_heads": 2}


def dinomaly_specs() -> list[ModelSpec]:
    variants = {
        f"dinomaly-{size}-{crop}": {"backbone": encoder, "image_size": resize, "center_crop": crop}
        for size, encoder in DINOMALY_ENCODERS.items() for crop, (resize, _) in DINOMALY_SIZES.items()
    }
    large = {name: {"vit_overrides": {**TINY_DINO, "depth": 19}} for name in variants if "-large-" in name}
    return [ModelSpec(
        name="dinomaly",
        paradigm=PARADIGM,
        factory="ad_foundation.dinomaly:Dinomaly",
        trainer="gradient",
        paper=DINOMALY_PAPER,
        description="A frozen DINOv2-reg ViT's middle blocks, a noisy MLP bottleneck and a linear-attention ViT "
                    "decoder reconstructing two fused block groups (loose cosine loss with hard mining); the "
                    "map is 1 - cos, the score the mean of its top 1 %. Built to train one model for all "
                    "categories.",
        defaults={"backbone": DINOMALY_ENCODERS["base"], "image_size": 448, "center_crop": 392, "batch_size": 16,
                  "max_steps": 5000, "unified_max_steps": 10000, "grad_clip": 0.1, "bottleneck_dropout": 0.2,
                  "lr": 2e-3, "final_lr": 2e-4,
                  "warmup_steps": 100, "weight_decay": 1e-4, "mining_final_ratio": 0.9, "mining_ramp_steps": 1000,
                  "easy_gradient_factor": 0.1, "sigma": 4.0, "map_size": 256, "top_ratio": 0.01},
        variants=variants,
        test_overrides={
            "dinomaly": {"image_size": 64, "center_crop": 56, "batch_size": 4, "max_steps": 3, "warmup_steps": 0,
                         "map_size": 64, "vit_overrides": TINY_DINO},
            **large,
        },
        min_image_size=14,
    )]


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
    for spec in [*dinomaly_specs(), *uninet_specs()]:
        register(spec)
