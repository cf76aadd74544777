"""Finds plugins through the `adcore` entry-point group and collects what they register.

A plugin that fails to import or registers a bad spec becomes a *broken* row with its error;
it never takes the CLI or the other plugins down (DESIGN §3).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import metadata

import pluggy

from ad_core import hookspecs
from ad_core.compat import incompatibility
from ad_core.specs import ModelSpec, SpecError

ENV_FILTER = "ADCORE_LOAD_PLUGINS"
# What a plugin may raise that must not take the CLI down; SystemExit too (a plugin calling sys.exit() on import).
PLUGIN_FAULTS = (Exception, SystemExit)
ENTRY_POINT_GROUP = "adcore"


class PluginError(RuntimeError):
    """A plugin problem the user must fix (e.g. two plugins claim one model name)."""


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; this one is a sentence
        return str(self.args[0])


@dataclass
class PluginInfo:
    name: str
    distribution: str = ""
    version: str = ""
    models: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def broken(self) -> bool:
        return self.error is not None


@dataclass
class ModelEntry:
    spec: ModelSpec
    plugin: str


class Registry:
    """Every model name (and variant name) known, with the plugin that registered it."""

    def __init__(self) -> None:
        self.plugins: dict[str, PluginInfo] = {}
        self.models: dict[str, ModelEntry] = {}
        self.variants: dict[str, str] = {}  # variant name -> base model name
        self.datasets: dict[str, str] = {}  # dataset name -> "module:attr"
        self.command_hooks: list[tuple[str, Callable]] = []  # (plugin, adcore_register_commands implementation)
        self.conflicts: dict[str, list[str]] = {}  # a name two plugins claim -> those plugins; it resolves to none

    def register_model(self, spec: ModelSpec, plugin: str) -> None:
        if not isinstance(spec, ModelSpec):
            raise SpecError(f"register() expects a ModelSpec, got {type(spec).__name__}")
        spec.validate()
        for name in (spec.name, *spec.variants):
            owner = self._owner(name)
            if owner is not None:
                raise PluginError(
                    f"model name {name!r} is registered by two plugins: {owner!r} and {plugin!r}. "
                    f"Uninstall one, or restrict loading with {ENV_FILTER}."
                )
        self.models[spec.name] = ModelEntry(spec, plugin)
        for v in spec.variants:
            self.variants[v] = spec.name

    def add_claims(self, claims: list[tuple[str, ModelSpec]]) -> None:
        """Register every plugin's specs at once, so a name claimed twice resolves to neither plugin.

        The outcome does not depend on the order plugins load in: a duplicated model or variant name becomes
        unavailable (resolving it is an error naming the plugins), every other name of both plugins stays.
        """
        owners: dict[str, list[str]] = defaultdict(list)
        for plugin, spec in claims:
            for name in (spec.name, *spec.variants):
                owners[name].append(plugin)
        for name, plugins in owners.items():
            if len(plugins) > 1 or self._owner(name) is not None:
                self.conflicts[name] = sorted({*plugins, *filter(None, [self._owner(name)])})
        for plugin, spec in claims:
            if spec.name in self.conflicts:  # its variants cannot be built without it
                for variant in spec.variants:
                    self.conflicts.setdefault(variant, self.conflicts[spec.name])
                continue
            kept = {v: c for v, c in spec.variants.items() if v not in self.conflicts}
            self.register_model(replace(spec, variants=kept) if kept != spec.variants else spec, plugin)
            self.plugins[plugin].models.append(spec.name)

    def _owner(self, name: str) -> str | None:
        if name in self.models:
            return self.models[name].plugin
        if name in self.variants:
            return self.models[self.variants[name]].plugin
        return None

    def resolve(self, name: str) -> tuple[ModelSpec, str]:
        """Model or variant name -> (base spec, variant name). Unknown names list what exists."""
        key = name.strip().lower()
        if key in self.conflicts:
            owners = ", ".join(map(repr, self.conflicts[key]))
            raise PluginError(
                f"model name {key!r} (or its base model) is registered by several plugins ({owners}), so it is not "
                f"available. Uninstall one of them, or restrict loading with {ENV_FILTER}."
            )
        if key in self.models:
            return self.models[key].spec, key
        if key in self.variants:
            return self.models[self.variants[key]].spec, key
        known = sorted([*self.models, *self.variants])
        broken = [p.name for p in self.plugins.values() if p.broken]
        hint = f" Broken plugins (see `adcore plugins`): {', '.join(broken)}." if broken else ""
        raise UnknownModelError(
            f"unknown model {name!r}. Known models: {', '.join(known) or '(none: install a plugin such as ad-memory)'}."
            + hint
        )

    def all_names(self) -> list[str]:
        return sorted([*self.models, *self.variants])


def _wanted(name: str) -> bool:
    raw = os.environ.get(ENV_FILTER)
    if raw is None:
        return True
    return name in {p.strip() for p in raw.split(",") if p.strip()}


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r}) while loading"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def make_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def _collect(pm: pluggy.PluginManager, registry: Registry) -> None:
    """Call each plugin's hooks on its own, so one bad plugin spoils only its own row."""
    claims: list[tuple[str, ModelSpec]] = []
    for impl in pm.hook.adcore_register_models.get_hookimpls():
        name = impl.plugin_name
        info = registry.plugins.setdefault(name, PluginInfo(name=name))
        if info.broken:
            continue
        specs: list[ModelSpec] = []

        def register(spec: ModelSpec, _specs: list[ModelSpec] = specs) -> None:
            if not isinstance(spec, ModelSpec):
                raise SpecError(f"register() expects a ModelSpec, got {type(spec).__name__}")
            spec.validate()
            _specs.append(spec)

        try:
            impl.function(register=register)
        except PLUGIN_FAULTS as exc:  # a plugin's fault: report it, keep going
            info.error = _first_line(exc)
            continue
        own = [n for spec in specs for n in (spec.name, *spec.variants)]
        twice = sorted({n for n in own if own.count(n) > 1})
        if twice:
            info.error = f"registers the model name(s) {twice} more than once"
            continue
        claims.extend((name, spec) for spec in specs)
    registry.add_claims(claims)
    for impl in pm.hook.adcore_register_datasets.get_hookimpls():
        info = registry.plugins.setdefault(impl.plugin_name, PluginInfo(name=impl.plugin_name))

        def register_dataset(name: str, factory: str) -> None:
            registry.datasets[name.lower()] = factory

        try:
            impl.function(register=register_dataset)
        except PLUGIN_FAULTS as exc:
            info.error = _first_line(exc)
    for impl in pm.hook.adcore_register_commands.get_hookimpls():
        registry.plugins.setdefault(impl.plugin_name, PluginInfo(name=impl.plugin_name))
        registry.command_hooks.append((impl.plugin_name, impl.function))


