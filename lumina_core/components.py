"""Builds the components that ``lumina.toml`` names from the factories plugins registered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from lumina_core.alerting.rules import RuleKinds
from lumina_core.config import Settings
from lumina_core.plugin_api import (
    AlertSink,
    Archiver,
    ComponentContext,
    ComponentKind,
    ConfigError,
    Detector,
    Extractor,
    PricingProvider,
    QueueBackend,
    ReplayExecutor,
    Sampler,
)
from lumina_core.plugins import PluginHost


@dataclass
class Components:
    extractors: list[Extractor]
    queue: QueueBackend
    pricing_providers: list[tuple[str, PricingProvider]]
    detectors: dict[str, Detector]
    alert_sinks: dict[str, AlertSink]
    alert_rules: RuleKinds
    archiver: Archiver | None
    samplers: list[Sampler]
    replay_executors: list[ReplayExecutor]


def _split_ref(ref: str) -> tuple[str, str]:
    type_name, _, name = ref.partition("/")
    return type_name, name or "default"


def _build(
    host: PluginHost,
    kind: ComponentKind,
    ref: str,
    raw_config: dict[str, Any],
    key_path: str,
    settings: Settings,
    errors: list[tuple[str, str]],
    create: bool,
) -> Any:
    type_name, name = _split_ref(ref)
    try:
        factory = host.factory(kind, type_name)
    except ConfigError as exc:
        errors.extend((key_path, message) for _, message in exc.errors)
        return None
    try:
        config = factory.config_model.model_validate(raw_config)
    except ValidationError as exc:
        errors.extend((".".join([key_path, *map(str, err["loc"])]), err["msg"]) for err in exc.errors())
        return None
    if not create:
        return None
    return factory.create(ComponentContext(name=name, data_dir=settings.data_dir), config)


def _detector_types(settings: Settings) -> list[str]:
    quality = settings.quality
    return sorted({*quality.detectors, *(d for rules in quality.services.values() for d in rules.detectors or [])})


def _sink_refs(settings: Settings) -> list[str]:
    """Every alert sink configured or named by ``alerts.sinks`` or a rule."""
    named = (ref for rule in settings.alerts.rules for ref in rule.sinks or [])
    return sorted({*settings.alert_sinks, *settings.alerts.sinks, *named})


def configured_instances(settings: Settings) -> list[tuple[ComponentKind, str]]:
    """Every component instance the settings configure, as ``(kind, "type/name")`` (rules by their name)."""
    return [
        *(("extractor", ref) for ref in settings.pipeline.extractors),
        ("queue_backend", settings.queue.type),
        *(("pricing_provider", ref) for ref in settings.pricing.providers),
        *(("detector", ref) for ref in _detector_types(settings)),
        *(("alert_sink", ref) for ref in _sink_refs(settings)),
        *(("alert_rule", f"{rule.kind}/{rule.name}") for rule in settings.alerts.rules),
        *(("archiver", ref) for ref in [settings.retention.archiver] if ref),
        *(("sampler", ref) for ref in settings.sampling.samplers),
        *(("replay_executor", ref) for ref in sorted(settings.replay_executors)),
    ]


def build_components(settings: Settings, host: PluginHost, *, create: bool = True) -> Components:
    """Validate every configured component's config and, with ``create``, build it.

    Raises one :class:`ConfigError` listing all problems; ``create=False`` is ``lumina config check``.
    """
    errors: list[tuple[str, str]] = []
    extractors = []
    for ref in settings.pipeline.extractors:
        extractors.append(
            _build(
                host, "extractor", ref, settings.extractors.get(ref, {}), f"extractors.{ref}", settings, errors, create
            )
        )
    unused = set(settings.extractors) - set(settings.pipeline.extractors)
    errors.extend((f"extractors.{ref}", "configured but not listed in pipeline.extractors") for ref in sorted(unused))
    pricing_providers = []
    for ref in settings.pricing.providers:
        raw = settings.pricing_providers.get(ref, {})
        provider = _build(host, "pricing_provider", ref, raw, f"pricing_providers.{ref}", settings, errors, create)
        pricing_providers.append((ref, provider))
    unused = set(settings.pricing_providers) - set(settings.pricing.providers)
    errors.extend(
        (f"pricing_providers.{ref}", "configured but not listed in pricing.providers") for ref in sorted(unused)
    )
    detector_types = _detector_types(settings)
    detectors = {
        ref: _build(
            host, "detector", ref, settings.detectors.get(ref, {}), f"detectors.{ref}", settings, errors, create
        )
        for ref in detector_types
    }
    unused = set(settings.detectors) - set(detector_types)
    errors.extend((f"detectors.{ref}", "configured but not listed in quality.detectors") for ref in sorted(unused))
    sink_refs = _sink_refs(settings)
    alert_sinks = {
        ref: _build(
            host, "alert_sink", ref, settings.alert_sinks.get(ref, {}), f"alert_sinks.{ref}", settings, errors, create
        )
        for ref in sink_refs
    }
    alert_rules = RuleKinds(host, settings.alerts, set(sink_refs), settings.data_dir)
    for i, rule in enumerate(settings.alerts.rules):
        errors.extend((f"alerts.rules.{i}.{path}", message) for path, message in alert_rules.check(rule))
    queue = _build(
        host, "queue_backend", settings.queue.type, settings.queue.backend_config(), "queue", settings, errors, create
    )
    archiver = None
    if archiver_ref := settings.retention.archiver:
        raw = settings.archivers.get(archiver_ref, {})
        archiver = _build(host, "archiver", archiver_ref, raw, f"archivers.{archiver_ref}", settings, errors, create)
    samplers = [
        _build(host, "sampler", ref, settings.samplers.get(ref, {}), f"samplers.{ref}", settings, errors, create)
        for ref in settings.sampling.samplers
    ]
    unused = set(settings.samplers) - set(settings.sampling.samplers)
    errors.extend((f"samplers.{ref}", "configured but not listed in sampling.samplers") for ref in sorted(unused))
    executors = [
        _build(host, "replay_executor", ref, raw, f"replay_executors.{ref}", settings, errors, create)
        for ref, raw in sorted(settings.replay_executors.items())
    ]
    unused = set(settings.archivers) - {settings.retention.archiver}
    errors.extend((f"archivers.{ref}", "configured but not named by retention.archiver") for ref in sorted(unused))
    if errors:
        raise ConfigError(errors)
    if create:
        for extractor in extractors:
            if not isinstance(extractor, Extractor):
                raise ConfigError([("pipeline.extractors", f"{extractor!r} has no extract(span) method")])
        for ref, provider in pricing_providers:
            if not isinstance(provider, PricingProvider):
                raise ConfigError([("pricing.providers", f"{ref} has no lookup(provider, model, at) method")])
        for ref, detector in detectors.items():
            if not isinstance(detector, Detector) or detector.mode not in ("inline", "deferred"):
                raise ConfigError(
                    [(f"detectors.{ref}", "not a detector: needs mode 'inline' or 'deferred' and score()")]
                )
        for ref, sink in alert_sinks.items():
            if not isinstance(sink, AlertSink):
                raise ConfigError([(f"alert_sinks.{ref}", "not an alert sink: needs async send(alert)")])
        if archiver is not None and not isinstance(archiver, Archiver):
            raise ConfigError([("retention.archiver", "not an archiver: needs async archive() and read()")])
        for ref, sampler in zip(settings.sampling.samplers, samplers, strict=True):
            if not isinstance(sampler, Sampler) or sampler.stage not in ("head", "tail"):
                raise ConfigError([(f"samplers.{ref}", "not a sampler: needs stage 'head' or 'tail' and keep()")])
        for ref, executor in zip(sorted(settings.replay_executors), executors, strict=True):
            if not isinstance(executor, ReplayExecutor):
                raise ConfigError([(f"replay_executors.{ref}", "not a replay executor: needs providers and execute()")])
    return Components(
        extractors, queue, pricing_providers, detectors, alert_sinks, alert_rules, archiver, samplers, executors
    )


def all_archivers(settings: Settings, host: PluginHost) -> list[Archiver]:
    """One archiver of every registered type (configured as in ``archivers`` where it is), to read archives
    whatever wrote them."""
    archivers = []
    for type_name, factory in sorted(host.factories.get("archiver", {}).items()):
        raw = settings.archivers.get(type_name, {})
        context = ComponentContext(name="default", data_dir=settings.data_dir)
        archivers.append(factory.create(context, factory.config_model.model_validate(raw)))
    return archivers
