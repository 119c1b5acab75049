"""OpenTelemetry GenAI semantic conventions: the current names and the deprecated ones.

Current: ``gen_ai.provider.name``, ``gen_ai.usage.input_tokens`` (includes cache reads and writes),
``gen_ai.usage.cache_read.input_tokens``, ``gen_ai.usage.cache_creation.input_tokens``,
``gen_ai.usage.reasoning.output_tokens``, ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (JSON).
Deprecated: ``gen_ai.system``, ``gen_ai.usage.prompt_tokens`` / ``completion_tokens``, ``gen_ai.prompt``
/ ``gen_ai.completion`` (JSON, or flattened ``gen_ai.prompt.N.role``), and the
``gen_ai.content.prompt`` / ``gen_ai.content.completion`` events.
"""

from __future__ import annotations

from lumina_core import ComponentConfig, ComponentFactory, LLMFields, SpanRecord, hookimpl
from lumina_plugins.extractors.values import (
    as_str,
    first_int,
    indexed,
    json_value,
    messages,
    normalise_message,
    prefixed,
    reported_cost,
    string_list,
    system_text,
)

REQUEST_PREFIX = "gen_ai.request."


def invocation_parameters(attrs: dict) -> dict | None:
    params = prefixed(attrs, REQUEST_PREFIX)
    if params:
        params.pop("model", None)
    return params or None


class OtelGenAIExtractor:
    """The current OTel GenAI names (semantic conventions 1.37 and later)."""

    def extract(self, span: SpanRecord) -> LLMFields | None:
        a = span.attributes
        if "gen_ai.provider.name" not in a and "gen_ai.operation.name" not in a and "gen_ai.request.model" not in a:
            return None
        input_messages = messages(a.get("gen_ai.input.messages"))
        input_tokens = first_int(a, "gen_ai.usage.input_tokens")
        instructions = messages(a.get("gen_ai.system_instructions"))
        system = "\n".join(str(m["content"]) for m in instructions if m.get("content")) if instructions else None
        return LLMFields(
            provider=as_str(a.get("gen_ai.provider.name")),
            operation=as_str(a.get("gen_ai.operation.name")),
            request_model=as_str(a.get("gen_ai.request.model")),
            response_model=as_str(a.get("gen_ai.response.model")),
            input_tokens=input_tokens,
            cache_read_tokens=first_int(a, "gen_ai.usage.cache_read.input_tokens"),
            cache_write_tokens=first_int(
                a, "gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_write.input_tokens"
            ),
            output_tokens=first_int(a, "gen_ai.usage.output_tokens"),
            reasoning_tokens=first_int(a, "gen_ai.usage.reasoning.output_tokens"),
            total_tokens=first_int(a, "gen_ai.usage.total_tokens"),
            input_messages=input_messages,
            output_messages=messages(a.get("gen_ai.output.messages")),
            system_prompt=system or system_text(input_messages),
            invocation_parameters=invocation_parameters(a),
            finish_reasons=string_list(a.get("gen_ai.response.finish_reasons")),
            response_id=as_str(a.get("gen_ai.response.id")),
            error_type=as_str(a.get("error.type")),
            cost_usd=reported_cost(a.get("gen_ai.usage.cost"), input_tokens),  # not OTel; several libraries send it
        )


class OtelGenAIDeprecatedExtractor:
    """The deprecated OTel GenAI names, still sent by older instrumentations."""

    def extract(self, span: SpanRecord) -> LLMFields | None:
        a = span.attributes
        if "gen_ai.system" not in a and "gen_ai.usage.prompt_tokens" not in a and "gen_ai.prompt.0.role" not in a:
            return None
        prompt = a.get("gen_ai.prompt")
        completion = a.get("gen_ai.completion")
        for event in span.events:
            if event["name"] == "gen_ai.content.prompt" and prompt is None:
                prompt = event["attributes"].get("gen_ai.prompt")
            elif event["name"] == "gen_ai.content.completion" and completion is None:
                completion = event["attributes"].get("gen_ai.completion")
        input_messages = _messages(prompt, a, "gen_ai.prompt.")
        output_messages = _messages(completion, a, "gen_ai.completion.")
        finish_reasons = string_list(a.get("gen_ai.response.finish_reasons"))
        if finish_reasons is None and output_messages:
            finish_reasons = [str(m["finish_reason"]) for m in output_messages if m.get("finish_reason")] or None
        return LLMFields(
            provider=as_str(a.get("gen_ai.system")),
            request_model=as_str(a.get("gen_ai.request.model")),
            response_model=as_str(a.get("gen_ai.response.model")),
            input_tokens=first_int(a, "gen_ai.usage.prompt_tokens", "gen_ai.usage.input_tokens"),
            output_tokens=first_int(a, "gen_ai.usage.completion_tokens", "gen_ai.usage.output_tokens"),
            total_tokens=first_int(a, "gen_ai.usage.total_tokens"),
            input_messages=input_messages,
            output_messages=output_messages,
            system_prompt=system_text(input_messages),
            invocation_parameters=invocation_parameters(a),
            finish_reasons=finish_reasons,
            response_id=as_str(a.get("gen_ai.response.id")),
            error_type=as_str(a.get("error.type")),
        )


def _messages(value: object, attrs: dict, prefix: str) -> list[dict] | None:
    if value is not None and value != "":
        parsed = json_value(value)
        return messages(parsed) if isinstance(parsed, list | dict) else [{"role": None, "content": str(value)}]
    flat = indexed(attrs, prefix)
    return [normalise_message(m) for m in flat] or None


@hookimpl
def lumina_register_extractors() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="otel_genai",
            create=lambda ctx, config: OtelGenAIExtractor(),
            config_model=ComponentConfig,
            description="OpenTelemetry GenAI semantic conventions (current names).",
        ),
        ComponentFactory(
            type="otel_genai_deprecated",
            create=lambda ctx, config: OtelGenAIDeprecatedExtractor(),
            config_model=ComponentConfig,
            description="OpenTelemetry GenAI semantic conventions (deprecated names: gen_ai.system, prompt_tokens…).",
        ),
    ]
