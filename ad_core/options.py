"""Option values checked against their declared types and ranges before anything is built.

A model option's type comes from its factory's annotation, else from its default (in the signature or the
spec); a run setting's type is declared here. Text values (`--set key=value`) are parsed by that type, so
`normalize=False` is False and `batch_size=2.5` is an error naming the option and the type it expects.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ad_core.building import ALIASES
from ad_core.specs import RUN_KEYS, RUNNER_KEYS, ModelSpec, OptionError

TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")
NONE_WORDS = ("none", "null")

# Run settings and runner switches: (type, may be None).
RUN_TYPES: dict[str, tuple[type, bool]] = {
    "image_size": (object, False), "batch_size": (int, False), "eval_batch_size": (int, True),
    "num_epochs": (int, True), "max_steps": (int, True), "normalize": (bool, False), "num_workers": (int, True),
    "seed": (int, False), "model_seed": (int, True), "device": (str, True), "grad_clip": (float, True), "early_stopping_patience": (int, True),
    "threshold_method": (str, False), "k_sigma": (float, False), "precision": (str, False),
    "ema_decay": (float, True), "accumulate_grad_batches": (int, False), "image_mean": (object, True),
    "image_std": (object, True), "center_crop": (object, True), "validation": (str, False),
    "validation_fraction": (float, False), "validation_dir": (Path, True), "target_fpr": (float, False),
    "pretrained": (bool, False), "backbone_dir": (Path, True), "weights_file": (Path, True),
    "allow_download": (bool, True), "resume": (bool, False), "checkpoint_every": (int, True),
    "on_missing_weights": (str, False), "write_maps": (bool, False), "require_masks": (bool, False),
}
AT_LEAST_ONE = ("num_epochs", "max_steps", "batch_size", "eval_batch_size", "checkpoint_every",
                "accumulate_grad_batches")
CHOICES = {"on_missing_weights": ("error", "warn"), "precision": ("32", "bf16", "16"),
           "validation": ("holdout", "test_split")}


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", str(kind))


def _declared(annotation: Any) -> tuple[Any, bool] | None:
    """(the one concrete type, may be None) from an annotation, or None when it is not a simple type."""
    if isinstance(annotation, str):
        parts = [p.strip() for p in annotation.split("|")]
        names = {"int": int, "float": float, "bool": bool, "str": str, "Path": Path}
        concrete = [names.get(p) for p in parts if p != "None"]
        if len(concrete) == 1 and concrete[0] is not None:
            return concrete[0], "None" in parts
        return None
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        concrete = [a for a in args if a is not type(None)]
        if len(concrete) == 1 and concrete[0] in (int, float, bool, str, Path):
            return concrete[0], len(concrete) < len(args)
        return None
    if annotation in (int, float, bool, str, Path):
        return annotation, False
    return None


def _hints(factory: Any) -> dict[str, Any]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return typing.get_type_hints(target)
    except Exception:  # names only imported for type checking: fall back to the annotation strings
        return dict(getattr(target, "__annotations__", {}))


def declared_types(spec: ModelSpec, variant: str | None = None) -> dict[str, tuple[Any, bool]]:
    """Every option a model accepts with its (type, may be None); `object` where no simple type is declared."""
    factory = spec.load_factory()
    hints = _hints(factory)
    defaults = spec.config(variant)
    out: dict[str, tuple[Any, bool]] = {}
    for name, param in inspect.signature(factory).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        declared = _declared(hints[name]) if name in hints else None
        if declared is None:
            default = param.default if param.default is not param.empty else defaults.get(name)
            simple = type(default) if type(default) in (int, float, bool, str) else object
            declared = (simple, default is None)
        out[name] = declared
    for name in RUN_KEYS | RUNNER_KEYS:
        out.setdefault(name, RUN_TYPES.get(name, (object, True)))
    return out


def coerce(name: str, value: Any, kind: Any, optional: bool) -> Any:
    """`value` as `kind`; text is parsed (bool accepts true/false/1/0/yes/no). Raises `OptionError`."""
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in NONE_WORDS):
        if optional or kind is object:
            return None
        raise OptionError(f"option {name!r} expects {_type_name(kind)}, got None")
    if kind is object:
        return value
    text = value.strip() if isinstance(value, str) else None
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            if text is not None and text.lower() in TRUE_WORDS + FALSE_WORDS:
                return text.lower() in TRUE_WORDS
        elif kind is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if text is not None:
                return int(text)
        elif kind is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if text is not None:
                return float(text)
        elif kind is str:
            if isinstance(value, str):
                return value
        elif kind is Path:
            if isinstance(value, (str, Path)):
                return value
    except ValueError:
        pass
    allowed = f"{'true/false (or 1/0, yes/no)' if kind is bool else _type_name(kind)}{' or none' if optional else ''}"
    raise OptionError(f"option {name!r} expects {allowed}, got {value!r}")


def check_options(model: str, overrides: Mapping[str, Any], min_image_size: int | None = None) -> dict[str, Any]:
    """The overrides with every value parsed by its declared type and checked against its range.

    Raises `OptionError` naming the option (unknown ones list the valid names), before anything is built.
    """
    from ad_core.plugins import get_registry

    spec, variant = get_registry().resolve(model)
    kinds = declared_types(spec, variant)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(spec.load_factory()).parameters.values())
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        name = ALIASES.get(key, key)
        if name not in kinds:
            if accepts_any:
                out[key] = value
                continue
            raise OptionError(f"unknown option {key!r} for model {variant!r}; valid options: {sorted(kinds)}")
        out[key] = coerce(key, value, *kinds[name])
        if name in CHOICES and out[key] not in CHOICES[name]:
            raise OptionError(f"option {key!r} must be one of {CHOICES[name]}, got {out[key]!r}")
    merged = {**spec.config(variant), **{ALIASES.get(k, k): v for k, v in out.items()}}
    for name in AT_LEAST_ONE:
        if isinstance(merged.get(name), (int, float)) and merged[name] < 1:
            raise OptionError(f"option {name!r} must be at least 1, got {merged[name]!r}")
    check_image_size(variant, merged.get("image_size"), spec.min_image_size if min_image_size is None
                     else min_image_size)
    return out


def check_image_size(model: str, image_size: Any, minimum: int) -> None:
    """An image size (int or (height, width)) must reach the model's smallest input size."""
    if image_size is None:
        return
    sides = list(image_size) if isinstance(image_size, (list, tuple)) else [image_size]
    if len(sides) not in (1, 2) or not all(isinstance(s, int) and not isinstance(s, bool) for s in sides):
        raise OptionError(f"option 'image_size' expects an int or (height, width), got {image_size!r}")
    if min(sides) < minimum:
        raise OptionError(f"option 'image_size' is {image_size!r}, but model {model!r} needs at least "
                          f"{minimum} px (its smallest input size)")
