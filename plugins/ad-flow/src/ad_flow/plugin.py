"""Registers the normalizing-flow models with ad-core. Light by design: no torch, no model code."""

from __future__ import annotations

from collections.abc import Callable

from ad_core.hookspecs import hookimpl
from ad_core.specs import ModelSpec


@hookimpl
def adcore_register_models(register: Callable[[ModelSpec], None]) -> None:
    pass
