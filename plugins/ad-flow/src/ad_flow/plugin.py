"""Registers the normalizing-flow models with ad-core. Light by design: no torch, no model code."""

from __future__ import annotations

from collections.abc import Callable

from ad_core.hookspecs import hookimpl
from ad_core.specs import ModelSpec

FASTFLOW_PAPER = ("Yu et al., FastFlow: Unsupervised Anomaly Detection and Localization via 2D Normalizing Flows, "
                  "arXiv 2111.07677, 2021")
CFLOW_PAPER = ("Gudovskiy et al., CFLOW-AD: Real-Time Unsupervised Anomaly Detection with Localization via "
               "Conditional Normalizing Flows, WACV 2022")

# The paper's settings per backbone (flow steps, hidden ratio, subnet kernels; transformer block read).
FASTFLOW_TRANSFORMER = {"flow_steps": 20, "hidden_ratio": 0.16, "conv3x3_only": False}


@hookimpl
def adcore_register_models(register: Callable[[ModelSpec], None]) -> None:
    register(ModelSpec(
        name="fastflow",
        paradigm="flow",
        factory="ad_flow.fastflow:FastFlow",
        paper=FASTFLOW_PAPER,
        description="2D normalizing flows with convolutional subnets over backbone feature maps.",
        defaults={"backbone": "resnet18", "layers": ["layer1", "layer2", "layer3"], "flow_steps": 8,
                  "hidden_ratio": 1.0, "conv3x3_only": True, "clamp": 2.0, "lr": 1e-3, "weight_decay": 1e-5,
                  "image_size": 256, "batch_size": 32, "num_epochs": 500, "early_stopping_patience": 3},
        variants={
            "fastflow-resnet18": {},
            "fastflow-wrn50": {"backbone": "wide_resnet50_2", "conv3x3_only": False},
            "fastflow-cait": {"backbone": "cait_m48_448", "feature_block": 40, "image_size": 448,
                              **FASTFLOW_TRANSFORMER},
            "fastflow-deit": {"backbone": "deit_base_distilled_patch16_384", "feature_block": 7, "image_size": 384,
                              **FASTFLOW_TRANSFORMER},
        },
    ))
    register(ModelSpec(
        name="cflow",
        paradigm="flow",
        factory="ad_flow.cflow:CFlow",
        paper=CFLOW_PAPER,
        description="Conditional normalizing flows over feature fibers with positional encoding, fiber-batch training.",
        defaults={"backbone": "wide_resnet50_2", "layers": ["layer2", "layer3", "layer4"], "coupling_blocks": 8,
                  "clamp_alpha": 1.9, "condition_dim": 128, "fiber_batch_size": 256, "soft_permutation": True,
                  "lr": 2e-4, "lr_schedule": True, "meta_epochs": 25, "image_size": 256, "batch_size": 32,
                  "num_epochs": 200},
        variants={"cflow-resnet18": {"backbone": "resnet18"}},
    ))
