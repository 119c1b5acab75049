"""OpenInference (Arize Phoenix) conventions: ``llm.*`` attributes and flattened ``llm.input_messages.N``.

``llm.model_name`` is usually the response model; the request model hides in the
``llm.invocation_parameters`` JSON. ``llm.token_count.prompt`` includes cache reads and writes.
"""

from __future__ import annotations

from typing import Any

from lumina_core import ComponentConfig, ComponentFactory, LLMFields, SpanRecord, hookimpl
from lumina_plugins.extractors.values import (
    as_str,
    first,
    first_int,
    indexed,
    json_value,
    normalise_message,
    reported_cost,
    string_list,
    system_text,
)

_OPERATIONS = {"LLM": "chat", "EMBEDDING": "embeddings"}


def _messages(attrs: dict[str, Any], prefix: str) -> list[dict[str, Any]] | None:
    return [normalise_message(m) for m in indexed(attrs, prefix, wrapper="message.")] or None


class OpenInferenceExtractor:
    def extract(self, span: SpanRecord) -> LLMFields | None:
        a = span.attributes
        kind = as_str(a.get("openinference.span.kind"))  # a list or map there must not fail the batch
        if kind not in _OPERATIONS and "llm.model_name" not in a and "llm.cost.total" not in a:
            return None
        params = json_value(a.get("llm.invocation_parameters"))
        params = params if isinstance(params, dict) else None
        output_messages = _messages(a, "llm.output_messages.")
        input_messages = _messages(a, "llm.input_messages.")
        finish = string_list(a.get("llm.finish_reason"))
        if finish is None and output_messages:
            finish = [str(m["finish_reason"]) for m in output_messages if m.get("finish_reason")] or None
        return LLMFields(
            provider=as_str(first(a, "llm.provider", "llm.system")),
            operation=_OPERATIONS.get(kind or ""),
            request_model=as_str(params.get("model")) if params else None,
            response_model=as_str(first(a, "llm.model_name", "embedding.model_name")),
            input_tokens=first_int(a, "llm.token_count.prompt"),
            cache_read_tokens=first_int(a, "llm.token_count.prompt_details.cache_read"),
            cache_write_tokens=first_int(a, "llm.token_count.prompt_details.cache_write"),
            output_tokens=first_int(a, "llm.token_count.completion"),
            reasoning_tokens=first_int(a, "llm.token_count.completion_details.reasoning"),
            total_tokens=first_int(a, "llm.token_count.total"),
            cost_usd=reported_cost(a.get("llm.cost.total"), first_int(a, "llm.token_count.prompt")),
            input_messages=input_messages,
            output_messages=output_messages,
            system_prompt=system_text(input_messages),
            invocation_parameters={k: v for k, v in params.items() if k != "model"} if params else None,
            finish_reasons=finish,
            response_id=_response_id(a),
        )


def _response_id(attrs: dict[str, Any]) -> str | None:
    """The provider's response id, which OpenInference keeps only inside the raw ``output.value`` JSON."""
    if attrs.get("output.mime_type") != "application/json":
        return None
    output = json_value(attrs.get("output.value"))
    return as_str(output.get("id")) if isinstance(output, dict) else None


@hookimpl
def lumina_register_extractors() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="openinference",
            create=lambda ctx, config: OpenInferenceExtractor(),
            config_model=ComponentConfig,
            description="OpenInference (Arize Phoenix) llm.* attributes.",
        )
    ]
