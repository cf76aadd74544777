"""The kernel's layering: no import cycles or import-time side effects, the layers above the kernel use its public
API only, folder kinds load through registered loaders, and plugins declare the ad-core versions they need."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ad_core import __version__, checkpoint
from ad_core.checkpoint import CheckpointError, folder_kind, load_model, register_loader
from ad_core.plugins import load_registry
from ad_core.specs import ModelSpec, SpecError

PACKAGE = Path(__file__).resolve().parents[1] / "ad_core"
LAYERS = ("benchmarking", "ensemble")


def modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_plugin_api_registration_names_import_no_torch() -> None:
    assert "torch" not in modules_after("from ad_core.plugin_api import hookimpl, ModelSpec")


def test_checkpoint_does_not_import_the_ensemble() -> None:
    assert not any(m.startswith("ad_core.ensemble") for m in modules_after("import ad_core.checkpoint"))


def test_importing_the_cli_loads_no_plugin() -> None:
    loaded = modules_after("import ad_core.cli, ad_core.plugins; assert ad_core.plugins._REGISTRY is None")
    assert not {"ad_memory.plugin", "ad_flow.plugin", "ad_kd.plugin"} & loaded


def kernel_imports(path: Path) -> list[str]:
    """The `ad_core...` modules a file imports, at any depth."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return [n for n in names if n == "ad_core" or n.startswith("ad_core.")]


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_above_the_kernel_use_its_public_api_only(layer: str) -> None:
    allowed = ("ad_core", "ad_core.api", *(f"ad_core.{name}" for name in LAYERS))
    offending = {
        f"{path.relative_to(PACKAGE.parent)}: {module}"
        for path in (PACKAGE / layer).rglob("*.py")
        for module in kernel_imports(path)
        if module not in allowed and not any(module.startswith(f"ad_core.{name}.") for name in LAYERS)
    }
    assert not offending


def test_public_api_names_resolve() -> None:
    import ad_core.api
    import ad_core.plugin_api

    for module in (ad_core.api, ad_core.plugin_api):
        missing = [n for n in module.__all__ if n != "components" and getattr(module, n, None) is None]
        assert not missing


# -- folder kinds --------------------------------------------------------------------------------------------
def test_a_registered_kind_loads_through_its_loader(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(checkpoint, "_LOADERS", dict(checkpoint._LOADERS))  # the probe kind ends with the test
    (tmp_path / "probe.json").write_text("{}")
    calls = []
    register_loader("probe", "probe.json", lambda path, device: calls.append((Path(path), device)) or "loaded")
    assert folder_kind(tmp_path) == "probe" and folder_kind(tmp_path / "probe.json") == "probe"
    assert load_model(tmp_path, device="cpu") == "loaded" and calls == [(tmp_path, "cpu")]
    with pytest.raises(CheckpointError, match="holds an probe, not 'padim'"):
        load_model(tmp_path, expected_model="padim")


def test_plain_folders_are_models_and_the_model_kind_is_reserved(tmp_path) -> None:
    assert folder_kind(tmp_path) == "model"
    with pytest.raises(ValueError, match="core's own"):
        register_loader("model", "x.json", lambda path, device: None)
    with pytest.raises(CheckpointError, match="no model.json"):
        load_model(tmp_path)


# -- declared ad-core versions -------------------------------------------------------------------------------
def fake_distribution(root: Path, name: str, requirement: str) -> None:
    info = root / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\nRequires-Dist: {requirement}\n")
    (info / "entry_points.txt").write_text(f"[adcore]\n{name} = {name.replace('-', '_')}_plugin\n")
    (root / f"{name.replace('-', '_')}_plugin.py").write_text("")


def test_a_plugin_outside_its_declared_core_range_is_broken_with_the_reason(tmp_path, monkeypatch) -> None:
    fake_distribution(tmp_path, "too-new", "ad-core>=99.0")
    fake_distribution(tmp_path, "in-range", f"ad-core>={__version__}")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("ADCORE_LOAD_PLUGINS", raising=False)
    plugins = load_registry().plugins
    assert plugins["too-new"].broken
    assert f"requires ad-core>=99.0, but ad-core {__version__} is installed" in plugins["too-new"].error
    assert not plugins["in-range"].broken


def test_first_party_plugins_declare_their_core_range() -> None:
    from importlib import metadata

    from ad_core.compat import core_requirement

    for dist in ("ad-memory", "ad-flow", "ad-kd"):
        requirement = core_requirement(metadata.distribution(dist))
        assert requirement is not None and str(requirement.specifier), f"{dist} names no ad-core range"
        assert requirement.specifier.contains(__version__), dist


# -- spec test overrides -------------------------------------------------------------------------------------
def test_tiny_config_merges_the_base_and_the_variant_entry() -> None:
    spec = ModelSpec(name="m", paradigm="p", factory="a:b", variants={"m-big": {"backbone": "big"}},
                     test_overrides={"m": {"image_size": 32, "backbone": "small"}, "m-big": {"image_size": 48}})
    spec.validate()
    assert spec.tiny_config() == {"image_size": 32, "backbone": "small"}
    assert spec.tiny_config("m-big") == {"image_size": 48, "backbone": "small"}


def test_test_overrides_for_an_unknown_variant_are_an_error() -> None:
    with pytest.raises(SpecError, match="unknown: \\['m-typo'\\]"):
        ModelSpec(name="m", paradigm="p", factory="a:b", test_overrides={"m-typo": {}}).validate()
