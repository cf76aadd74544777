"""Registers the reconstruction models with ad-core. Light by design: no torch, no model code.

Layout (every plugin.py): paper constants, one `*_specs()` function per model, one hook registering them all.
"""

from __future__ import annotations

from collections.abc import Callable

from ad_core.plugin_api import ModelSpec, hookimpl

PARADIGM = "recon"


# -- Autoencoder -------------------------------------------------------------------------------------------
AUTOENCODER_PAPER = ("Bergmann, Löwe, Fauser, Sattlegger and Steger, Improving Unsupervised Defect Segmentation by "
                     "Applying Structural Similarity to Autoencoders, VISAPP 2019 (arXiv:1807.02011)")


def autoencoder_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="autoencoder",
        paradigm=PARADIGM,
        factory="ad_recon.autoencoder:Autoencoder",
        trainer="gradient",
        paper=AUTOENCODER_PAPER,
        description="A convolutional autoencoder with a 100-value latent trained on normal images; the per-pixel "
                    "residual (L2, or 1 - SSIM) is the map, its maximum the score.",
        defaults={"loss": "l2", "latent_dim": 100, "lr": 2e-4, "weight_decay": 1e-5, "image_size": 128,
                  "batch_size": 128, "num_epochs": 200, "normalize": False},
        variants={"autoencoder-ssim": {"loss": "ssim"}},
        # L2 reconstructs the flat-background demo plate well in a few steps, SSIM the weave texture (the
        # paper's finding: SSIM helps on textures); each is checked where it separates clear defects quickly.
        test_overrides={"autoencoder": {"image_size": 64, "batch_size": 8, "num_epochs": 8, "lr": 1e-3,
                                        "test_category": "plate"},
                        "autoencoder-ssim": {"num_epochs": 15, "test_category": "weave"}},
    )]


# -- GANomaly ----------------------------------------------------------------------------------------------
GANOMALY_PAPER = ("Akçay, Atapour-Abarghouei and Breckon, GANomaly: Semi-Supervised Anomaly Detection via "
                  "Adversarial Training, ACCV 2018 (arXiv:1805.06725)")


def ganomaly_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="ganomaly",
        paradigm=PARADIGM,
        factory="ad_recon.ganomaly:Ganomaly",
        trainer="gradient",
        paper=GANOMALY_PAPER,
        description="Encoder-decoder-encoder generator against a DCGAN discriminator; the score is the distance "
                    "between the image's latent and its reconstruction's latent (image level only).",
        defaults={"latent_dim": 100, "n_features": 64, "lr": 2e-4, "beta1": 0.5, "beta2": 0.999, "w_adv": 1.0,
                  "w_con": 50.0, "w_enc": 1.0, "image_size": 64, "batch_size": 64, "num_epochs": 15,
                  "normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
        test_overrides={"ganomaly": {"image_size": 32, "n_features": 16, "batch_size": 4, "num_epochs": 25,
                                     "test_square_only": "the DCGAN encoder reduces one square size to a 1x1 "
                                                         "latent"}},
    )]


# -- DRAEM -------------------------------------------------------------------------------------------------
DRAEM_PAPER = ("Zavrtanik, Kristan and Skočaj, DRAEM - A discriminatively trained reconstruction embedding for "
               "surface anomaly detection, ICCV 2021 (arXiv:2108.07610)")


def draem_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="draem",
        paradigm=PARADIGM,
        factory="ad_recon.draem:Draem",
        trainer="gradient",
        paper=DRAEM_PAPER,
        description="A reconstructive network restores images with Perlin-masked synthetic anomalies; a "
                    "discriminative U-Net segments them from the input and its reconstruction.",
        defaults={"anomaly_source_dir": None, "lr": 1e-4, "lr_milestones": [0.8, 0.9], "lr_gamma": 0.2,
                  "score_pooling": 21, "anomaly_probability": 0.5, "rotation_probability": 0.3,
                  "reconstructive_width": 128,
                  "discriminative_width": 64, "image_size": 256, "batch_size": 8, "num_epochs": 700,
                  "normalize": False, "focal_alpha": None, "empty_mask_retries": 0, "opacity_range": [0.2, 1.0]},
        test_overrides={"draem": {"reconstructive_width": 8, "discriminative_width": 8, "image_size": 32,
                                  "batch_size": 8, "num_epochs": 10, "lr": 1e-3, "score_pooling": 5}},
    )]


# -- DiffusionAD -------------------------------------------------------------------------------------------
DIFFUSIONAD_PAPER = ("Zhang et al., DiffusionAD: Norm-guided One-step Denoising Diffusion for Anomaly Detection "
                     "(arXiv:2303.08730)")

# A network small enough to fit on a CPU in a test: three levels, attention at 1/4 (16x16 positions at 64 px) and in
# the middle; 64 px is the smallest size at which the segmentation network's 1/32 bottleneck still has more than
# one value per channel for batch norm with one image. 112 steps of 2 images: at 48 the ranking of the clear
# defects depended on the thread count (AUROC 0.72 with 2 threads, 0.78 with 1); at 112 it was 0.94 and 0.86.
_DIFFUSIONAD_TINY = {"base_channels": 32, "channel_mults": [1, 2, 2], "num_res_blocks": 1, "attention_downsample": [4],
                     "num_heads": 2, "seg_base_channels": 16, "image_size": 64, "batch_size": 2, "num_epochs": 14,
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
                  "lr": 1e-4, "seg_lr": 1e-5, "seg_cosine_steps": 10, "anomaly_source_dir": None,
                  "foreground_dir": None, "image_size": 256, "batch_size": 16, "eval_batch_size": 8,
                  "num_epochs": 3000, "normalize": False},
        variants={"diffusionad-small": {"base_channels": 32, "channel_mults": [1, 2, 2, 4], "num_res_blocks": 1,
                                        "attention_downsample": [8], "num_heads": 4, "seg_base_channels": 16,
                                        "image_size": 128, "batch_size": 8, "num_epochs": 30, "lr": 1e-3,
                                        "seg_lr": 1e-3}},
        test_overrides={"diffusionad": dict(_DIFFUSIONAD_TINY), "diffusionad-small": {}},
        exportable=False,
        export_note="its inference draws fixed noise from a seeded torch.Generator, which the ONNX exporter cannot "
                    "trace; score it with adcore predict",
    )]


