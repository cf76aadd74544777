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


@hookimpl
def adcore_register_models(register: Callable[[ModelSpec], None]) -> None:
    for spec in dinomaly_specs():
        register(spec)
