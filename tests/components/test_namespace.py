"""Every public name of `ad_core.components` resolves to the object its module defines (no module shadows it)."""

from __future__ import annotations

import importlib
import inspect

import pytest

import ad_core.components as components


@pytest.mark.parametrize("name", components.__all__)
def test_public_name_resolves_to_its_definition(name: str) -> None:
    value = getattr(components, name)
    assert not inspect.ismodule(value)
    home = importlib.import_module(f"ad_core.components.{components._HOMES[name]}")
    assert getattr(home, name) is value
    with pytest.raises(AttributeError, match="no attribute"):
        components.not_a_component  # noqa: B018
