"""A test-only plugin whose model starts, by default, from a pretrained "backbone" file in `backbone_dir`.

It stands for a real backbone whose weights exist where a model is trained but not where it is deployed.
"""

from __future__ import annotations

from tiny_plugin import TinyAE

from ad_core.backbones import MissingWeightsError, find_weights, read_state_dict
from ad_core.hookspecs import hookimpl
from ad_core.specs import ModelSpec

BACKBONE = "pre-ae-backbone"


class PretrainedAE(TinyAE):
    """TinyAE whose encoder is initialised from `<backbone_dir>/pre-ae-backbone.safetensors` when pretrained."""

    def __init__(self, width: int = 8, lr: float = 1e-2, pretrained: bool = True) -> None:
        super().__init__(width=width, lr=lr)
        if pretrained:
            path = find_weights(BACKBONE)
            if path is None:
                raise MissingWeightsError(f"no pretrained weights for backbone {BACKBONE!r} in backbone_dir")
            self.encoder.load_state_dict(read_state_dict(path))


class ReliabilityPlugin:
    @staticmethod
    @hookimpl
    def adcore_register_models(register) -> None:
        register(ModelSpec(name="pre-ae", paradigm="test", factory="reliability_plugin:PretrainedAE",
                           trainer="gradient", paper="test-only model",
                           defaults={"num_epochs": 1, "batch_size": 8, "image_size": 32}))
        register(ModelSpec(name="buggy-ae", paradigm="test", factory="reliability_plugin:BuggyAE",
                           trainer="gradient", paper="test-only model",
                           defaults={"num_epochs": 1, "batch_size": 8, "image_size": 32}))


class BuggyAE(TinyAE):
    """A model with a bug in its training step: the CLI must show it as a bug, not as a user error."""

    def training_step(self, batch, ctx):
        return {"losses": {}}["loss"]

