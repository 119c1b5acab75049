"""The extract stage: each convention, one precedence, disjoint token buckets, status and latency."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lumina_core.components import build_components
from lumina_core.config import load_settings
from lumina_core.extraction import ExtractStage, normalise_error_type
from lumina_core.plugin_api import SpanRecord
from lumina_core.plugins import PluginHost


@pytest.fixture(scope="module")
def stage() -> ExtractStage:
    return ExtractStage(build_components(load_settings(None, env={}), PluginHost(entry_points=False)).extractors)


def span(attributes: dict[str, Any], *, status: str = "unset", events: list | None = None, scope: str | None = None):
    return SpanRecord(
        trace_id="1" * 32,
        span_id="2" * 16,
        parent_span_id=None,
        name="llm call",
        kind="client",
        start_time_unix_nano=1_000_000_000,
        end_time_unix_nano=1_250_000_000,
        status_code=status,
        status_message=None,
        service_name="svc",
        scope_name=scope,
        attributes=attributes,
        resource_attributes={"service.name": "svc"},
        events=events or [],
        links=[],
    )


BUCKETS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")

CONVENTIONS = {
    "otel genai current": (
        {
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4-5",
            "gen_ai.response.model": "claude-sonnet-4-5-20250929",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.cache_read.input_tokens": 700,
            "gen_ai.usage.cache_creation.input_tokens": 200,
            "gen_ai.usage.output_tokens": 300,
            "gen_ai.usage.reasoning.output_tokens": 120,
        },
        ("anthropic", "claude-sonnet-4-5-20250929", (100, 700, 200, 180, 120)),
    ),
    "anthropic sdk tracing cache-write name": (
        {
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-3-5-sonnet-20241022",
            "gen_ai.usage.input_tokens": 500,
            "gen_ai.usage.cache_write.input_tokens": 100,
            "gen_ai.usage.output_tokens": 50,
        },
        ("anthropic", "claude-3-5-sonnet-20241022", (400, None, 100, 50, None)),
    ),
    "otel genai deprecated": (
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4-0613",
            "gen_ai.usage.prompt_tokens": 80,
            "gen_ai.usage.completion_tokens": 20,
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": "hi",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": "hello",
            "gen_ai.completion.0.finish_reason": "length",
        },
        ("openai", "gpt-4-0613", (80, None, None, 20, None)),
    ),
    "openinference": (
        {
            "openinference.span.kind": "LLM",
            "llm.provider": "openai",
            "llm.model_name": "gpt-4o-2024-08-06",
            "llm.invocation_parameters": '{"model": "gpt-4o", "temperature": 0}',
            "llm.token_count.prompt": 120,
            "llm.token_count.prompt_details.cache_read": 80,
            "llm.token_count.prompt_details.cache_write": 10,
            "llm.token_count.completion": 50,
            "llm.token_count.completion_details.reasoning": 20,
        },
        ("openai", "gpt-4o-2024-08-06", (30, 80, 10, 30, 20)),
    ),
    "openllmetry older names": (
        {
            "gen_ai.system": "Anthropic",
            "llm.request.type": "chat",
            "gen_ai.request.model": "claude-3-opus-20240229",
            "gen_ai.usage.prompt_tokens": 900,
            "gen_ai.usage.cache_read_input_tokens": 500,
            "gen_ai.usage.cache_creation_input_tokens": 300,
            "gen_ai.usage.completion_tokens": 40,
            "llm.usage.total_tokens": 940,
        },
        ("anthropic", "claude-3-opus-20240229", (100, 500, 300, 40, None)),
    ),
    "openlit": (
        {
            "telemetry.sdk.name": "openlit",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 120,
            "gen_ai.usage.cache_read.input_tokens": 80,
            "gen_ai.usage.output_tokens": 50,
            "gen_ai.usage.reasoning_tokens": 20,
            "gen_ai.usage.cost": 0.0007,
        },
        ("openai", "gpt-4o", (40, 80, None, 30, 20)),
    ),
}


@pytest.mark.parametrize("case", sorted(CONVENTIONS))
def test_each_convention_gives_provider_model_and_disjoint_buckets(stage: ExtractStage, case: str) -> None:
    attributes, (provider, model, buckets) = CONVENTIONS[case]
    row = stage.row("p", span(attributes))
    assert row["is_llm"] is True
    assert (row["provider"], row["model"]) == (provider, model)
    assert tuple(row[b] for b in BUCKETS) == buckets


def test_non_llm_spans_are_stored_with_no_llm_fields(stage: ExtractStage) -> None:
    row = stage.row("p", span({"http.method": "GET"}))
    assert row["is_llm"] is False
    assert all(row[b] is None for b in BUCKETS)
    assert row["status"] == "ok"
    assert row["latency_ms"] == 250.0
    assert row["attributes"] == {"http.method": "GET"}


def test_unreported_buckets_stay_unknown_never_zero(stage: ExtractStage) -> None:
    row = stage.row("p", span({"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}))
    assert row["is_llm"] is True
    assert all(row[b] is None for b in BUCKETS)
    assert row["cost_usd"] is None


def test_input_is_derived_from_total_when_only_total_and_output_are_reported(stage: ExtractStage) -> None:
    attributes = {"llm.model_name": "m", "llm.token_count.total": 100, "llm.token_count.completion": 30}
    assert stage.row("p", span(attributes))["input_tokens"] == 70


def test_lumina_overrides_win_over_every_convention(stage: ExtractStage) -> None:
    row = stage.row(
        "p",
        span(
            {
                "gen_ai.provider.name": "openai",
                "gen_ai.response.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 10,
                "lumina.model": "my-finetune",
                "lumina.provider": "azure",
                "lumina.cost_usd": 0.25,
            }
        ),
    )
    assert (row["model"], row["provider"], row["input_tokens"]) == ("my-finetune", "azure", 10)
    assert (row["cost_usd"], row["cost_source"]) == (0.25, "span")


def test_current_names_win_over_deprecated_ones(stage: ExtractStage) -> None:
    row = stage.row(
        "p",
        span(
            {
                "gen_ai.provider.name": "openai",
                "gen_ai.system": "az.ai.openai",
                "gen_ai.usage.input_tokens": 5,
                "gen_ai.usage.prompt_tokens": 7,
                "gen_ai.request.model": "gpt-4o",
            }
        ),
    )
    assert (row["provider"], row["input_tokens"]) == ("openai", 5)


def test_openlit_zero_cost_for_an_unknown_model_is_not_free(stage: ExtractStage) -> None:
    attributes = {
        "telemetry.sdk.name": "openlit",
        "gen_ai.provider.name": "x",
        "gen_ai.request.model": "new-model",
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.cost": 0,
    }
    row = stage.row("p", span(attributes))
    assert row["cost_usd"] is None and row["cost_source"] is None
    attributes["gen_ai.usage.cost"] = 0.002
    assert stage.row("p", span(attributes))["cost_usd"] == 0.002


def test_messages_and_parameters_from_otel_json_and_openinference_flattened(stage: ExtractStage) -> None:
    current = stage.row(
        "p",
        span(
            {
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.request.temperature": 0.3,
                "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief."}]),
                "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "Hi"}]}]),
                "gen_ai.output.messages": json.dumps(
                    [
                        {
                            "role": "assistant",
                            "parts": [{"type": "tool_call", "name": "search", "id": "c1"}],
                            "finish_reason": "tool_call",
                        }
                    ]
                ),
                "gen_ai.response.finish_reasons": ["tool_calls"],
            }
        ),
    )
    assert current["system_prompt"] == "Be brief."
    assert current["input_messages"][0]["content"] == "Hi"
    assert current["output_messages"][0]["tool_calls"][0]["name"] == "search"
    assert current["invocation_parameters"] == {"temperature": 0.3}
    assert current["finish_reasons"] == ["tool_calls"]

    openinference = stage.row(
        "p",
        span(
            {
                "openinference.span.kind": "LLM",
                "llm.model_name": "gpt-4o",
                "llm.input_messages.0.message.role": "system",
                "llm.input_messages.0.message.content": "Be brief.",
                "llm.input_messages.1.message.role": "user",
                "llm.input_messages.1.message.content": "Weather?",
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "weather",
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"city": "Paris"}',
                "output.mime_type": "application/json",
                "output.value": '{"id": "chatcmpl-1"}',
            }
        ),
    )
    assert openinference["system_prompt"] == "Be brief."
    assert [m["role"] for m in openinference["input_messages"]] == ["system", "user"]
    call = openinference["output_messages"][0]["tool_calls"][0]["tool_call"]["function"]
    assert call == {"name": "weather", "arguments": '{"city": "Paris"}'}
    assert openinference["response_id"] == "chatcmpl-1"


def test_deprecated_prompt_events_are_read(stage: ExtractStage) -> None:
    events = [
        {"name": "gen_ai.content.prompt", "time_unix_nano": 1, "attributes": {"gen_ai.prompt": "user: hi"}},
        {"name": "gen_ai.content.completion", "time_unix_nano": 2, "attributes": {"gen_ai.completion": "hello"}},
    ]
    row = stage.row("p", span({"gen_ai.system": "openai", "gen_ai.request.model": "gpt-3.5-turbo"}, events=events))
    assert row["input_messages"] == [{"role": None, "content": "user: hi"}]
    assert row["output_messages"] == [{"role": None, "content": "hello"}]


@pytest.mark.parametrize(
    ("attributes", "status_code", "events", "expected"),
    [
        ({"gen_ai.request.model": "m", "gen_ai.response.finish_reasons": ["stop"]}, "unset", [], "ok"),
        ({"gen_ai.request.model": "m", "gen_ai.response.finish_reasons": ["length"]}, "ok", [], "degraded"),
        ({"gen_ai.request.model": "m", "gen_ai.response.finish_reasons": ["content_filter"]}, "unset", [], "degraded"),
        ({"gen_ai.request.model": "m"}, "error", [], "error"),
        (
            {},
            "unset",
            [{"name": "exception", "time_unix_nano": 1, "attributes": {"exception.type": "ValueError"}}],
            "error",
        ),
    ],
)
def test_status(stage: ExtractStage, attributes, status_code, events, expected) -> None:
    assert stage.row("p", span(attributes, status=status_code, events=events))["status"] == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("<class 'openai.RateLimitError'>", "RateLimitError"),
        ("openai.RateLimitError", "RateLimitError"),
        ("RateLimitError", "RateLimitError"),
        ("rate_limit_error", "rate_limit_error"),
        ("", None),
        (None, None),
    ],
)
def test_error_types_are_normalised(raw, expected) -> None:
    assert normalise_error_type(raw) == expected


def test_error_type_comes_from_the_exception_event_when_no_attribute_says(stage: ExtractStage) -> None:
    events = [{"name": "exception", "time_unix_nano": 1, "attributes": {"exception.type": "openai.APITimeoutError"}}]
    row = stage.row("p", span({"gen_ai.request.model": "m"}, events=events))
    assert (row["status"], row["error_type"]) == ("error", "APITimeoutError")
