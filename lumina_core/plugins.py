"""The plugin host: one pluggy manager per app, and the component factories its plugins registered."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from lumina_core import hookspecs
from lumina_core.config import PluginSettings
from lumina_core.plugin_api import PROJECT_NAME, ComponentFactory, ComponentKind, ConfigError, NavItem, SpanPanel

log = logging.getLogger(__name__)

REGISTRATION_HOOKS: dict[ComponentKind, str] = {
    "extractor": "lumina_register_extractors",
    "queue_backend": "lumina_register_queue_backends",
    "pricing_provider": "lumina_register_pricing_providers",
    "detector": "lumina_register_detectors",
    "alert_rule": "lumina_register_alert_rules",
    "alert_sink": "lumina_register_alert_sinks",
    "archiver": "lumina_register_archivers",
    "sampler": "lumina_register_samplers",
    "replay_executor": "lumina_register_replay_executors",
}


def builtin_plugins() -> list[ModuleType]:
    """The plugins that ship inside the Lumina wheel, registered explicitly (not via entry points)."""
    from lumina_plugins import BUILTIN_PLUGINS

    return list(BUILTIN_PLUGINS)


@dataclass(frozen=True)
class PluginInfo:
    """What ``lumina plugins`` and ``/-/plugins`` show for one plugin: what it registers, how stable each
    type is, which configured instances use them, or why it failed to load."""

    name: str
    distribution: str | None
    version: str | None
    hooks: list[str]
    types: dict[str, list[str]]
    stability: dict[str, str] = field(default_factory=dict)
    """``kind/type`` → ``stable``, ``beta`` or ``alpha``."""
    instances: list[str] = field(default_factory=list)
    """The configured instances (``kind:type/name``) built from its types."""
    error: str | None = None
    """Set when the plugin failed to load or register; it then contributes nothing."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PluginFailure:
    name: str
    distribution: str | None
    version: str | None
    error: str


