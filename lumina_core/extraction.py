"""The extract stage: runs the configured extractors in precedence order and builds ``spans`` rows.

The first extractor in ``pipeline.extractors`` that reports a field wins it; later ones only fill
what is still unknown. Token counts are then split into disjoint buckets (DESIGN §6).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from lumina_core.plugin_api import Extractor, LLMFields, SpanBatch, SpanRecord

log = logging.getLogger(__name__)
USER_ID_KEYS = ("user.id", "enduser.id", "langfuse.user.id")
SESSION_ID_KEYS = ("session.id", "gen_ai.conversation.id", "langfuse.session.id")
"""Where the end user and the conversation of a span are found, first match wins (span, then resource)."""
MAX_ID_LENGTH = 256
DEGRADED_FINISH_REASONS = frozenset({"length", "max_tokens", "content_filter", "safety", "recitation"})
_CLASS_REPR = re.compile(r"^<class '([^']+)'>$")


def normalise_error_type(value: object) -> str | None:
    """``<class 'openai.RateLimitError'>`` and ``openai.RateLimitError`` both become ``RateLimitError``."""
    if value is None or value == "":
        return None
    text = str(value)
    match = _CLASS_REPR.match(text)
    if match:
        text = match.group(1)
    return text.rsplit(".", 1)[-1]


def first_value(keys: tuple[str, ...], *attribute_maps: dict[str, Any]) -> str | None:
    """The first of ``keys`` present in the span's attributes, then in its resource's, as text."""
    for attributes in attribute_maps:
        for key in keys:
            value = attributes.get(key)
            if value is not None and value != "":
                return str(value)[:MAX_ID_LENGTH]
    return None


def _minus(total: int | None, *parts: int | None) -> int | None:
    if total is None:
        return None
    return max(total - sum(p for p in parts if p is not None), 0)


class ExtractStage:
    """Turns decoded spans into rows of the ``spans`` table."""

    def __init__(self, extractors: Sequence[Extractor]) -> None:
        self.extractors = list(extractors)

    def llm_fields(self, span: SpanRecord) -> LLMFields | None:
        merged: LLMFields | None = None
        for extractor in self.extractors:
            found = extractor.extract(span)
            if found is None:
                continue
            if merged is None:
                merged = found
            else:
                merged.merge_missing(found)
        return merged

    def rows(self, batch: SpanBatch) -> list[dict[str, Any]]:
        return [self.row(batch.project_id, span) for span in batch.spans]

    def row(self, project_id: str, span: SpanRecord) -> dict[str, Any]:
        try:
            llm = self.llm_fields(span)
        except Exception:  # a span an extractor cannot read is still stored, without LLM fields
            log.warning("extracting LLM fields of span %s/%s failed", span.trace_id, span.span_id, exc_info=True)
            llm = None
        exception = next((e for e in span.events if e["name"] == "exception"), None)
        error_type = normalise_error_type(
            (llm.error_type if llm else None)
            or span.attributes.get("error.type")
            or (exception["attributes"].get("exception.type") if exception else None)
        )
        if span.status_code == "error" or exception is not None:
            status = "error"
        elif llm and llm.finish_reasons and DEGRADED_FINISH_REASONS.intersection(llm.finish_reasons):
            status = "degraded"
        else:
            status = "ok"
        row: dict[str, Any] = {
            "project_id": project_id,
            "trace_id": span.trace_id,
            "span_id": span.span_id,
            "parent_span_id": span.parent_span_id,
            "name": span.name,
            "kind": span.kind,
            "service_name": span.service_name,
            "scope_name": span.scope_name,
            "start_time_unix_nano": span.start_time_unix_nano,
            "end_time_unix_nano": span.end_time_unix_nano,
            "latency_ms": (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6,
            "status_code": span.status_code,
            "status_message": span.status_message,
            "status": status,
            "error_type": error_type,
            "user_id": first_value(USER_ID_KEYS, span.attributes, span.resource_attributes),
            "session_id": first_value(SESSION_ID_KEYS, span.attributes, span.resource_attributes),
            "attributes": span.attributes,
            "resource_attributes": span.resource_attributes,
            "events": span.events,
            "links": span.links,
            "counted": True,
        }
        row.update(llm_columns(llm))
        return row


_EMPTY_LLM_COLUMNS: dict[str, Any] = {
    "is_llm": False,
    **dict.fromkeys(
        (
            "operation",
            "provider",
            "request_model",
            "response_model",
            "model",
            "input_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "output_tokens",
            "reasoning_tokens",
            "cost_usd",
            "cost_source",
            "pricing_status",
            "pricing_rule",
            "response_id",
            "finish_reasons",
            "input_messages",
            "output_messages",
            "system_prompt",
            "invocation_parameters",
        )
    ),
}


def llm_columns(llm: LLMFields | None) -> dict[str, Any]:
    if llm is None:
        return _EMPTY_LLM_COLUMNS
    input_total, output_total = llm.input_tokens, llm.output_tokens
    if input_total is None and llm.total_tokens is not None and output_total is not None:
        input_total = max(llm.total_tokens - output_total, 0)
    if input_total is not None and llm.input_includes_cache:
        uncached_input = _minus(input_total, llm.cache_read_tokens, llm.cache_write_tokens)
    else:
        uncached_input = input_total
    return {
        "is_llm": True,
        "operation": llm.operation,
        "provider": llm.provider.lower() if llm.provider else None,
        "request_model": llm.request_model,
        "response_model": llm.response_model,
        "model": llm.response_model or llm.request_model,
        "input_tokens": uncached_input,
        "cache_read_tokens": llm.cache_read_tokens,
        "cache_write_tokens": llm.cache_write_tokens,
        "output_tokens": _minus(output_total, llm.reasoning_tokens),
        "reasoning_tokens": llm.reasoning_tokens,
        "cost_usd": llm.cost_usd,
        "cost_source": "span" if llm.cost_usd is not None else None,
        "pricing_status": None,
        "pricing_rule": None,
        "response_id": llm.response_id,
        "finish_reasons": llm.finish_reasons,
        "input_messages": llm.input_messages,
        "output_messages": llm.output_messages,
        "system_prompt": llm.system_prompt,
        "invocation_parameters": llm.invocation_parameters,
    }
