"""Plugin loading: specs, variants, broken plugins, duplicates, and the load filter."""

from __future__ import annotations

import sys
import textwrap

import pytest

from ad_core.hookspecs import hookimpl
from ad_core.plugins import PluginError, Registry, UnknownModelError, load_registry
from ad_core.specs import ModelSpec, SpecError


def spec(name: str, **kw) -> ModelSpec:
    return ModelSpec(name=name, paradigm="test", factory="tiny_plugin:TinyAE", **kw)


class Registers:
    def __init__(self, *specs: ModelSpec) -> None:
        self.specs = specs

    @hookimpl
    def adcore_register_models(self, register) -> None:
        for s in self.specs:
            register(s)


class Explodes:
    @hookimpl
    def adcore_register_models(self, register) -> None:
        raise RuntimeError("plugin bug")


@pytest.fixture
def fake_dist(tmp_path, monkeypatch):
    """Installs fake distributions (dist-info with entry points) on sys.path for one test."""

    def make(dist: str, module: str, source: str) -> None:
        info = tmp_path / f"{dist.replace('-', '_')}-1.2.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
        (info / "entry_points.txt").write_text(f"[adcore]\n{dist} = {module}\n")
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))

    monkeypatch.syspath_prepend(str(tmp_path))
    yield make
    for name in [m for m in sys.modules if m.startswith("fake_")]:
        del sys.modules[name]


GOOD = """
from ad_core.hookspecs import hookimpl
from ad_core.specs import ModelSpec

@hookimpl
def adcore_register_models(register):
    register(ModelSpec(name="fake-good", paradigm="test", factory="tiny_plugin:TinyAE"))
"""


def test_spec_variants_and_resolution() -> None:
    registry = Registry()
    registry.register_model(spec("base", defaults={"width": 4}, variants={"base-wide": {"width": 16}}), "p")
    s, variant = registry.resolve("BASE-WIDE")
    assert s.name == "base" and variant == "base-wide"
    assert s.config(variant) == {"width": 16}
    assert registry.all_names() == ["base", "base-wide"]


def test_unknown_model_lists_known_names() -> None:
    registry = Registry()
    registry.register_model(spec("alpha"), "p")
    with pytest.raises(UnknownModelError, match="alpha"):
        registry.resolve("beta")


@pytest.mark.parametrize("bad", [
    dict(name="Bad Name"),
    dict(name="ok", factory="no_colon"),
    dict(name="ok", trainer="sgd"),
    dict(name="ok", paradigm=""),
])
def test_bad_specs_are_rejected(bad) -> None:
    fields = {"name": "x", "paradigm": "test", "factory": "m:a", **bad}
    with pytest.raises(SpecError):
        ModelSpec(**fields).validate()


@pytest.mark.parametrize("order", [("one", "two"), ("two", "one")])
def test_a_duplicated_name_resolves_to_neither_plugin_whatever_the_order(monkeypatch, order) -> None:
    monkeypatch.setenv("ADCORE_LOAD_PLUGINS", "")
    plugins = {"one": Registers(spec("dup"), spec("mine")),
               "two": Registers(spec("other", variants={"dup": {}, "other-wide": {}}), spec("dup-free"))}
    registry = load_registry([(name, plugins[name]) for name in order])
    assert not registry.plugins["one"].broken and not registry.plugins["two"].broken
    with pytest.raises(PluginError, match="'dup'.*several plugins.*'one', 'two'"):
        registry.resolve("dup")
    for name in ("mine", "other", "other-wide", "dup-free"):  # every other name of both plugins stays
        assert registry.resolve(name)
    assert "dup" not in registry.all_names()
    itself = load_registry([("twice", Registers(spec("same"), spec("other", variants={"same": {}})))])
    assert itself.plugins["twice"].broken and "['same'] more than once" in itself.plugins["twice"].error
    with pytest.raises(PluginError):
        registry.register_model(spec("mine"), "three")


def test_plugin_that_raises_is_broken_others_work(monkeypatch) -> None:
    monkeypatch.setenv("ADCORE_LOAD_PLUGINS", "")
    registry = load_registry([("bad", Explodes()), ("good", Registers(spec("fine")))])
    assert registry.plugins["bad"].broken and "plugin bug" in registry.plugins["bad"].error
    assert "fine" in registry.models and not registry.plugins["good"].broken


