"""`ModelSpec`: a lazy description of a model that a plugin registers.

Nothing here imports torch or the plugin's model code, so listing models stays fast.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
TRAINERS = ("feature_bank", "gradient")

# Settings that steer a run rather than the network; a model receives them only if its factory asks.
RUN_KEYS = frozenset(
    {
        "image_size",
        "batch_size",
        "eval_batch_size",
        "num_epochs",
        "max_steps",
        "normalize",
        "image_mean",
        "image_std",
        "center_crop",
        "num_workers",
        "seed",
        "model_seed",
        "device",
        "grad_clip",
        "early_stopping_patience",
        "threshold_method",
        "k_sigma",
        "pretrained",
        "backbone_dir",
        "weights_file",
        "allow_download",
        "resume",
        "checkpoint_every",
        "on_missing_weights",
        "precision",
        "ema_decay",
        "accumulate_grad_batches",
    }
)


# Settings the runner reads itself (never passed to a model): outputs, masks and the validation source.
RUNNER_KEYS = frozenset({"write_maps", "require_masks", "validation", "validation_fraction", "validation_dir",
                         "target_fpr"})

# A spec default named `unified_<key>` is `<key>`'s default in unified (multi-class) training only, e.g.
# Dinomaly's `unified_max_steps`; an option the user sets wins (see `ad_core.unified`).
UNIFIED_PREFIX = "unified_"


class OptionError(ValueError):
    """An option is unknown, of the wrong type, or out of range (a user error, reported before anything is built)."""


class SpecError(ValueError):
    """A plugin registered a malformed spec."""


class FactoryImportError(ImportError):
    """A registered model's factory cannot be imported: the plugin providing it is broken."""

    def __init__(self, message: str, model: str) -> None:
        super().__init__(message)
        self.model = model


def resolve_ref(ref: str) -> Any:
    """Import the object named by a `"module:attr"` string."""
    module_name, _, attr = ref.partition(":")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model: its factory, defaults and named variants."""

    name: str
    paradigm: str
    factory: str
    paper: str = ""
    trainer: str = "gradient"
    defaults: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""
    # The conformance suite's tiny config, keyed by the model's name or a variant's name. A variant's tiny config
    # is the base entry updated by its own entry (small backbone, few steps, small image; see `ad_core.testing`).
    test_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    min_image_size: int = 1  # the smallest input side (px) its backbone or flow accepts; checked before training
    # Whether one model can be trained on several categories at once (`train(..., unified=True)`); a model that
    # cannot says why in `unified_reason`, which the user reads in the error.
    unified: bool = True
    unified_reason: str = ""
    # Whether `adcore export` can write the model as one ONNX graph; a model that cannot says why in `export_note`.
    exportable: bool = True
    export_note: str = ""

    def validate(self) -> None:
        """Raise `SpecError` naming what is wrong, so a broken plugin is reported, not half-loaded."""
        for label, value in [("name", self.name), *[("variant", v) for v in self.variants]]:
            if not isinstance(value, str) or not NAME_RE.match(value):
                raise SpecError(f"invalid {label} {value!r}: use lower-case letters, digits, '-' or '_'")
        if not isinstance(self.factory, str) or ":" not in self.factory:
            raise SpecError(f"{self.name}: factory must be a 'module:attr' string, got {self.factory!r}")
        if self.trainer not in TRAINERS and ":" not in self.trainer:
            raise SpecError(f"{self.name}: trainer must be one of {TRAINERS} or 'module:attr', got {self.trainer!r}")
        if not self.paradigm:
            raise SpecError(f"{self.name}: paradigm is empty")
        if not isinstance(self.min_image_size, int) or self.min_image_size < 1:
            raise SpecError(f"{self.name}: min_image_size must be a positive int, got {self.min_image_size!r}")
        if not isinstance(self.unified, bool) or (not self.unified and not str(self.unified_reason).strip()):
            raise SpecError(f"{self.name}: unified must be a bool, and a model that refuses unified training "
                            "(unified=False) must say why in unified_reason")
        if not isinstance(self.exportable, bool) or (not self.exportable and not str(self.export_note).strip()):
            raise SpecError(f"{self.name}: exportable must be a bool, and a model that cannot be exported must say "
                            "why in export_note")
        if not isinstance(self.defaults, dict) or not all(isinstance(v, dict) for v in self.variants.values()):
            raise SpecError(f"{self.name}: defaults and each variant must be dicts")
        unknown = set(self.test_overrides) - {self.name, *self.variants}
        if unknown or not all(isinstance(v, dict) for v in self.test_overrides.values()):
            raise SpecError(f"{self.name}: test_overrides must map the model's or a variant's name to a dict "
                            f"(unknown: {sorted(unknown)})")

    def config(self, variant: str | None = None) -> dict[str, Any]:
        """The defaults of the base model or of one of its variants."""
        if variant is None or variant == self.name:
            return dict(self.defaults)
        if variant not in self.variants:
            raise KeyError(f"{self.name} has no variant {variant!r}; variants: {sorted(self.variants)}")
        return {**self.defaults, **self.variants[variant]}

    def unified_defaults(self, variant: str | None = None) -> dict[str, Any]:
        """`{key: value}` of the `unified_<key>` defaults of the base model or a variant (unified training only)."""
        return {k[len(UNIFIED_PREFIX):]: v for k, v in self.config(variant).items() if k.startswith(UNIFIED_PREFIX)}

    def tiny_config(self, variant: str | None = None) -> dict[str, Any]:
        """The conformance suite's overrides for the base model or one of its variants."""
        tiny = dict(self.test_overrides.get(self.name, {}))
        if variant is not None and variant != self.name:
            tiny.update(self.test_overrides.get(variant, {}))
        return tiny

    def load_factory(self) -> Callable[..., Any]:
        """The factory; a module that fails to import (or exits) is a `FactoryImportError` naming the model."""
        try:
            return resolve_ref(self.factory)
        except (Exception, SystemExit) as exc:
            cause = f"called sys.exit({exc.code!r})" if isinstance(exc, SystemExit) else \
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            raise FactoryImportError(
                f"model {self.name!r} cannot be built: its factory {self.factory!r} failed to import ({cause}). "
                "The plugin providing it is broken: reinstall or fix it (see `adcore plugins`).", self.name
            ) from exc
