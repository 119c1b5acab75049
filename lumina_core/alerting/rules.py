"""Alert rules: those of ``lumina.toml`` and those stored through the API, and the thresholds each scope gets.

Thresholds cascade (DESIGN §4): ``[alerts.defaults]`` → ``[alerts.services."svc"]`` →
``[alerts.services."svc/model"]`` → the rule's ``params`` → the rule's ``services."svc"`` →
``services."svc/model"``. The global layers hold keys for every kind, so each kind takes only the keys
its config has; the rule's own layers must fit its kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from lumina_core.config import AlertRuleSettings, AlertSettings
from lumina_core.plugin_api import AlertRuleKind, ComponentContext, ComponentFactory, ImmediateAlertRuleKind
from lumina_core.plugins import PluginHost


def cascade(
    fields: set[str],
    settings: AlertSettings,
    rule: AlertRuleSettings,
    service: str | None,
    model: str | None,
) -> dict[str, Any]:
    """The thresholds of ``rule`` for a scope of ``service`` (and ``model``); later layers win."""
    keys = [k for k in (service, f"{service}/{model}" if service and model else None) if k]
    global_layers = [settings.defaults, *(settings.services.get(k, {}) for k in keys)]
    merged = {k: v for layer in global_layers for k, v in layer.items() if k in fields}
    for layer in [rule.params, *(rule.services.get(k, {}) for k in keys)]:
        merged.update(layer)
    return merged


def _service_model(key: str) -> tuple[str, str | None]:
    """``"svc"`` or ``"svc/model"``, the keys of per-service thresholds, as (service, model)."""
    service, _, model = key.partition("/")
    return service, model or None


@dataclass(frozen=True)
class ActiveRule:
    """A rule as the engine runs it: its settings, where it came from, and its kind's factory."""

    settings: AlertRuleSettings
    source: str
    """``config`` (``lumina.toml``, read-only) or ``api`` (stored, editable)."""
    factory: ComponentFactory[Any]

    @property
    def name(self) -> str:
        return self.settings.name


class RuleKinds:
    """Validates rules against the registered kinds, and builds each kind once per rule and scope."""

    def __init__(self, host: PluginHost, settings: AlertSettings, sinks: set[str], data_dir: str) -> None:
        self.host = host
        self.settings = settings
        self.sinks = sinks
        self.data_dir = data_dir
        self._kinds: dict[tuple[str, str, str, str | None, str | None], AlertRuleKind] = {}

    def check(self, rule: AlertRuleSettings) -> list[tuple[str, str]]:
        """Every problem of ``rule`` as ``(key path under the rule, message)``: unknown kind or sink, and
        thresholds its kind refuses (for the rule and each service it overrides)."""
        factories = self.host.factories.get("alert_rule", {})
        if rule.kind not in factories:
            return [("kind", f"unknown alert rule kind {rule.kind!r}; known: {', '.join(sorted(factories))}")]
        errors = [("sinks", f"unknown alert sink {ref!r}") for ref in rule.sinks or [] if ref not in self.sinks]
        scopes = [(None, None, "params"), *((*_service_model(key), f"services.{key}") for key in rule.services)]
        for service, model, path in scopes:
            try:
                self._config(factories[rule.kind], rule, service, model)
            except ValidationError as exc:
                errors.extend((".".join([path, *map(str, e["loc"])]), e["msg"]) for e in exc.errors())
        return errors

    def _config(
        self, factory: ComponentFactory[Any], rule: AlertRuleSettings, service: str | None, model: str | None
    ) -> Any:
        """The kind's config for a scope of ``service`` and ``model``, from the cascade (validated)."""
        config_model = factory.config_model
        return config_model.model_validate(cascade(set(config_model.model_fields), self.settings, rule, service, model))

    def thresholds(self, rule: AlertRuleSettings) -> dict[str, dict[str, Any]]:
        """The rule's effective thresholds: for every scope (``*``) and each service (and model) that has
        its own, in ``[alerts.services]`` or the rule's ``services``."""
        factory = self.host.factories.get("alert_rule", {}).get(rule.kind)
        if factory is None:
            return {}
        out = {"*": self._config(factory, rule, None, None).model_dump(mode="json")}
        for key in sorted({*self.settings.services, *rule.services}):
            out[key] = self._config(factory, rule, *_service_model(key)).model_dump(mode="json")
        return out

    def activate(self, rule: AlertRuleSettings, source: str) -> ActiveRule:
        return ActiveRule(rule, source, self.host.factory("alert_rule", rule.kind))

    def kind(self, project_id: str, rule: ActiveRule, service: str | None, model: str | None) -> AlertRuleKind:
        """The rule's kind with the thresholds of this scope (built on first use)."""
        key = (project_id, rule.source, rule.name, service, model)
        if key not in self._kinds:
            context = ComponentContext(name=rule.name, data_dir=self.data_dir)
            self._kinds[key] = rule.factory.create(context, self._config(rule.factory, rule.settings, service, model))
        return self._kinds[key]

    def forget(self) -> None:
        """Drop the built kinds (rules changed)."""
        self._kinds.clear()


def is_immediate(kind: AlertRuleKind) -> bool:
    return isinstance(kind, ImmediateAlertRuleKind)


def rule_sinks(rule: AlertRuleSettings, settings: AlertSettings) -> list[str]:
    return rule.sinks if rule.sinks is not None else settings.sinks


def scope_service_model(rule: AlertRuleSettings, scope: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The service and model a scope's thresholds cascade from: its own, else the rule's filter."""
    return scope.get("service", rule.where.service), scope.get("model", rule.where.model)