class PluginHost:
    """Builds a pluggy manager for one app and collects the component factories its plugins return.

    ``plugins`` replaces the built-in list (tests pass an explicit one); ``entry_points`` controls
    discovery from the ``lumina`` entry-point group; ``block`` names plugins that must not load, ``allow``
    (when given) the only entry-point plugins that may. A discovered plugin that fails to import or to
    register is reported (:attr:`failures`, ``lumina plugins``, ``/-/plugins``) and left out, unless
    ``require`` names it: then start-up fails with its error.
    """

    def __init__(
        self,
        plugins: Iterable[object] | None = None,
        *,
        entry_points: bool = True,
        block: Iterable[str] = (),
        allow: Iterable[str] | None = None,
        require: Iterable[str] = (),
    ) -> None:
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.require = set(require)
        self.failures: list[PluginFailure] = []
        self._distributions: dict[str, importlib.metadata.Distribution] = {}
        for blocked in block:
            self.pm.set_blocked(blocked)
        for plugin in builtin_plugins() if plugins is None else plugins:
            name = getattr(plugin, "__name__", None)
            if name is None or not self.pm.is_blocked(name):
                self.pm.register(plugin, name=name)
        if entry_points:
            self._load_entry_points(None if allow is None else set(allow))
        self.pm.check_pending()
        self.factories = self._collect_factories()
        missing = self.require - {name for name, _ in self.pm.list_name_plugin()}
        if missing:
            raise ConfigError([("plugins.require", f"required plugin {name!r} is not installed") for name in missing])
        # pluggy calls the newest registration first; the dashboard shows them in registration order
        self.nav_items: list[NavItem] = [
            i for items in reversed(self.pm.hook.lumina_dashboard_nav_items()) for i in items
        ]
        self.span_panels: list[SpanPanel] = [
            p for panels in reversed(self.pm.hook.lumina_dashboard_span_panels()) for p in panels
        ]

    def _load_entry_points(self, allow: set[str] | None) -> None:
        # Two distributions using one entry-point name would shadow each other silently: refuse that.
        found: dict[str, tuple[importlib.metadata.EntryPoint, importlib.metadata.Distribution]] = {}
        for dist in importlib.metadata.distributions():
            for ep in dist.entry_points:
                if ep.group != PROJECT_NAME:
                    continue
                dist_name = dist.metadata["name"]
                if ep.name in found and found[ep.name][1].metadata["name"] != dist_name:
                    other = found[ep.name][1].metadata["name"]
                    raise ConfigError(
                        [(f"plugins.{ep.name}", f"entry point name used by both {other} and {dist_name}")]
                    )
                found[ep.name] = (ep, dist)
        for name, (ep, dist) in sorted(found.items()):
            if self.pm.is_blocked(name) or self.pm.has_plugin(name) or (allow is not None and name not in allow):
                continue
            try:
                self.pm.register(ep.load(), name=name)
            except Exception as exc:
                self._failed(name, dist, exc)
                continue
            self._distributions[name] = dist

    def _failed(self, name: str, dist: importlib.metadata.Distribution | None, exc: Exception) -> None:
        error = f"{exc.__class__.__name__}: {exc}"
        if name in self.require:
            raise ConfigError([(f"plugins.{name}", f"required plugin failed to load: {error}")]) from exc
        log.error("plugin %s failed to load and is left out: %s", name, error)
        dist_name, version = (dist.metadata["name"], dist.version) if dist is not None else (None, None)
        self.failures.append(PluginFailure(name, dist_name, version, error))

    def _collect_factories(self) -> dict[ComponentKind, dict[str, ComponentFactory]]:
        factories: dict[ComponentKind, dict[str, ComponentFactory]] = {}
        errors: list[tuple[str, str]] = []
        failed: set[str] = set()
        self._types_by_plugin: dict[str, dict[str, list[str]]] = {}
        for kind, hook_name in REGISTRATION_HOOKS.items():
            by_type: dict[str, ComponentFactory] = {}
            owner: dict[str, str] = {}
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                if impl.plugin_name in failed:
                    continue
                try:
                    registered = list(impl.function() or [])
                except Exception as exc:
                    self._failed(impl.plugin_name, self._distributions.get(impl.plugin_name), exc)
                    failed.add(impl.plugin_name)
                    continue
                for factory in registered:
                    if factory.type in by_type:
                        errors.append(
                            (
                                f"{kind}.{factory.type}",
                                f"type registered twice, by {owner[factory.type]} and {impl.plugin_name}",
                            )
                        )
                        continue
                    by_type[factory.type] = factory
                    owner[factory.type] = impl.plugin_name
                    types = self._types_by_plugin.setdefault(impl.plugin_name, {})
                    types.setdefault(kind, []).append(factory.type)
            factories[kind] = by_type
        if errors:
            raise ConfigError(errors)
        for name in failed:  # a plugin that failed part-way contributes nothing
            for failed_kind, type_names in self._types_by_plugin.pop(name, {}).items():
                for type_name in type_names:
                    factories[failed_kind].pop(type_name, None)  # type: ignore[index]
        return factories

    @classmethod
    def configured(cls, settings: PluginSettings) -> PluginHost:
        """The built-ins and the entry-point plugins ``[plugins]`` lets load."""
        return cls(
            entry_points=settings.entry_points, block=settings.block, allow=settings.allow, require=settings.require
        )

    def factory(self, kind: ComponentKind, type_name: str) -> ComponentFactory:
        """The factory registered for ``type_name``; a :class:`ConfigError` lists the known ones."""
        known = self.factories.get(kind, {})
        if type_name not in known:
            raise ConfigError(
                [(kind, f"unknown {kind} type {type_name!r}; known: {', '.join(sorted(known)) or 'none'}")]
            )
        return known[type_name]

    def describe(self, instances: Iterable[tuple[ComponentKind, str]] = ()) -> list[PluginInfo]:
        """Every plugin with its distribution, version, hooks, the types it registers and their stability,
        and which of ``instances`` (``(kind, "type/name")`` as configured) use them; then those that failed."""
        used: dict[tuple[str, str], list[str]] = {}
        for kind, ref in instances:
            used.setdefault((kind, ref.partition("/")[0]), []).append(f"{kind}:{ref}")
        failed = {f.name for f in self.failures}
        infos = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda item: item[0] or ""):
            if plugin is None or name is None or name in failed:
                continue
            dist = self._distributions.get(name)
            dist_name: str | None
            version: str | None
            if dist is not None:
                dist_name, version = dist.metadata["name"], dist.version
            else:  # built-ins ship inside the lumina distribution
                dist_name, version = _own_distribution()
            hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
            types = self._types_by_plugin.get(name, {})
            pairs = [(kind, t) for kind, names in types.items() for t in names]
            stability: dict[str, str] = {f"{k}/{t}": self.factories[k][t].stability for k, t in pairs}  # type: ignore[index]
            uses = sorted(ref for pair in pairs for ref in used.get(pair, []))
            infos.append(PluginInfo(name, dist_name, version, hooks, types, stability, uses))
        infos += [PluginInfo(f.name, f.distribution, f.version, [], {}, error=f.error) for f in self.failures]
        return infos


def _own_distribution() -> tuple[str | None, str | None]:
    try:
        return "lumina", importlib.metadata.version("lumina")
    except importlib.metadata.PackageNotFoundError:
        return None, None
