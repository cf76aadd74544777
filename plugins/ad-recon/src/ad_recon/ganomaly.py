"""GANomaly (Akçay, Atapour-Abarghouei and Breckon, "GANomaly: Semi-Supervised Anomaly Detection via Adversarial
Training", ACCV 2018).

The generator is an encoder-decoder-encoder: G_E maps the image x to a latent z, G_D reconstructs x̂ from z and a
second encoder E maps x̂ to ẑ; the discriminator is a DCGAN encoder with one output. Generator loss (Eq. 1-4):
feature matching ‖f(x) − f(x̂)‖² on the discriminator's last features (w_adv 1) + contextual ‖x − x̂‖₁ (w_con 50) +
latent ‖z − ẑ‖² (w_enc 1); the discriminator is trained with binary cross-entropy and, as in the authors' code,
re-initialised whenever its loss falls below 1e-5. Both networks use Adam (lr 2e-4, betas 0.5/0.999), stepped
alternately in one training step (the core trainer's manual optimisation). The anomaly score is the mean of
(z − ẑ)² over the latent: a function of the image and the weights only (no min-max over a test set), so it is
deterministic for a seed. Image-level scores only (no anomaly map).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ad_core.plugin_api import AnomalyModel, Batch, StepContext, TrainingPlan
from ad_recon.sizes import as_size


def check_ganomaly_size(size: tuple[int, int]) -> int:
    """GANomaly's DCGAN networks take square images whose side is a power of two of at least 16."""
    height, width = size
    if height != width or height < 16 or height & (height - 1):
        raise ValueError(f"GANomaly needs square images whose side is a power of two of at least 16 (its DCGAN "
                         f"encoder halves the image down to 4x4), got {height}x{width}: set image_size to 32, 64, 128 "
                         "...")
    return height