def test_entry_point_plugins_load_and_broken_import_is_reported(fake_dist, monkeypatch) -> None:
    fake_dist("fake-good", "fake_good", GOOD)
    fake_dist("fake-broken", "fake_broken", "import module_that_does_not_exist\n")
    monkeypatch.setenv("ADCORE_LOAD_PLUGINS", "fake-good,fake-broken")
    registry = load_registry()
    assert registry.plugins["fake-good"].version == "1.2.3"
    assert registry.plugins["fake-good"].models == ["fake-good"]
    assert registry.plugins["fake-broken"].broken
    assert "module_that_does_not_exist" in registry.plugins["fake-broken"].error


def test_load_filter_restricts_and_empty_loads_none(fake_dist, monkeypatch) -> None:
    fake_dist("fake-good", "fake_good", GOOD)
    monkeypatch.setenv("ADCORE_LOAD_PLUGINS", "")
    assert load_registry().plugins == {}
    monkeypatch.setenv("ADCORE_LOAD_PLUGINS", "fake-good")
    assert list(load_registry().plugins) == ["fake-good"]


class RegistersDataset:
    @hookimpl
    def adcore_register_datasets(self, register) -> None:
        register("mine", "ad_core.data.folder:FolderDataset")


def test_plugin_dataset_formats_are_usable_by_name(tmp_path) -> None:
    from ad_core.data import get_dataset, list_datasets
    from ad_core.plugins import register_plugin

    folder = tmp_path / "cat" / "normal"
    folder.mkdir(parents=True)
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (8, 8), (i, i, i)).save(folder / f"{i}.png")
    unregister = register_plugin(RegistersDataset(), "dataset-plugin")
    try:
        assert "mine" in [d["name"] for d in list_datasets()]
        assert len(get_dataset("mine", "cat", "train", image_size=8, root=tmp_path)) == 2
    finally:
        unregister()


class AddsCommand:
    @hookimpl
    def adcore_register_commands(self, cli) -> None:
        import click

        @cli.command("hello-plugin")
        @click.argument("who")
        def hello(who: str) -> None:
            click.echo(f"hello {who}")


class CommandHookExplodes:
    @hookimpl
    def adcore_register_commands(self, cli) -> None:
        raise RuntimeError("command hook bug")


def test_plugin_commands_are_added_and_a_failing_hook_is_reported(monkeypatch) -> None:
    import click
    from click.testing import CliRunner

    from ad_core.plugins import add_plugin_commands

    monkeypatch.setenv("ADCORE_LOAD_PLUGINS", "")
    registry = load_registry([("adds", AddsCommand()), ("bad", CommandHookExplodes())])

    @click.group()
    def cli() -> None:
        pass

    add_plugin_commands(cli, registry)
    result = CliRunner().invoke(cli, ["hello-plugin", "line"])
    assert result.exit_code == 0 and result.output.strip() == "hello line"
    assert registry.plugins["bad"].broken and "command hook bug" in registry.plugins["bad"].error
    assert not registry.plugins["adds"].broken


def test_a_plugin_calling_sys_exit_on_import_is_contained(fake_dist, monkeypatch) -> None:
    fake_dist("fake-good", "fake_good", GOOD)
    fake_dist("fake-exits", "fake_exits", "import sys\nsys.exit(3)\n")
    monkeypatch.setenv("ADCORE_LOAD_PLUGINS", "fake-good,fake-exits")
    registry = load_registry()
    assert registry.plugins["fake-exits"].broken and "sys.exit(3)" in registry.plugins["fake-exits"].error
    assert registry.resolve("fake-good")


def test_a_factory_module_that_fails_to_import_is_named(fake_dist, monkeypatch) -> None:
    from ad_core.building import build_model
    from ad_core.plugins import register_plugin
    from ad_core.specs import FactoryImportError

    fake_dist("fake-model", "fake_model", "raise ImportError('needs scipy')\n")
    lazy = Registers(ModelSpec(name="lazy-bad", paradigm="test", factory="fake_model:Model"))
    unregister = register_plugin(lazy, "lazy-plugin")
    try:
        with pytest.raises(FactoryImportError, match="'lazy-bad'.*fake_model:Model.*needs scipy"):
            build_model("lazy-bad")
    finally:
        unregister()
