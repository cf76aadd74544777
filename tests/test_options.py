"""Option values are parsed by their declared types and checked against their ranges before anything is built."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ad_core.cli import main
from ad_core.options import OptionError, check_options


@pytest.mark.parametrize("text, expected", [("False", False), ("no", False), ("0", False), ("true", True),
                                            ("YES", True), (1, True)])
def test_bool_options_read_every_spelling(tiny_plugin, text, expected) -> None:
    assert check_options("tiny-ae", {"normalize": text}) == {"normalize": expected}
    assert check_options("tiny-ae", {"pretrained": text}) == {"pretrained": expected}


@pytest.mark.parametrize("option, value, expects", [
    ("batch_size", 2.5, "int"),
    ("width", "abc", "int"),          # a model option: its type from the factory's annotation
    ("lr", "fast", "float"),
    ("normalize", "maybe", "true/false"),
])
def test_a_value_of_the_wrong_type_names_option_and_type(tiny_plugin, option, value, expects) -> None:
    with pytest.raises(OptionError, match=f"option '{option}' expects {expects}.*{value!r}"):
        check_options("tiny-ae", {option: value})


def test_a_real_models_float_option_is_checked() -> None:
    with pytest.raises(OptionError, match="'coreset_ratio' expects float"):
        check_options("patchcore", {"coreset_ratio": "abc"})
    assert check_options("patchcore", {"coreset_ratio": "0.01"}) == {"coreset_ratio": 0.01}


@pytest.mark.parametrize("options, message", [
    ({"num_epochs": 0}, "'num_epochs' must be at least 1"),
    ({"epochs": -1}, "'num_epochs' must be at least 1"),
    ({"batch_size": 0}, "'batch_size' must be at least 1"),
    ({"image_size": 0}, "needs at least 4 px"),
    ({"image_size": [32, 2]}, "needs at least 4 px"),
])
def test_ranges_are_checked(tiny_plugin, options, message) -> None:
    with pytest.raises(OptionError, match=message):
        check_options("tiny-ae", options)


@pytest.mark.parametrize("model", ["padim", "patchcore", "stfpm", "fastflow", "cflow"])
def test_every_model_declares_its_smallest_input(model) -> None:
    with pytest.raises(OptionError, match=f"model '{model}' needs at least"):
        check_options(model, {"image_size": 16})


def test_cli_set_values_take_effect_by_type(tiny_plugin, outputs) -> None:
    result = CliRunner().invoke(main, ["train", "demo", "weave", "tiny-ae", "--epochs", "1", "--image-size", "32",
                                       "--set", "normalize=False", "--set", "pretrained=False"])
    assert result.exit_code == 0, result.output
    meta = json.loads((outputs / "demo" / "weave" / "tiny-ae" / "model.json").read_text())
    assert meta["normalize"] is False


def test_cli_range_error_comes_before_anything_is_built(tiny_plugin, outputs) -> None:
    result = CliRunner().invoke(main, ["train", "demo", "weave", "tiny-ae", "--epochs", "0"])
    assert result.exit_code == 1
    assert "option 'num_epochs' must be at least 1" in result.output and "Traceback" not in result.output
    assert not outputs.exists()
