"""The plugin module registers valid specs (that it stays light is a conformance check)."""

from __future__ import annotations

import inspect
import json

from ad_kd import plugin
from click.testing import CliRunner

from ad_core.cli import main
from ad_core.specs import RUN_KEYS, resolve_ref

OURS = {"stfpm": set(), "fre": {"fre-wrn50", "fre-r18"}, "reverse_distillation": {"reverse_distillation-r18"}}


def test_specs_are_valid_and_their_defaults_fit_the_factories() -> None:
    specs = {}
    plugin.adcore_register_models(lambda spec: specs.setdefault(spec.name, spec))
    assert set(OURS) <= set(specs)
    for name, variants in OURS.items():
        spec = specs[name]
        spec.validate()
        assert spec.paradigm == "kd" and spec.trainer == "gradient" and spec.paper
        assert set(spec.variants) == variants
        params = set(inspect.signature(resolve_ref(spec.factory)).parameters)
        assert {"pretrained", "backbone", "weights_file", "backbone_dir"} <= params
        for variant in [name, *variants]:
            config = spec.config(variant)
            assert set(config) - RUN_KEYS <= params, f"{variant}: {set(config) - RUN_KEYS - params}"
            assert {"image_size", "batch_size", "num_epochs"} <= set(config)


def test_cli_lists_the_kd_models_with_their_variants() -> None:
    result = CliRunner().invoke(main, ["list-models", "--paradigm", "kd", "--json"])
    assert result.exit_code == 0, result.output
    listed = {m["name"]: m for m in json.loads(result.output)["models"]}
    assert set(OURS) <= set(listed)
    assert all(m["paradigm"] == "kd" and m["plugin"] == "ad-kd" for m in listed.values())
    table = CliRunner().invoke(main, ["list-models", "--paradigm", "kd"]).output
    assert "reverse_distillation-r18" in table and "fre-wrn50" in table