def dcgan_encoder(side: int, out_channels: int, n_features: int) -> nn.Sequential:
    """Conv 4x4/2 + LeakyReLU, then (conv 4x4/2, BN, LeakyReLU) doubling the channels down to 4x4, then a 4x4
    convolution to `out_channels` values (the authors' `Encoder`)."""
    layers: list[nn.Module] = [nn.Conv2d(3, n_features, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
    grid, channels = side // 2, n_features
    while grid > 4:
        layers += [nn.Conv2d(channels, channels * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(channels * 2),
                   nn.LeakyReLU(0.2, inplace=True)]
        grid, channels = grid // 2, channels * 2
    layers.append(nn.Conv2d(channels, out_channels, 4, 1, 0, bias=False))
    return nn.Sequential(*layers)


def dcgan_decoder(side: int, latent_dim: int, n_features: int) -> nn.Sequential:
    """The mirror of `dcgan_encoder` with transposed convolutions, ending in tanh (the authors' `Decoder`)."""
    channels = n_features * (side // 8)
    layers: list[nn.Module] = [nn.ConvTranspose2d(latent_dim, channels, 4, 1, 0, bias=False),
                               nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
    grid = 4
    while grid < side // 2:
        layers += [nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(channels // 2),
                   nn.ReLU(inplace=True)]
        grid, channels = grid * 2, channels // 2
    layers += [nn.ConvTranspose2d(channels, 3, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def dcgan_init(module: nn.Module) -> None:
    """The DCGAN initialisation of the authors' `weights_init`: conv N(0, 0.02), batch norm N(1, 0.02) and 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """Encoder G_E, decoder G_D, encoder E: x -> (x̂, z, ẑ)."""

    def __init__(self, side: int, latent_dim: int, n_features: int) -> None:
        super().__init__()
        self.encoder1 = dcgan_encoder(side, latent_dim, n_features)
        self.decoder = dcgan_decoder(side, latent_dim, n_features)
        self.encoder2 = dcgan_encoder(side, latent_dim, n_features)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        latent = self.encoder1(images)
        fake = self.decoder(latent)
        return fake, latent, self.encoder2(fake)


class Discriminator(nn.Module):
    """A DCGAN encoder with one output: `features` (all but the last convolution) and the real/fake logit."""

    def __init__(self, side: int, n_features: int) -> None:
        super().__init__()
        layers = list(dcgan_encoder(side, 1, n_features))
        self.features = nn.Sequential(*layers[:-1])
        self.classifier = layers[-1]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(images)
        return self.classifier(features).reshape(-1), features


def generator_loss(images: torch.Tensor, fake: torch.Tensor, latent: torch.Tensor, latent_hat: torch.Tensor,
                   features_real: torch.Tensor, features_fake: torch.Tensor, w_adv: float, w_con: float,
                   w_enc: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """w_adv ‖f(x) − f(x̂)‖² + w_con ‖x − x̂‖₁ + w_enc ‖z − ẑ‖² (means over elements, as the authors' code)."""
    parts = {"adv": F.mse_loss(features_fake, features_real), "con": F.l1_loss(fake, images),
             "enc": F.mse_loss(latent_hat, latent)}
    return w_adv * parts["adv"] + w_con * parts["con"] + w_enc * parts["enc"], parts


def discriminator_loss(logit_real: torch.Tensor, logit_fake: torch.Tensor) -> torch.Tensor:
    """½ (BCE(D(x), 1) + BCE(D(x̂), 0)), on logits (the sigmoid and the BCE in one stable step)."""
    return 0.5 * (F.binary_cross_entropy_with_logits(logit_real, torch.ones_like(logit_real))
                  + F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake)))


class Ganomaly(AnomalyModel):
    """GANomaly; two Adam optimisers stepped alternately through the gradient trainer's manual mode."""

    automatic_optimization = False

    def __init__(self, image_size: int | list[int] = 64, latent_dim: int = 100, n_features: int = 64,
                 lr: float = 2e-4, beta1: float = 0.5, beta2: float = 0.999, w_adv: float = 1.0, w_con: float = 50.0,
                 w_enc: float = 1.0, reinit_threshold: float = 1e-5) -> None:
        super().__init__()
        self.side = check_ganomaly_size(as_size(image_size))
        self.generator = Generator(self.side, int(latent_dim), int(n_features))
        self.discriminator = Discriminator(self.side, int(n_features))
        self.generator.apply(dcgan_init)
        self.discriminator.apply(dcgan_init)
        self.lr, self.betas = float(lr), (float(beta1), float(beta2))
        self.weights = (float(w_adv), float(w_con), float(w_enc))
        self.reinit_threshold = float(reinit_threshold)
        self.discriminator_resets = 0

    def _check_input(self, images: torch.Tensor) -> None:
        if tuple(images.shape[-2:]) != (self.side, self.side):
            raise ValueError(f"GANomaly was built for {self.side}x{self.side} images, got "
                             f"{images.shape[-2]}x{images.shape[-1]}")

    def configure_optimizers(self, plan: TrainingPlan) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=self.betas),
                torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=self.betas)]

    def training_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        """One generator step, then one discriminator step (the authors' `optimize_params`)."""
        images = batch.image
        self._check_input(images)
        opt_g, opt_d = ctx.optimizers
        fake, latent, latent_hat = self.generator(images)
        _, features_real = self.discriminator(images)
        _, features_fake = self.discriminator(fake)
        loss_g, parts = generator_loss(images, fake, latent, latent_hat, features_real, features_fake, *self.weights)
        opt_g.zero_grad(set_to_none=True)
        ctx.backward(loss_g)
        ctx.clip(self.generator.parameters(), optimizer=opt_g)
        ctx.step_optimizer(opt_g)

        logit_real, _ = self.discriminator(images)
        logit_fake, _ = self.discriminator(fake.detach())
        loss_d = discriminator_loss(logit_real, logit_fake)
        opt_d.zero_grad(set_to_none=True)
        ctx.backward(loss_d)
        ctx.clip(self.discriminator.parameters(), optimizer=opt_d)
        ctx.step_optimizer(opt_d)
        if loss_d.item() < self.reinit_threshold:  # the authors' rule: a discriminator that wins outright restarts
            self.discriminator.apply(dcgan_init)
            self.discriminator_resets += 1
        ctx.log(generator_loss=loss_g.item(), discriminator_loss=loss_d.item(),
                **{f"loss_{k}": v.item() for k, v in parts.items()})
        return loss_g.detach()

    def fit_notes(self) -> list[str]:
        if not self.discriminator_resets:
            return []
        return [f"the discriminator was re-initialised {self.discriminator_resets} time(s) (its loss fell below "
                f"{self.reinit_threshold:g})"]

    def latent_distance(self, images: torch.Tensor) -> torch.Tensor:
        """mean over the latent of (z − ẑ)², one value per image."""
        self._check_input(images)
        _, latent, latent_hat = self.generator(images)
        return (latent - latent_hat).pow(2).flatten(1).mean(1)

    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.latent_distance(images), None
