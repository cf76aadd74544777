"""The plugin module registers valid specs whose defaults fit the factories, listed under the recon paradigm."""

from __future__ import annotations

import inspect
import json

from ad_recon import plugin
from click.testing import CliRunner

from ad_core.cli import main
from ad_core.specs import RUN_KEYS, resolve_ref

OURS = {"autoencoder": {"autoencoder-ssim"}, "ganomaly": set(), "draem": set()}


def test_specs_are_valid_and_their_defaults_fit_the_factories() -> None:
    specs = {}
    plugin.adcore_register_models(lambda spec: specs.setdefault(spec.name, spec))
    assert set(OURS) <= set(specs)
    for name, variants in OURS.items():
        spec = specs[name]
        spec.validate()
        assert spec.paradigm == "recon" and spec.trainer == "gradient" and spec.paper
        assert set(spec.variants) == variants
        params = set(inspect.signature(resolve_ref(spec.factory)).parameters)
        for variant in [name, *variants]:
            config = spec.config(variant)
            assert set(config) - RUN_KEYS <= params, f"{variant}: {set(config) - RUN_KEYS - params}"
            assert {"image_size", "batch_size", "num_epochs", "normalize"} <= set(config)


def test_cli_lists_the_recon_models() -> None:
    result = CliRunner().invoke(main, ["list-models", "--paradigm", "recon", "--json"])
    assert result.exit_code == 0, result.output
    listed = {m["name"]: m for m in json.loads(result.output)["models"]}
    assert set(OURS) <= set(listed)
    assert all(m["paradigm"] == "recon" and m["plugin"] == "ad-recon" for m in listed.values())
