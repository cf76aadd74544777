"""Checks of a request that need no torch, so that the command line answers a typo at once.

Model names come from the registry; option names from the registry's specs, the run settings and the model
factory's signature, read from its source file without importing it. What cannot be decided that way (a
factory that takes `**kwargs`, or inherits its `__init__`) is left to `ad_core.building`, which decides it
after importing the model.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from collections.abc import Iterable
from typing import Any

from ad_core.plugins import get_registry
from ad_core.specs import RUN_KEYS, RUNNER_KEYS, OptionError

OPTION_ALIASES = frozenset({"img_size", "epochs"})  # the seed's spellings, mapped by `ad_core.building.ALIASES`

# API spellings in messages -> the command line's (`--set key=value`, `--root`, `--backbone-dir`).
_CLI_SPELLINGS = [
    (re.compile(r"\bpass root=\.\.\."), "pass --root DIR"),
    (re.compile(r"\bset backbone_dir\b"), "pass --backbone-dir DIR"),
    (re.compile(r"\bon_missing_weights=[\"']warn[\"']"), "--set on_missing_weights=warn"),
    (re.compile(r"(?<![-\w])(\w+)=(False|True)\b"), lambda m: f"--set {m[1]}={m[2].lower()}"),
    (re.compile(r"(?<![-\w])(weights_file|teacher_weights|imagenet_dir)=\.\.\."), r"--set \1=FILE"),
]


def cli_spelling(message: str) -> str:
    """Rewrite a message written for Python callers (`pretrained=False`) in the command line's terms."""
    for pattern, replacement in _CLI_SPELLINGS:
        message = pattern.sub(replacement, message)
    return message


def factory_parameters(ref: str) -> set[str] | None:
    """Keyword names a `"module:Class"` or `"module:function"` factory takes, read from its source; None if
    they cannot be read without running it (no source, `**kwargs`, an inherited `__init__`)."""
    module_name, _, attr = ref.partition(":")
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py") or "." in attr:
        return None
    with open(spec.origin, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    function = None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == attr:
            function = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        elif isinstance(node, ast.FunctionDef) and node.name == attr:
            function = node
    if function is None or function.args.kwarg is not None:
        return None
    args = function.args
    return {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]} - {"self"}


def check_request(models: Iterable[str], overrides: dict[str, Any]) -> None:
    """Raise what `train` would raise for an unknown model (`UnknownModelError`) or option (`OptionError`)."""
    registry = get_registry()
    for name in models:
        spec, variant = registry.resolve(name)
        params = factory_parameters(spec.factory)
        if params is None:
            continue
        unknown = sorted(set(overrides) - params - RUN_KEYS - OPTION_ALIASES - RUNNER_KEYS)
        if unknown:
            valid = sorted(params | RUN_KEYS)
            raise OptionError(f"unknown option(s) {unknown} for model {variant!r}; valid options: {valid}")


def missing_backbone_weights(models: Iterable[str], overrides: dict[str, Any]) -> list[str]:
    """One line per model whose pretrained backbone weights are not on this machine (offline, no download).

    For a warning before a long run; the run itself decides (some models load other weight files too).
    """
    from ad_core.backbones import find_weights
    from ad_core.settings import settings

    registry = get_registry()
    lines = []
    for name in models:
        spec, variant = registry.resolve(name)
        config = {**spec.config(variant), **overrides}
        backbone = config.get("backbone")
        if not isinstance(backbone, str) or not config.get("pretrained", True) or settings.allow_download:
            continue
        try:
            found = find_weights(backbone, config.get("weights_file"), config.get("backbone_dir"))
        except FileNotFoundError:
            found = None
        if found is None:
            directory = config.get("backbone_dir") or settings.backbone_dir
            lines.append(f"{variant}: no weights for backbone {backbone!r} in {directory}")
    return lines
