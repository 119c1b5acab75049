"""OpenLIT variants on top of the OTel GenAI names: its own cost estimate and total-token attribute.

OpenLIT writes ``gen_ai.usage.cost = 0`` for models it has no price for; a zero cost with non-zero
tokens is therefore treated as unknown, never as free (``values.reported_cost``).
"""

from __future__ import annotations

from lumina_core import ComponentConfig, ComponentFactory, LLMFields, SpanRecord, hookimpl
from lumina_plugins.extractors.values import first_int, reported_cost


class OpenLITExtractor:
    def extract(self, span: SpanRecord) -> LLMFields | None:
        a = span.attributes
        scope = span.scope_name or ""
        if a.get("telemetry.sdk.name") != "openlit" and not scope.startswith("openlit"):
            return None
        tokens = first_int(a, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
        return LLMFields(
            cost_usd=reported_cost(a.get("gen_ai.usage.cost"), tokens),
            reasoning_tokens=first_int(a, "gen_ai.usage.reasoning_tokens"),
            total_tokens=first_int(a, "gen_ai.client.token.usage", "gen_ai.usage.total_tokens"),
        )


@hookimpl
def lumina_register_extractors() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="openlit",
            create=lambda ctx, config: OpenLITExtractor(),
            config_model=ComponentConfig,
            description="OpenLIT cost and token variants.",
        )
    ]
