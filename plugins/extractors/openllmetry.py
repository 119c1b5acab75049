"""OpenLLMetry (Traceloop) variants on top of the OTel GenAI names.

Recent releases send the current OTel names plus ``gen_ai.usage.reasoning_tokens``; older ones send
``llm.request.type``, ``llm.usage.total_tokens``, ``gen_ai.usage.cache_read_input_tokens`` and
``gen_ai.usage.cache_creation_input_tokens``, with prompts flattened as ``gen_ai.prompt.N.*`` (read by
the deprecated OTel GenAI extractor).
"""

from __future__ import annotations

from lumina_core import ComponentConfig, ComponentFactory, LLMFields, SpanRecord, hookimpl
from lumina_plugins.extractors.values import as_str, first_int

_MARKERS = frozenset(
    {
        "llm.request.type",
        "llm.usage.total_tokens",
        "gen_ai.usage.reasoning_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
    }
)


class OpenLLMetryExtractor:
    def extract(self, span: SpanRecord) -> LLMFields | None:
        a = span.attributes
        if a.keys().isdisjoint(_MARKERS):
            return None
        return LLMFields(
            operation=as_str(a.get("llm.request.type")),
            cache_read_tokens=first_int(a, "gen_ai.usage.cache_read_input_tokens"),
            cache_write_tokens=first_int(a, "gen_ai.usage.cache_creation_input_tokens"),
            reasoning_tokens=first_int(a, "gen_ai.usage.reasoning_tokens"),
            total_tokens=first_int(a, "llm.usage.total_tokens", "gen_ai.usage.total_tokens"),
        )


@hookimpl
def lumina_register_extractors() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="openllmetry",
            create=lambda ctx, config: OpenLLMetryExtractor(),
            config_model=ComponentConfig,
            description="OpenLLMetry (Traceloop) token and request-type variants.",
        )
    ]
