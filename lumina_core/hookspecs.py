"""Hook specifications: the only points where plugins plug into Lumina.

Registration hooks are synchronous, called once when an app is built, and return component
factories (the dashboard hooks: links and panels); the pipeline then calls the built components
directly, never a hook per span.
"""

from __future__ import annotations

from lumina_core.plugin_api import ComponentFactory, NavItem, SpanPanel, hookspec


@hookspec
def lumina_register_extractors() -> list[ComponentFactory]:  # type: ignore[empty-body]
    """Register extractors, which read one instrumentation convention's attributes into LLM fields.

    Called once while the app is built. Return a list of :class:`ComponentFactory` whose ``create``
    returns an object with ``extract(span) -> LLMFields | None``. An extractor runs only when
    ``pipeline.extractors`` in ``lumina.toml`` names its type; the order there is the precedence.
    """


@hookspec
def lumina_register_queue_backends() -> list[ComponentFactory]:  # type: ignore[empty-body]
    """Register queue backends, which carry span batches from intake to the workers.

    Called once while the app is built. Return a list of :class:`ComponentFactory` whose ``create``
    returns a :class:`QueueBackend`. The backend used is the one ``[queue] type`` names.
    """


@hookspec
def lumina_register_pricing_providers() -> list[ComponentFactory]:  # type: ignore[empty-body]
    """Register pricing providers, which know the per-token prices of models.

    Called once while the app is built. Return a list of :class:`ComponentFactory` whose ``create``
    returns a :class:`PricingProvider`. Providers named in ``pricing.providers`` are asked in that
    order, after the custom prices; the first that knows a model prices it.
    """


@hookspec
def lumina_register_detectors() -> list[ComponentFactory]:  # type: ignore[empty-body]
    """Register quality detectors, which score a response against the baseline responses of its prompt.

    Called once while the app is built. Return a list of :class:`ComponentFactory` whose ``create``
    returns a :class:`Detector`. The detectors that run are those ``quality.detectors`` names (per
    service: ``quality.services."<name>".detectors``).
    """


@hookspec
def lumina_register_alert_rules() -> list[ComponentFactory]:  # type: ignore[empty-body]
    """Register alert rule kinds, which judge a window of a scope's LLM calls against thresholds.

    Called once while the app is built. Return a list of :class:`ComponentFactory` whose
    ``config_model`` extends :class:`AlertThresholds` and whose ``create`` returns an
    :class:`AlertRuleKind` (or an :class:`ImmediateAlertRuleKind`). Rules in ``[[alerts.rules]]`` or
    created through ``/api/v1/alerts/rules`` name the kind in ``kind``; the engine creates one kind per
    rule and scope, with the thresholds that cascade to that scope.
    """


@hookspec
def lumina_register_alert_sinks() -> list[ComponentFactory]:  # type: ignore[empty-body]
    """Register alert sinks, which deliver alerts (a webhook, Slack, e-mail, PagerDuty …).

    Called once while the app is built. Return a list of :class:`ComponentFactory` whose ``create``
    returns an :class:`AlertSink`. Instances are configured as ``[alert_sinks."type/name"]`` and named
    in ``alerts.sinks`` or a rule's ``sinks``; Lumina retries failed sends from a persistent outbox.
    """


@hookspec
def lumina_register_samplers() -> list[ComponentFactory]:  # type: ignore[empty-body]
    """Register samplers, which decide which traces are kept (head: on the trace id, before storing;
    tail: on whole stored traces, once they are quiet).

    Called once while the app is built. Return a list of :class:`ComponentFactory` whose ``create``
    returns a :class:`Sampler`. The samplers that run are those ``sampling.samplers`` names, configured as
    ``[samplers."type"]``; a trace is kept only if every one of them keeps it.
    """


@hookspec
def lumina_register_replay_executors() -> list[ComponentFactory]:  # type: ignore[empty-body]
    """Register replay executors, which send captured LLM calls again to a provider's API.

    Called once while the app is built. Return a list of :class:`ComponentFactory` whose ``create``
    returns a :class:`ReplayExecutor`. Instances are configured as ``[replay_executors."type/name"]``
    (base URL, API key by ``${env:…}``); a replay run sends each call to the executor serving its
    provider.
    """


@hookspec
def lumina_register_archivers() -> list[ComponentFactory]:  # type: ignore[empty-body]
    """Register archivers, which keep spans before the retention sweep deletes them.

    Called once while the app is built. Return a list of :class:`ComponentFactory` whose ``create``
    returns an :class:`Archiver`. The one used is ``retention.archiver`` (``"type"`` or ``"type/name"``),
    configured as ``[archivers."type/name"]``; ``lumina import`` asks every registered type to read a file.
    """


@hookspec
def lumina_dashboard_nav_items() -> list[NavItem]:  # type: ignore[empty-body]
    """Add links to the dashboard's navigation bar.

    Called once while the app is built. Return a list of :class:`NavItem`; they appear after the
    built-in pages, in plugin registration order.
    """


@hookspec
def lumina_dashboard_span_panels() -> list[SpanPanel]:  # type: ignore[empty-body]
    """Add panels to the span view of the dashboard's trace page.

    Called once while the app is built. Return a list of :class:`SpanPanel`; each panel's ``rows``
    is called with the span being viewed and returns the rows to show (escaped), or ``None``.
    """
