"""Registers the normalizing-flow models with ad-core. Light by design: no torch, no model code.

Layout (every plugin.py): paper constants, one `*_specs()` function per model, one hook registering them all.
"""

from __future__ import annotations

from collections.abc import Callable

from ad_core.plugin_api import ModelSpec, hookimpl

PARADIGM = "flow"
FASTFLOW_PAPER = ("Yu et al., FastFlow: Unsupervised Anomaly Detection and Localization via 2D Normalizing Flows, "
                  "arXiv 2111.07677, 2021")
CFLOW_PAPER = ("Gudovskiy et al., CFLOW-AD: Real-Time Unsupervised Anomaly Detection with Localization via "
               "Conditional Normalizing Flows, WACV 2022")
CSFLOW_PAPER = ("Rudolph et al., Fully Convolutional Cross-Scale-Flows for Image-based Defect Detection, "
                "WACV 2022")
UFLOW_PAPER = ("Tailanian, Pardo, Musé, U-Flow: A U-shaped Normalizing Flow for Anomaly Detection with "
               "Unsupervised Threshold, 2022/2024")

# The paper's settings per backbone (flow steps, hidden ratio, subnet kernels; transformer block read).
FASTFLOW_TRANSFORMER = {"flow_steps": 20, "hidden_ratio": 0.16, "conv3x3_only": False}
# The conformance suite never builds a paper-size CaiT or DeiT: their variants run with the smallest timm
# model of the same family, at 64 px, with two flow steps.
TINY_TRANSFORMER = {"image_size": 64, "feature_block": 2, "flow_steps": 2}
SQUARE_ONLY = "the flow's layer norms and subnets are built for one square feature map (image_size)"


def fastflow_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="fastflow",
        min_image_size=32,  # layer3 (stride 16) at 2x2
        paradigm=PARADIGM,
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
        test_overrides={
            "fastflow": {"image_size": 64, "flow_steps": 2, "batch_size": 8, "num_epochs": 3,
                         "early_stopping_patience": None, "test_square_only": SQUARE_ONLY},
            "fastflow-wrn50": {"backbone": "resnet18"},
            "fastflow-cait": {"backbone": "cait_xxs24_224", **TINY_TRANSFORMER},
            "fastflow-deit": {"backbone": "deit_tiny_distilled_patch16_224", **TINY_TRANSFORMER},
        },
    )]


def cflow_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="cflow",
        min_image_size=32,  # layer4 (stride 32) at 1x1
        paradigm=PARADIGM,
        factory="ad_flow.cflow:CFlow",
        paper=CFLOW_PAPER,
        description="Conditional normalizing flows over feature fibers with positional encoding, fiber-batch training.",
        defaults={"backbone": "wide_resnet50_2", "layers": ["layer2", "layer3", "layer4"], "coupling_blocks": 8,
                  "clamp_alpha": 1.9, "condition_dim": 128, "fiber_batch_size": 256, "soft_permutation": True,
                  "lr": 2e-4, "lr_schedule": True, "meta_epochs": 25, "image_size": 256, "batch_size": 32,
                  "num_epochs": 200},
        variants={"cflow-resnet18": {"backbone": "resnet18"}, "cflow-resnet50": {"backbone": "resnet50"}},
        test_overrides={"cflow": {"backbone": "resnet18", "image_size": 64, "coupling_blocks": 2,
                                  "fiber_batch_size": 32, "batch_size": 8, "num_epochs": 2,
                                  "soft_permutation": False}},
    )]


def csflow_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="csflow",
        min_image_size=64,  # the quarter-scale input through stride 32 at 1x1
        paradigm=PARADIGM,
        factory="ad_flow.csflow:CSFlow",
        trainer="gradient",
        paper=CSFLOW_PAPER,
        description="Cross-scale fully convolutional flow over EfficientNet features of the image at 3 sizes.",
        defaults={"backbone": "tf_efficientnet_b5.aa_in1k", "stage": 5, "n_coupling_blocks": 4,
                  "hidden_channels": 1024, "clamp": 3.0, "map_mode": "first", "lr": 2e-4, "weight_decay": 1e-5,
                  "image_size": 768, "batch_size": 16, "num_epochs": 240, "grad_clip": 1.0},
        variants={"csflow-b0": {"backbone": "efficientnet_b0", "stage": 5, "hidden_channels": 256,
                                "image_size": 256}},
        # Never the paper's EfficientNet-B5 at 768 px in tests: B0, stage 4, 64 px.
        test_overrides={"csflow": {"backbone": "efficientnet_b0", "stage": 4, "hidden_channels": 32,
                                   "n_coupling_blocks": 2, "num_epochs": 2, "batch_size": 8, "lr": 1e-3,
                                   "image_size": 64},
                        "csflow-b0": {"stage": 4, "hidden_channels": 32, "image_size": 64}},
    )]


def uflow_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="uflow",
        min_image_size=64,  # the coarsest flow scale at 1x1
        paradigm=PARADIGM,
        factory="ad_flow.uflow:UFlow",
        trainer="gradient",
        paper=UFLOW_PAPER,
        description="U-shaped multi-scale flow over MS-CaiT features; a-contrario (NFA) automatic threshold.",
        exportable=False,
        export_note="its NFA map rounds windowed counts of channels up to integers (the binomial tail), so the "
                    "float rounding of another runtime moves pixels across integers and the maps differ beyond the "
                    "export tolerance",
        defaults={"backbone": "mcait", "flow_steps": 4, "clamp": 2.0, "subnet_ratio": 1.0, "score_map": "nfa",
                  "nfa_window": 7, "nfa_probability": 0.5, "threshold_method": "nfa", "lr": 1e-4, "weight_decay": 1e-5,
                  "image_size": 448, "batch_size": 8, "num_epochs": 200},
        variants={
            "uflow-resnet18": {"backbone": "resnet18", "image_size": 256},
            "uflow-wrn50": {"backbone": "wide_resnet50_2", "image_size": 256},
            "uflow-resnet50": {"backbone": "wide_resnet50_2", "image_size": 256},  # the seed's name
            "uflow-mcait": {},  # the seed's name for the paper's configuration
        },
        # The MS-CaiT extractor (two paper-size CaiTs) is tested with a tiny CaiT in the plugin's own tests.
        test_overrides={"uflow": {"backbone": "resnet18", "image_size": 64, "num_epochs": 2, "batch_size": 8},
                        "uflow-resnet18": {"image_size": 64}, "uflow-wrn50": {"backbone": "resnet18",
                                                                              "image_size": 64}},
    )]


@hookimpl
def adcore_register_models(register: Callable[[ModelSpec], None]) -> None:
    for spec in [*fastflow_specs(), *cflow_specs(), *csflow_specs(), *uflow_specs()]:
        register(spec)
