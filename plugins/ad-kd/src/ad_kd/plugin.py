"""Registers the knowledge-distillation models with ad-core. Light by design: no torch, no model code.

One block per model; each returns its `ModelSpec`s and the hook registers them all.
"""

from __future__ import annotations

from collections.abc import Callable

from ad_core.hookspecs import hookimpl
from ad_core.specs import ModelSpec

PARADIGM = "kd"


# -- STFPM -----------------------------------------------------------------------------------------------
STFPM_PAPER = ("Wang et al., Student-Teacher Feature Pyramid Matching for Anomaly Detection, BMVC 2021 "
               "(arXiv:2103.04257)")


def stfpm_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="stfpm",
        paradigm=PARADIGM,
        factory="ad_kd.stfpm:Stfpm",
        trainer="gradient",
        paper=STFPM_PAPER,
        description="A random-init student regresses a frozen teacher's normalised layer1-3 features; "
                    "the product of per-layer distance maps.",
        defaults={"backbone": "resnet18", "layers": ["layer1", "layer2", "layer3"], "lr": 0.4, "momentum": 0.9,
                  "weight_decay": 1e-4, "fusion": "product", "image_size": 256, "batch_size": 32,
                  "num_epochs": 100},
    )]


# -- FRE -------------------------------------------------------------------------------------------------
FRE_PAPER = ("Ndiour et al., FRE: A Fast Method For Anomaly Detection And Segmentation, BMVC 2023 "
             "(arXiv:2211.12650)")


def fre_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="fre",
        paradigm=PARADIGM,
        factory="ad_kd.fre:Fre",
        trainer="gradient",
        paper=FRE_PAPER,
        description="A tied linear autoencoder over pooled layer-3 features; the feature reconstruction "
                    "error, per position for the map.",
        defaults={"backbone": "resnet50", "layer": "layer3", "pooling_kernel_size": 2, "latent_dim": 220,
                  "lr": 1e-3, "image_size": 256, "batch_size": 32, "num_epochs": 6},
        variants={
            "fre-wrn50": {"backbone": "wide_resnet50_2", "pooling_kernel_size": 4},
            "fre-r18": {"backbone": "resnet18"},
        },
    )]


# -- Reverse Distillation ----------------------------------------------------------------------------------
RD_PAPER = ("Deng and Li, Anomaly Detection via Reverse Distillation from One-Class Embedding, CVPR 2022 "
            "(arXiv:2201.10703)")


def reverse_distillation_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="reverse_distillation",
        paradigm=PARADIGM,
        factory="ad_kd.reverse_distillation:ReverseDistillation",
        trainer="gradient",
        paper=RD_PAPER,
        description="Frozen encoder, one-class bottleneck and a mirrored decoder that reconstructs the "
                    "encoder's layer1-3 features; summed cosine-distance maps.",
        defaults={"backbone": "wide_resnet50_2", "layers": ["layer1", "layer2", "layer3"], "lr": 0.005,
                  "betas": [0.5, 0.999], "fusion": "sum", "sigma": 4.0, "image_size": 256, "batch_size": 16,
                  "num_epochs": 200},
        variants={"reverse_distillation-r18": {"backbone": "resnet18"}},
    )]


@hookimpl
def adcore_register_models(register: Callable[[ModelSpec], None]) -> None:
    for spec in [*stfpm_specs(), *fre_specs(), *reverse_distillation_specs()]:
        register(spec)
