"""The pluggy hook specification: what a plugin may implement (DESIGN §3)."""

from __future__ import annotations

from collections.abc import Callable

import pluggy

PROJECT = "adcore"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def adcore_register_models(register: Callable) -> None:
    """Call `register(ModelSpec(...))` once per model this plugin provides."""


@hookspec
def adcore_register_datasets(register: Callable) -> None:
    """Call `register(name, factory)` for each dataset format this plugin provides.

    `factory` is a `"module:attr"` string naming a callable `(root, category, split, image_size, ...) -> Dataset`.
    """


@hookspec
def adcore_register_commands(cli) -> None:
    """Add subcommands to the `adcore` click group, e.g. `@cli.command() def distill(...)`.

    Keep the command functions light: import torch and model code inside them, not at module level.
    """
