"""The plugin host: one pluggy manager per app, and the component factories its plugins registered."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pluggy

from lumina_core import hookspecs
from lumina_core.plugin_api import PROJECT_NAME, ComponentFactory, ComponentKind, ConfigError, NavItem, SpanPanel

REGISTRATION_HOOKS: dict[ComponentKind, str] = {
    "extractor": "lumina_register_extractors",
    "queue_backend": "lumina_register_queue_backends",
    "pricing_provider": "lumina_register_pricing_providers",
    "detector": "lumina_register_detectors",
    "alert_rule": "lumina_register_alert_rules",
    "alert_sink": "lumina_register_alert_sinks",
}


def builtin_plugins() -> list[ModuleType]:
    """The plugins that ship inside the Lumina wheel, registered explicitly (not via entry points)."""
    from lumina_plugins import BUILTIN_PLUGINS

    return list(BUILTIN_PLUGINS)


@dataclass(frozen=True)
class PluginInfo:
    """What ``lumina plugins`` and ``/-/plugins`` show for one loaded plugin."""

    name: str
    distribution: str | None
    version: str | None
    hooks: list[str]
    types: dict[str, list[str]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": self.hooks,
            "types": self.types,
        }


class PluginHost:
    """Builds a pluggy manager for one app and collects the component factories its plugins return.

    ``plugins`` replaces the built-in list (tests pass an explicit one); ``entry_points`` controls
    discovery from the ``lumina`` entry-point group; ``block`` names plugins that must not load.
    """

    def __init__(
        self,
        plugins: Iterable[object] | None = None,
        *,
        entry_points: bool = True,
        block: Iterable[str] = (),
    ) -> None:
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        for blocked in block:
            self.pm.set_blocked(blocked)
        for plugin in builtin_plugins() if plugins is None else plugins:
            name = getattr(plugin, "__name__", None)
            if name is None or not self.pm.is_blocked(name):
                self.pm.register(plugin, name=name)
        if entry_points:
            self._load_entry_points()
        self.pm.check_pending()
        self.factories = self._collect_factories()
        # pluggy calls the newest registration first; the dashboard shows them in registration order
        self.nav_items: list[NavItem] = [
            i for items in reversed(self.pm.hook.lumina_dashboard_nav_items()) for i in items
        ]
        self.span_panels: list[SpanPanel] = [
            p for panels in reversed(self.pm.hook.lumina_dashboard_span_panels()) for p in panels
        ]

    def _load_entry_points(self) -> None:
        # pluggy de-duplicates entry points by name, so two distributions using one name would
        # collapse silently: refuse that instead.
        seen: dict[str, str] = {}
        for dist in importlib.metadata.distributions():
            for ep in dist.entry_points:
                if ep.group != PROJECT_NAME:
                    continue
                dist_name = dist.metadata["name"]
                if ep.name in seen and seen[ep.name] != dist_name:
                    raise ConfigError(
                        [(f"plugins.{ep.name}", f"entry point name used by both {seen[ep.name]} and {dist_name}")]
                    )
                seen[ep.name] = dist_name
        self.pm.load_setuptools_entrypoints(PROJECT_NAME)

    def _collect_factories(self) -> dict[ComponentKind, dict[str, ComponentFactory]]:
        factories: dict[ComponentKind, dict[str, ComponentFactory]] = {}
        errors: list[tuple[str, str]] = []
        self._types_by_plugin: dict[str, dict[str, list[str]]] = {}
        for kind, hook_name in REGISTRATION_HOOKS.items():
            by_type: dict[str, ComponentFactory] = {}
            owner: dict[str, str] = {}
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                for factory in impl.function() or []:
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
        return factories

    def factory(self, kind: ComponentKind, type_name: str) -> ComponentFactory:
        """The factory registered for ``type_name``; a :class:`ConfigError` lists the known ones."""
        known = self.factories.get(kind, {})
        if type_name not in known:
            raise ConfigError(
                [(kind, f"unknown {kind} type {type_name!r}; known: {', '.join(sorted(known)) or 'none'}")]
            )
        return known[type_name]

    def describe(self) -> list[PluginInfo]:
        """Every registered plugin with its distribution, version, hooks and the types it registers."""
        dists = {id(plugin): dist for plugin, dist in self.pm.list_plugin_distinfo()}
        infos = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda item: item[0] or ""):
            if plugin is None or name is None:
                continue
            dist = dists.get(id(plugin))
            dist_name: str | None
            version: str | None
            if dist is not None:
                dist_name, version = dist.metadata["name"], dist.version
            else:  # built-ins ship inside the lumina distribution
                dist_name, version = _own_distribution()
            hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
            infos.append(PluginInfo(name, dist_name, version, hooks, self._types_by_plugin.get(name, {})))
        return infos


def _own_distribution() -> tuple[str | None, str | None]:
    try:
        return "lumina", importlib.metadata.version("lumina")
    except importlib.metadata.PackageNotFoundError:
        return None, None
