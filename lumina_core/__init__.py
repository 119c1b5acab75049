"""Lumina: self-hosted observability for LLM applications.

The names re-exported here are the public plugin API (see ``lumina_core.plugin_api``).
"""

from lumina_core.plugin_api import (
    PLUGIN_API_VERSION,
    TOKEN_BUCKETS,
    AttributeValue,
    ComponentConfig,
    ComponentContext,
    ComponentFactory,
    ComponentKind,
    ConfigError,
    Delivery,
    Extractor,
    LLMFields,
    LuminaError,
    PriceRule,
    PricingProvider,
    QueueBackend,
    QueueFull,
    QueueUnavailable,
    SpanBatch,
    SpanRecord,
    hookimpl,
    hookspec,
)

__version__ = "0.1.0"

__all__ = [
    "PLUGIN_API_VERSION",
    "TOKEN_BUCKETS",
    "AttributeValue",
    "ComponentConfig",
    "ComponentContext",
    "ComponentFactory",
    "ComponentKind",
    "ConfigError",
    "Delivery",
    "Extractor",
    "LLMFields",
    "LuminaError",
    "PriceRule",
    "PricingProvider",
    "QueueBackend",
    "QueueFull",
    "QueueUnavailable",
    "SpanBatch",
    "SpanRecord",
    "__version__",
    "hookimpl",
    "hookspec",
]
