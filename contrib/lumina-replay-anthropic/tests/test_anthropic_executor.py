"""The Anthropic replay executor against the fake LLM on 127.0.0.1: the replay-executor contract, the
fake's Anthropic side through the SDK, how captured calls become requests, errors, config, discovery."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any

import anthropic
import httpx
import lumina_replay_anthropic
import pytest
from lumina_replay_anthropic import (
    AnthropicExecutor,
    AnthropicExecutorConfig,
    AnthropicRefused,
    _retry_after,
    to_messages,
    to_tools,
)
from pydantic import ValidationError

from lumina_core import ComponentContext, ReplayCall, ReplayExecutor, ReplayRetryable
from lumina_core.config import PluginSettings
from lumina_core.plugins import PluginHost
from lumina_core.testing.contracts import ReplayExecutorContract
from lumina_core.testing.fake_llm import FakeLLM

KEY = "sk-ant-test-key-0123456789"


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    with FakeLLM(api_key=KEY) as fake:
        yield fake


def executor_for(llm: FakeLLM, **config: Any) -> AnthropicExecutor:
    return AnthropicExecutor(AnthropicExecutorConfig(api_key=KEY, base_url=llm.anthropic_base_url, **config))


class TestAnthropicExecutor(ReplayExecutorContract):
    type_name = "anthropic"

    @pytest.fixture
    def plugin(self) -> object:
        return lumina_replay_anthropic

    @pytest.fixture
    def provider(self) -> str:
        return "anthropic"

    @pytest.fixture
    def executor(self, llm: FakeLLM, api_key: str) -> AnthropicExecutor:
        return AnthropicExecutor(AnthropicExecutorConfig(api_key=api_key, base_url=llm.anthropic_base_url))


# -- the fake's Anthropic side, through the official SDK ------------------------------------------


def sdk(llm: FakeLLM, **options: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=KEY, base_url=llm.anthropic_base_url, max_retries=0, **options)


def test_the_fake_answers_a_message_as_anthropic_does(llm: FakeLLM) -> None:
    message = sdk(llm).messages.create(
        model="claude-test", max_tokens=50, system="be brief", messages=[{"role": "user", "content": "hello"}]
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == "claude-test"
    assert [(b.type, b.text) for b in message.content] == [("text", "[claude-test] hello")]  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    # "be brief" (2) + "hello" (2) + 4 for the message = 8; "[claude-test] hello" is 19 characters = 5
    assert (message.usage.input_tokens, message.usage.output_tokens) == (8, 5)
    assert message.usage.cache_read_input_tokens == 0 and message.usage.cache_creation_input_tokens == 0
    [request] = llm.requests
    assert request.api == "anthropic" and request.path == "/v1/messages" and request.status == 200
    assert request.headers["anthropic-version"]
    assert KEY in (request.headers.get("x-api-key"), request.headers.get("authorization", "").removeprefix("Bearer "))
    assert request.body == {
        "model": "claude-test",
        "max_tokens": 50,
        "system": "be brief",
        "messages": [{"role": "user", "content": "hello"}],
    }


def test_the_fake_reports_cache_tokens_apart_and_honours_max_tokens_and_stop_sequences(llm: FakeLLM) -> None:
    llm.cache_read_tokens, llm.cache_write_tokens = 3, 2
    message = sdk(llm).messages.create(model="c", max_tokens=50, messages=[{"role": "user", "content": "hello"}])
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (1, 3, 2)
    cut = sdk(llm).messages.create(model="c", max_tokens=1, messages=[{"role": "user", "content": "hello"}])
    assert cut.stop_reason == "max_tokens" and cut.content[0].text == "[c] "  # type: ignore[union-attr]
    stopped = sdk(llm).messages.create(
        model="c", max_tokens=50, stop_sequences=["l"], messages=[{"role": "user", "content": "hello"}]
    )
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "l"
    assert stopped.content[0].text == "[c] he"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.InternalServerError, "overloaded_error"),
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
    ],
)
def test_the_fake_fails_with_anthropics_error_bodies(
    llm: FakeLLM, status: int, error: type[anthropic.APIStatusError], kind: str
) -> None:
    llm.fail_first, llm.fail_status = 1, status
    with pytest.raises(error) as raised:
        sdk(llm).messages.create(model="c", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == status
    body = raised.value.body
    assert isinstance(body, dict) and body["type"] == "error" and body["error"]["type"] == kind
    assert raised.value.response.headers["request-id"] == body["request_id"]
    assert raised.value.response.headers.get("retry-after") == (None if status < 429 else "2")


def test_the_fake_wants_a_key_a_version_and_max_tokens(llm: FakeLLM) -> None:
    url = f"{llm.url}/v1/messages"
    message = {"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    no_key = httpx.post(url, json=message, headers={"anthropic-version": "2023-06-01"})
    assert no_key.status_code == 401 and no_key.json()["error"]["type"] == "authentication_error"
    wrong = httpx.post(url, json=message, headers={"anthropic-version": "2023-06-01", "x-api-key": "nope"})
    assert wrong.status_code == 401
    no_version = httpx.post(url, json=message, headers={"x-api-key": KEY})
    assert no_version.status_code == 400 and "anthropic-version" in no_version.json()["error"]["message"]
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    no_max = httpx.post(url, json={k: v for k, v in message.items() if k != "max_tokens"}, headers=headers)
    assert no_max.status_code == 400 and no_max.json()["error"]["message"] == "max_tokens: Field required"
    ok = httpx.post(url, json=message, headers=headers)
    assert ok.status_code == 200 and ok.json()["type"] == "message"
    assert [r.status for r in llm.requests] == [401, 401, 400, 400, 200]


# -- how a captured call becomes a request -----------------------------------------------------


def test_roles_are_mapped_and_the_system_prompt_kept_apart() -> None:
    system, messages = to_messages(
        [
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "hello"},
            {"role": "user", "content": [{"type": "text", "text": "are you there?"}]},
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": "oui"},
            {"role": "developer", "content": "Be terse."},
            {"role": "narrator", "content": "meanwhile"},
        ],
        "You are helpful.",
    )
    assert system == "You are helpful.\n\nAnswer in French.\n\nBe terse."
    assert messages == [
        {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "are you there?"}]},
        {"role": "assistant", "content": "oui"},
        {"role": "user", "content": "meanwhile"},
    ]
    assert to_messages([{"role": "user", "content": "hi"}], None) == (None, [{"role": "user", "content": "hi"}])


def test_tool_calls_and_results_become_tool_use_and_tool_result_blocks() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}
    _, messages = to_messages(
        [
            {"role": "user", "content": "weather in Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "-3 °C"},
            {"role": "user", "content": "thanks"},
            {"role": "assistant", "content": "ok", "tool_calls": [{"id": "call_2", "name": "x", "arguments": "{"}]},
            {"role": "tool", "tool_call_id": "call_9", "content": "orphan"},
        ],
        None,
    )
    assert messages == [
        {"role": "user", "content": "weather in Oslo?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": [{"type": "text", "text": "-3 °C"}]},
                {"type": "text", "text": "thanks"},
            ],
        },
        # call_2 is never answered and call_9 answers nothing: both go as text, or Anthropic refuses the request
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "ok"}, {"type": "text", "text": '[tool call x: {"arguments": "{"}]'}],
        },
        {"role": "user", "content": "[tool result: orphan]"},
    ]


def test_openai_content_parts_and_tools_are_converted() -> None:
    _, messages = to_messages(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    {"type": "text", "text": ""},
                ],
            }
        ],
        None,
    )
    assert messages[0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    openai_tool = {
        "type": "function",
        "function": {"name": "weather", "description": "the weather", "parameters": {"type": "object"}},
    }
    native = {"name": "lookup", "input_schema": {"type": "object", "properties": {}}}
    assert to_tools([openai_tool, native, {"type": "web_search_20250305", "name": "web_search"}]) == [
        {"name": "weather", "input_schema": {"type": "object"}, "description": "the weather"},
        native,
        {"type": "web_search_20250305", "name": "web_search"},
    ]


async def test_the_request_reaches_the_api_with_every_parameter(llm: FakeLLM) -> None:
    executor = executor_for(llm)
    call = ReplayCall(
        "anthropic",
        "claude-test",
        [{"role": "system", "content": "From the span."}, {"role": "user", "content": "hello"}],
        system_prompt="be brief",
        temperature=0.2,
        top_p=0.9,
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        extra={"top_k": 5, "stop_sequences": ["\n\n"], "stream": True},
    )
    answer = await executor.execute(call, timeout=10)
    assert answer.output_text == "[claude-test] hello"
    [request] = llm.requests
    assert request.body == {
        "model": "claude-test",
        "max_tokens": 1024,  # default_max_tokens: the call had none
        "system": "be brief\n\nFrom the span.",
        "messages": [{"role": "user", "content": "hello"}],
        "temperature": 0.2,
        "top_p": 0.9,
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "top_k": 5,
        "stop_sequences": ["\n\n"],
    }, "stream is dropped: a replay wants the whole answer"


async def test_answers_join_text_blocks_and_report_reasoning_and_the_stop_reason(llm: FakeLLM) -> None:
    llm.reasoning_tokens = 7
    llm.reply = lambda api, body: "x" * 100
    answer = await executor_for(llm).execute(
        ReplayCall("anthropic", "claude-test", [{"role": "user", "content": "hi"}], max_tokens=10), timeout=10
    )
    assert answer.output_text == "x" * 40
    assert answer.finish_reason == "max_tokens"
    assert answer.output_tokens == 10 + 7 and answer.reasoning_tokens == 7
    assert answer.input_includes_cache is False


async def test_an_overloaded_api_is_retryable_after_what_it_said(llm: FakeLLM) -> None:
    llm.fail_first, llm.fail_status, llm.retry_after = 1, 529, 7
    with pytest.raises(ReplayRetryable) as raised:
        await executor_for(llm).execute(ReplayCall("anthropic", "c", [{"role": "user", "content": "hi"}]), timeout=10)
    assert raised.value.retry_after == 7
    assert "529" in str(raised.value) and "overloaded_error" in str(raised.value)


async def test_a_refusal_names_the_status_type_and_message(llm: FakeLLM) -> None:
    llm.fail_first, llm.fail_status = 1, 400
    llm.error_body = {"type": "error", "error": {"type": "invalid_request_error", "message": f"bad key {KEY}"}}
    with pytest.raises(AnthropicRefused) as raised:
        await executor_for(llm).execute(ReplayCall("anthropic", "c", [{"role": "user", "content": "hi"}]), timeout=10)
    assert raised.value.status == 400 and raised.value.error_type == "invalid_request_error"
    assert str(raised.value) == "anthropic refused the call (400 invalid_request_error: bad key ***)"


def test_retry_after_reads_seconds_milliseconds_and_dates() -> None:
    def response(**headers: str) -> Any:
        return SimpleNamespace(headers=httpx.Headers(headers))

    assert _retry_after(response(**{"retry-after": "3"})) == 3
    assert _retry_after(response(**{"retry-after-ms": "1500", "retry-after": "3"})) == 1.5
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < (_retry_after(response(**{"retry-after": later})) or 0) <= 30
    assert _retry_after(response(**{"retry-after": "soon"})) is None
    assert _retry_after(response()) is None and _retry_after(None) is None


# -- config and registration -------------------------------------------------------------------


def test_config_keeps_the_key_secret_and_refuses_unknown_keys() -> None:
    config = AnthropicExecutorConfig(api_key=KEY)
    assert config.base_url == "https://api.anthropic.com"
    assert config.providers == ["anthropic"] and config.default_max_tokens == 1024
    assert KEY not in repr(config) and KEY not in str(config.model_dump())
    executor = AnthropicExecutor(config)
    assert isinstance(executor, ReplayExecutor) and executor.providers == ("anthropic",)
    assert KEY not in repr(executor)
    with pytest.raises(ValidationError):
        AnthropicExecutorConfig()  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        AnthropicExecutorConfig(api_key=KEY, api_base="https://x")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        AnthropicExecutorConfig(api_key=KEY, default_max_tokens=0)
    assert AnthropicExecutor(AnthropicExecutorConfig(api_key=KEY, providers=["anthropic", "claude-gw"])).providers == (
        "anthropic",
        "claude-gw",
    )


def test_is_discovered_through_its_entry_point_as_its_own_distribution() -> None:
    host = PluginHost.configured(PluginSettings())
    factory = host.factory("replay_executor", "anthropic")
    assert factory.config_model is AnthropicExecutorConfig
    assert factory.stability == "beta"
    [info] = [p for p in host.describe([]) if p.name == "replay_anthropic"]
    assert info.distribution == "lumina-replay-anthropic"
    executor = factory.create(ComponentContext("anthropic", "/tmp"), AnthropicExecutorConfig(api_key=KEY))
    assert isinstance(executor, AnthropicExecutor)