def add_plugin_commands(cli: object, registry: Registry) -> None:
    """Let each plugin add its subcommands; a plugin whose hook fails is marked broken, the CLI still starts."""
    for name, function in registry.command_hooks:
        info = registry.plugins[name]
        if info.broken:
            continue
        try:
            function(cli=cli)
        except PLUGIN_FAULTS as exc:
            info.error = _first_line(exc)


def load_registry(extra_plugins: list[tuple[str, object]] | None = None) -> Registry:
    """Build a registry from installed entry points plus any plugins passed in (tests use this)."""
    registry = Registry()
    pm = make_plugin_manager()
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if not _wanted(ep.name) or ep.name in registry.plugins:
            continue
        dist = getattr(ep, "dist", None)
        info = PluginInfo(
            name=ep.name,
            distribution=dist.metadata["Name"] if dist is not None else "",
            version=dist.version if dist is not None else "",
        )
        registry.plugins[ep.name] = info
        info.error = incompatibility(dist) if dist is not None else None
        if info.broken:
            continue
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except PLUGIN_FAULTS as exc:  # ImportError, SyntaxError, pluggy validation errors ...
            info.error = _first_line(exc)
    for name, plugin in extra_plugins or []:
        registry.plugins[name] = PluginInfo(name=name)
        try:
            pm.register(plugin, name=name)
        except Exception as exc:
            registry.plugins[name].error = _first_line(exc)
    _collect(pm, registry)
    return registry


_REGISTRY: Registry | None = None
_EXTRA: list[tuple[str, object]] = []


def get_registry() -> Registry:
    """The process-wide registry, loaded once."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = load_registry(_EXTRA)
    return _REGISTRY


def register_plugin(plugin: object, name: str) -> Callable[[], None]:
    """Add an in-process plugin (tests, notebooks); returns a function that removes it again."""
    global _REGISTRY
    _EXTRA.append((name, plugin))
    _REGISTRY = None

    def unregister() -> None:
        global _REGISTRY
        _EXTRA[:] = [(n, p) for n, p in _EXTRA if n != name]
        _REGISTRY = None

    return unregister
