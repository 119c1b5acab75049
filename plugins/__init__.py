"""Built-in plugins: shipped in the Lumina wheel, registered explicitly, inert until configured."""

from lumina_plugins import (
    alert_rules,
    alert_sinks,
    exact_match,
    jsonl_archiver,
    memory_queue,
    pricing_genai,
    replay_openai,
    samplers,
)
from lumina_plugins.extractors import lumina_overrides, openinference, openlit, openllmetry, otel_genai

BUILTIN_PLUGINS = (
    memory_queue,
    pricing_genai,
    exact_match,
    alert_rules,
    alert_sinks,
    jsonl_archiver,
    samplers,
    replay_openai,
    lumina_overrides,
    otel_genai,
    openinference,
    openllmetry,
    openlit,
)
