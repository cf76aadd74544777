"""A test-only plugin: a tiny convolutional autoencoder trained by the core's gradient trainer.

It proves the gradient trainer, checkpoints and the run pipeline without any real model.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from ad_core.backbones import MissingWeightsError
from ad_core.hookspecs import hookimpl
from ad_core.model import AnomalyModel
from ad_core.specs import ModelSpec


class TinyAE(AnomalyModel):
    """Reconstruction autoencoder; score = max of the per-pixel squared error map."""

    def __init__(self, width: int = 8, lr: float = 1e-2, blow_up_at: int = -1, pretrained: bool = False,
                 rank_dependent_init: bool = False) -> None:
        super().__init__()
        if pretrained:  # stands for a backbone whose weights are not on this machine
            raise MissingWeightsError("no pretrained weights for backbone 'tiny': put them at backbones/tiny.safetensors")
        self.lr = lr
        self.blow_up_at = blow_up_at
        self.steps = 0
        self.encoder = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(),
                                     nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU())
        self.decoder = nn.Sequential(nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.ReLU(),
                                     nn.ConvTranspose2d(width, 3, 4, stride=2, padding=1))
        if rank_dependent_init:  # stands for a third-party model whose initialisation ignores the run's seed
            noise = torch.Generator().manual_seed(1000 + int(os.environ.get("RANK", "0")))
            with torch.no_grad():
                for p in self.parameters():
                    p.add_(0.1 * torch.randn(p.shape, generator=noise))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(images))

    def training_step(self, batch, ctx) -> torch.Tensor:
        self.steps += 1
        loss = F.mse_loss(self(batch.image), batch.image)
        if self.steps == self.blow_up_at:
            return loss * float("nan")
        return loss

    def configure_optimizers(self, plan):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
        return {"optimizer": optimizer, "scheduler": torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)}

    def compute(self, images: torch.Tensor):
        error = ((self(images) - images) ** 2).mean(1)
        return error.flatten(1).amax(1), error


class TinyPlugin:
    @staticmethod
    @hookimpl
    def adcore_register_models(register) -> None:
        register(ModelSpec(name="tiny-ae", paradigm="test", min_image_size=4, factory="tiny_plugin:TinyAE", trainer="gradient",
                           paper="test-only model", defaults={"width": 8, "num_epochs": 3, "batch_size": 8,
                                                              "image_size": 32},
                           variants={"tiny-ae-wide": {"width": 16}, "tiny-ae-pretrained": {"pretrained": True},
                                     "tiny-ae-unseeded": {"rank_dependent_init": True}}))
