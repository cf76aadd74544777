"""Registers the knowledge-distillation models with ad-core. Light by design: no torch, no model code.

Layout (every plugin.py): paper constants, one `*_specs()` function per model, one hook registering them all
(and, here, one hook adding the `efficientad-distill` command).
"""

from __future__ import annotations

from collections.abc import Callable

from ad_core.plugin_api import ModelSpec, hookimpl

PARADIGM = "kd"


# -- STFPM -----------------------------------------------------------------------------------------------
STFPM_PAPER = ("Wang et al., Student-Teacher Feature Pyramid Matching for Anomaly Detection, BMVC 2021 "
               "(arXiv:2103.04257)")


def stfpm_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="stfpm",
        min_image_size=32,  # layer3 (stride 16) at 2x2
        paradigm=PARADIGM,
        factory="ad_kd.stfpm:Stfpm",
        trainer="gradient",
        paper=STFPM_PAPER,
        description="A random-init student regresses a frozen teacher's normalised layer1-3 features; "
                    "the product of per-layer distance maps.",
        defaults={"backbone": "resnet18", "layers": ["layer1", "layer2", "layer3"], "lr": 0.4, "momentum": 0.9,
                  "weight_decay": 1e-4, "fusion": "product", "image_size": 256, "batch_size": 32,
                  "num_epochs": 100},
        test_overrides={"stfpm": {"batch_size": 8, "num_epochs": 3}},
    )]


# -- FRE -------------------------------------------------------------------------------------------------
FRE_PAPER = ("Ndiour et al., FRE: A Fast Method For Anomaly Detection And Segmentation, BMVC 2023 "
             "(arXiv:2211.12650)")


def fre_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="fre",
        min_image_size=32,  # layer3 (stride 16) pooled to 1x1
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
        # The autoencoder's input is the pooled feature tensor of one image size, so the size is a model option.
        test_overrides={"fre": {"backbone": "resnet18", "image_size": 64, "batch_size": 8, "num_epochs": 10,
                                "test_square_only": "the autoencoder is sized for one square feature map"},
                        "fre-wrn50": {"pooling_kernel_size": 2}},
    )]


# -- Reverse Distillation ----------------------------------------------------------------------------------
RD_PAPER = ("Deng and Li, Anomaly Detection via Reverse Distillation from One-Class Embedding, CVPR 2022 "
            "(arXiv:2201.10703)")


def reverse_distillation_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="reverse_distillation",
        min_image_size=32,  # the bottleneck (stride 32) at 1x1
        paradigm=PARADIGM,
        factory="ad_kd.reverse_distillation:ReverseDistillation",
        trainer="gradient",
        paper=RD_PAPER,
        description="Frozen encoder, one-class bottleneck and a mirrored decoder that reconstructs the "
                    "encoder's layer1-3 features; summed cosine-distance maps.",
        defaults={"backbone": "wide_resnet50_2", "lr": 0.005,
                  "betas": [0.5, 0.999], "fusion": "sum", "sigma": 4.0, "image_size": 256, "batch_size": 16,
                  "num_epochs": 200},
        variants={"reverse_distillation-r18": {"backbone": "resnet18"}},
        # At 64 px the one-class embedding is a 2x2 grid and layer3 4x4, too coarse to localise anything; 128 px
        # (embedding 4x4) is the smallest size at which the decoder has a spatial map to reconstruct.
        test_overrides={"reverse_distillation": {"backbone": "resnet18", "image_size": 128, "batch_size": 8,
                                                 "num_epochs": 4}},
    )]


# -- EfficientAD -------------------------------------------------------------------------------------------
EFFICIENTAD_PAPER = ("Batzner, Heckler and König, EfficientAD: Accurate Visual Anomaly Detection at "
                     "Millisecond-Level Latencies, WACV 2024 (arXiv:2303.14535)")


def efficientad_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="efficientad",
        min_image_size=33,  # one 33 px PDN patch
        paradigm=PARADIGM,
        factory="ad_kd.efficientad.model:EfficientAD",
        trainer="gradient",
        paper=EFFICIENTAD_PAPER,
        description="A student PDN imitates a distilled teacher PDN (hard-feature loss, ImageNet penalty) and an "
                    "autoencoder; quantile-normalised local and global maps averaged.",
        defaults={"size": "small", "padding": True, "lr": 1e-4, "weight_decay": 1e-5, "image_size": 256,
                  "batch_size": 1, "eval_batch_size": 16, "max_steps": 70_000, "checkpoint_every": 1000,
                  "normalize": False},
        variants={"efficientad-small": {}, "efficientad-medium": {"size": "medium"}},
        # PDN-S at 48 px (above the 33 px minimum), 3 steps, random teacher: the teacher's features, normalised
        # over the normal images, already tell the clear demo defects from the texture the student imitates.
        test_overrides={"efficientad": {"image_size": 48, "max_steps": 3, "eval_batch_size": 8}},
    )]


@hookimpl
def adcore_register_models(register: Callable[[ModelSpec], None]) -> None:
    for spec in [*stfpm_specs(), *fre_specs(), *reverse_distillation_specs(), *efficientad_specs()]:
        register(spec)


@hookimpl
def adcore_register_commands(cli) -> None:
    import click

    @cli.command("efficientad-distill")
    @click.option("--images", required=True, type=click.Path(exists=True, file_okay=False),
                  help="Folder of natural images (ImageNet in the paper), searched recursively.")
    @click.option("--out", required=True, type=click.Path(dir_okay=False), help="Teacher weights to write.")
    @click.option("--size", type=click.Choice(["small", "medium"]), default="small", show_default=True)
    @click.option("--backbone", default="wide_resnet101_2", show_default=True, help="timm name of the backbone.")
    @click.option("--steps", type=int, default=60_000, show_default=True)
    @click.option("--batch-size", type=int, default=16, show_default=True)
    @click.option("--image-size", type=int, default=256, show_default=True, help="The PDN's input size.")
    @click.option("--backbone-dir", default=None, help="Folder with <timm name>.safetensors backbone weights.")
    @click.option("--weights-file", default=None, help="The backbone's weights file.")
    @click.option("--random-backbone", is_flag=True, help="Random backbone weights (for tests only).")
    @click.option("--device", default=None)
    @click.option("--seed", type=int, default=0, show_default=True)
    def efficientad_distill(images, out, size, backbone, steps, batch_size, image_size, backbone_dir, weights_file,
                            random_backbone, device, seed) -> None:
        """Distil a backbone's patch features into an EfficientAD teacher PDN, offline (the paper's pretraining).

        The model then loads the file: `adcore train ... --model efficientad --set teacher_weights=FILE`.
        """
        from ad_kd.efficientad.distill import distill_teacher

        path = distill_teacher(images, out, size=size, backbone=backbone, steps=steps, batch_size=batch_size,
                               image_size=image_size, pretrained=not random_backbone, weights_file=weights_file,
                               backbone_dir=backbone_dir, device=device, seed=seed)
        click.echo(f"teacher written to {path}")
