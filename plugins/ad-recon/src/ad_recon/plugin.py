"""Registers the reconstruction models with ad-core. Light by design: no torch, no model code.

Layout (every plugin.py): paper constants, one `*_specs()` function per model, one hook registering them all.
"""

from __future__ import annotations

from collections.abc import Callable

from ad_core.plugin_api import ModelSpec, hookimpl

PARADIGM = "recon"


# -- DiffusionAD -------------------------------------------------------------------------------------------
DIFFUSIONAD_PAPER = ("Zhang et al., DiffusionAD: Norm-guided One-step Denoising Diffusion for Anomaly Detection "
                     "(arXiv:2303.08730)")

# A network small enough to fit on a CPU in a test: three levels, attention at 1/4 (16x16 positions at 64 px) and in
# the middle; 64 px is the smallest size at which the segmentation network's 1/32 bottleneck still has more than
# one value per channel for batch norm with one image. 48 steps of 2 images: fewer steps do not yet rank the
# clear defects (the segmentation network learns the masks slowly).
_DIFFUSIONAD_TINY = {"base_channels": 32, "channel_mults": [1, 2, 2], "num_res_blocks": 1, "attention_downsample": [4],
                     "num_heads": 2, "seg_base_channels": 16, "image_size": 64, "batch_size": 2, "num_epochs": 6,
                     "lr": 1e-3, "seg_lr": 1e-3}


def diffusionad_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="diffusionad",
        paradigm=PARADIGM,
        factory="ad_recon.diffusionad:DiffusionAD",
        trainer="gradient",
        paper=DIFFUSIONAD_PAPER,
        description="Noise-to-norm reconstruction by norm-guided one-step denoising (guided-diffusion UNet, "
                    "t = 200 and 400) and a segmentation network on [image, reconstruction]; top-50 mean score.",
        defaults={"base_channels": 128, "channel_mults": [1, 1, 2, 2, 4, 4], "num_res_blocks": 2,
                  "attention_downsample": [8, 16, 32], "num_heads": 4, "seg_base_channels": 64, "timesteps": 1000,
                  "normal_t_range": 300, "condition_w": 1.0, "eval_normal_t": 200, "eval_noisier_t": 400,
                  "lr": 1e-4, "seg_lr": 1e-5, "image_size": 256, "batch_size": 16, "eval_batch_size": 8,
                  "num_epochs": 3000, "normalize": False},
        variants={"diffusionad-small": {"base_channels": 32, "channel_mults": [1, 2, 2, 4], "num_res_blocks": 1,
                                        "attention_downsample": [8], "num_heads": 4, "seg_base_channels": 16,
                                        "image_size": 128, "batch_size": 8, "num_epochs": 30, "lr": 1e-3,
                                        "seg_lr": 1e-3}},
        test_overrides={"diffusionad": dict(_DIFFUSIONAD_TINY), "diffusionad-small": {}},
    )]


@hookimpl
def adcore_register_models(register: Callable[[ModelSpec], None]) -> None:
    for spec in [*diffusionad_specs()]:
        register(spec)
