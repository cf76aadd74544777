"""From a model name and overrides to a built model and its run configuration."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ad_core.plugins import get_registry
from ad_core.settings import settings
from ad_core.specs import RUN_KEYS, UNIFIED_PREFIX, ModelSpec

RUN_DEFAULTS: dict[str, Any] = {"image_size": 256, "batch_size": 32, "normalize": True}
ALIASES = {"img_size": "image_size", "epochs": "num_epochs"}


@dataclass
class ModelConfig:
    """A resolved model: which spec, the factory's keyword arguments, and the run settings."""

    name: str
    spec: ModelSpec
    plugin: str
    hyperparameters: dict[str, Any]
    run: dict[str, Any] = field(default_factory=dict)


def _factory_params(factory: Any) -> tuple[set[str], bool]:
    params = inspect.signature(factory).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL}, accepts_any


def resolve_config(name: str, **overrides: Any) -> ModelConfig:
    """Merge spec defaults, variant and overrides; split model hyperparameters from run settings."""
    registry = get_registry()
    spec, variant = registry.resolve(name)
    # `unified_<key>` defaults are read by unified training only (ad_core.unified), never passed on
    merged = {**RUN_DEFAULTS, **{k: v for k, v in spec.config(variant).items() if not k.startswith(UNIFIED_PREFIX)}}
    for key, value in overrides.items():
        merged[ALIASES.get(key, key)] = value
    params, accepts_any = _factory_params(spec.load_factory())
    hyper = {k: v for k, v in merged.items() if k in params or (accepts_any and k not in RUN_KEYS)}
    run = {k: v for k, v in merged.items() if k in RUN_KEYS}
    if merged.get("model_seed") is not None:
        if "seed" not in params:
            raise TypeError(f"model {variant!r} makes no random draws of its own (its factory takes no `seed`), so "
                            f"model_seed does not apply; the run's `seed` steers its weights and data order")
        hyper["seed"] = int(merged["model_seed"])
    unknown = sorted(set(merged) - set(hyper) - set(run))
    if unknown:
        valid = sorted((params | RUN_KEYS) - {"self"})
        raise TypeError(f"unknown option(s) {unknown} for model {variant!r}; valid options: {valid}")
    return ModelConfig(name=variant, spec=spec, plugin=registry.models[spec.name].plugin, hyperparameters=hyper, run=run)


def build_model(name: str, **overrides: Any) -> tuple[nn.Module, ModelConfig]:
    """Build a model by registered name or variant, e.g. `build_model("patchcore-r18", pretrained=False)`.

    A run's `allow_download` overrides the global setting while the model (and its backbone) is built.
    """
    config = resolve_config(name, **overrides)
    allow = config.run.get("allow_download")
    with allowed_downloads(None if allow is None else bool(allow)):
        model = config.spec.load_factory()(**config.hyperparameters)
    return model, config


@contextmanager
def allowed_downloads(allow: bool | None) -> Iterator[None]:
    """`settings.allow_download` set to `allow` for the duration (unchanged when None)."""
    if allow is None:
        yield
        return
    before = settings.allow_download
    settings.allow_download = allow
    try:
        yield
    finally:
        settings.allow_download = before
