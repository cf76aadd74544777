"""Registers the normalizing-flow models with ad-core. Light by design: no torch, no model code."""

from __future__ import annotations

from collections.abc import Callable

from ad_core.hookspecs import hookimpl
from ad_core.specs import ModelSpec

CSFLOW_PAPER = ("Rudolph et al., Fully Convolutional Cross-Scale-Flows for Image-based Defect Detection, "
                "WACV 2022")
UFLOW_PAPER = ("Tailanian, Pardo, Musé, U-Flow: A U-shaped Normalizing Flow for Anomaly Detection with "
               "Unsupervised Threshold, 2022/2024")
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
            "fastflow-resnet50": {"backbone": "wide_resnet50_2", "conv3x3_only": False},  # the seed's name
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
        variants={"cflow-resnet18": {"backbone": "resnet18"}, "cflow-resnet50": {"backbone": "resnet50"}},
    ))
    register_csflow_uflow(register)


def register_csflow_uflow(register: Callable[[ModelSpec], None]) -> None:
    register(ModelSpec(
        name="csflow",
        paradigm="flow",
        factory="ad_flow.csflow:CSFlow",
        trainer="gradient",
        paper=CSFLOW_PAPER,
        description="Cross-scale fully convolutional flow over EfficientNet features of the image at 3 sizes.",
        defaults={"backbone": "tf_efficientnet_b5.aa_in1k", "stage": 5, "n_coupling_blocks": 4,
                  "hidden_channels": 1024, "clamp": 3.0, "map_mode": "first", "lr": 2e-4, "weight_decay": 1e-5,
                  "image_size": 768, "batch_size": 16, "num_epochs": 240, "grad_clip": 1.0},
        variants={"csflow-b0": {"backbone": "efficientnet_b0", "stage": 5, "hidden_channels": 256,
                                "image_size": 256}},
    ))
    register(ModelSpec(
        name="uflow",
        paradigm="flow",
        factory="ad_flow.uflow:UFlow",
        trainer="gradient",
        paper=UFLOW_PAPER,
        description="U-shaped multi-scale flow over MS-CaiT features; a-contrario (NFA) automatic threshold.",
        defaults={"backbone": "mcait", "flow_steps": 4, "clamp": 2.0, "subnet_ratio": 1.0, "score_map": "nfa",
                  "nfa_window": 7, "nfa_probability": 0.5, "threshold_method": "nfa", "lr": 1e-4, "weight_decay": 1e-5,
                  "image_size": 448, "batch_size": 8, "num_epochs": 200},
        variants={
            "uflow-resnet18": {"backbone": "resnet18", "image_size": 256},
            "uflow-wrn50": {"backbone": "wide_resnet50_2", "image_size": 256},
            "uflow-resnet50": {"backbone": "wide_resnet50_2", "image_size": 256},  # the seed's name
            "uflow-mcait": {},  # the seed's name for the paper's configuration
        },
    ))
