"""``lumina.*`` attributes: an application's own word on its LLM call, above every convention.

Keys: ``lumina.provider``, ``lumina.model``, ``lumina.operation``, ``lumina.cost_usd`` and
``lumina.usage.{input,cache_read,cache_write,output,reasoning}_tokens``. As in OTel GenAI,
``input_tokens`` includes cache reads and writes and ``output_tokens`` includes reasoning.
"""

from __future__ import annotations

from lumina_core import TOKEN_BUCKETS, ComponentConfig, ComponentFactory, LLMFields, SpanRecord, hookimpl
from lumina_plugins.extractors.values import as_float, as_str, first_int

KEYS = frozenset(
    {
        "lumina.provider",
        "lumina.operation",
        "lumina.model",
        "lumina.cost_usd",
        *(f"lumina.usage.{bucket}_tokens" for bucket in TOKEN_BUCKETS),
    }
)


class LuminaOverridesExtractor:
    def extract(self, span: SpanRecord) -> LLMFields | None:
        a = span.attributes
        if a.keys().isdisjoint(KEYS):
            return None
        fields = LLMFields(
            provider=as_str(a.get("lumina.provider")),
            operation=as_str(a.get("lumina.operation")),
            response_model=as_str(a.get("lumina.model")),
            input_tokens=first_int(a, "lumina.usage.input_tokens"),
            cache_read_tokens=first_int(a, "lumina.usage.cache_read_tokens"),
            cache_write_tokens=first_int(a, "lumina.usage.cache_write_tokens"),
            output_tokens=first_int(a, "lumina.usage.output_tokens"),
            reasoning_tokens=first_int(a, "lumina.usage.reasoning_tokens"),
            cost_usd=as_float(a.get("lumina.cost_usd")),
        )
        return None if fields.is_empty() else fields


@hookimpl
def lumina_register_extractors() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="lumina",
            create=lambda ctx, config: LuminaOverridesExtractor(),
            config_model=ComponentConfig,
            description="lumina.* attributes set by the application; they win over every convention.",
        )
    ]