# -- DSR ---------------------------------------------------------------------------------------------------
DSR_PAPER = ("Zavrtanik, Kristan and Skočaj, DSR - A dual subspace re-projection network for surface anomaly "
             "detection, ECCV 2022 (arXiv:2208.01521)")


def dsr_specs() -> list[ModelSpec]:
    return [ModelSpec(
        name="dsr",
        min_image_size=64,
        paradigm=PARADIGM,
        factory="ad_recon.dsr:Dsr",
        trainer="gradient",
        exportable=False,
        export_note="its vector quantisers pick the nearest code by argmin, and codes that are nearly tied flip "
                    "under another runtime's float rounding (maps moved by 0.01 in the parity check); score it "
                    "with adcore predict",
        paper=DSR_PAPER,
        description="A frozen dual-subspace VQ-VAE; subspace restriction and an object-specific decoder trained on "
                    "anomalies made in the quantised features; a U-Net segments the two reconstructions' difference.",
        defaults={"vq_weights": None, "embedding_dim": 128, "num_embeddings": 4096, "hidden_channels": 128,
                  "residual_channels": 64, "residual_layers": 2, "detection_width": 64,
                  "latent_anomaly_strength": 0.2, "anomaly_probability": 0.5, "lr": 2e-4, "upsampling_lr": 2e-4,
                  "lr_milestone": 0.8, "lr_gamma": 0.1, "upsampling_fraction": 1 / 3, "score_pooling": 21,
                  "image_size": 256, "batch_size": 8, "num_epochs": 150, "normalize": False},
        # Untrained VQ stage, tiny codebooks and widths, 64 px (the smallest size the restriction modules train at),
        # 2 epochs of 2 batches: 3 phase-1 steps, 1 phase-2 step. The ranking check cannot hold here: with an
        # untrained VQ stage the general decoder's image is nearly the same for every input (and a tiny VQ trained
        # for 300 steps on demo images still gave chance-level rankings after 6 epochs), so DSR's detector has no
        # signal to learn from; it needs the pretrained VQ stage, so the ranking check is skipped with that reason.
        test_overrides={"dsr": {"vq_weights": "random", "embedding_dim": 8, "num_embeddings": 32,
                                "hidden_channels": 8, "residual_channels": 4, "residual_layers": 1,
                                "detection_width": 4, "image_size": 64, "batch_size": 8, "num_epochs": 2,
                                "lr": 1e-3, "upsampling_lr": 1e-3, "score_pooling": 5,
                                "test_no_ranking": "an untrained VQ stage gives the detector no signal: DSR ranks "
                                                   "defects only with a trained VQ stage (vq_weights)"}},
    )]


@hookimpl
def adcore_register_models(register: Callable[[ModelSpec], None]) -> None:
    for spec in [*autoencoder_specs(), *ganomaly_specs(), *draem_specs(), *diffusionad_specs(), *dsr_specs()]:
        register(spec)


@hookimpl
def adcore_register_commands(cli) -> None:
    import click

    @cli.command("dsr-train-vq")
    @click.option("--images", required=True, type=click.Path(exists=True, file_okay=False),
                  help="Folder of natural images (ImageNet in the paper), searched recursively.")
    @click.option("--out", required=True, type=click.Path(dir_okay=False), help="VQ weights to write (.safetensors).")
    @click.option("--steps", type=int, default=100_000, show_default=True)
    @click.option("--batch-size", type=int, default=32, show_default=True)
    @click.option("--image-size", type=int, default=256, show_default=True)
    @click.option("--lr", type=float, default=1e-3, show_default=True)
    @click.option("--embedding-dim", type=int, default=128, show_default=True)
    @click.option("--num-embeddings", type=int, default=4096, show_default=True)
    @click.option("--hidden-channels", type=int, default=128, show_default=True)
    @click.option("--residual-channels", type=int, default=64, show_default=True)
    @click.option("--residual-layers", type=int, default=2, show_default=True)
    @click.option("--device", default=None)
    @click.option("--seed", type=int, default=0, show_default=True)
    def dsr_train_vq(images, out, steps, batch_size, image_size, lr, embedding_dim, num_embeddings, hidden_channels,
                     residual_channels, residual_layers, device, seed) -> None:
        """Train DSR's dual-subspace VQ-VAE offline on a folder of images (the paper's ImageNet pretraining).

        DSR then loads the file: `adcore train ... --model dsr --set vq_weights=FILE`.
        """
        from ad_recon.dsr_vq import train_vq

        try:
            path = train_vq(images, out, steps=steps, batch_size=batch_size, image_size=image_size, lr=lr,
                            embedding_dim=embedding_dim, num_embeddings=num_embeddings,
                            hidden_channels=hidden_channels, residual_channels=residual_channels,
                            residual_layers=residual_layers, device=device, seed=seed)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        click.echo(f"VQ stage written to {path}")
