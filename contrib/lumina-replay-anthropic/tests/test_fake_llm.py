"""The fake LLM server itself, driven by the official ``openai`` SDK (its Anthropic side is driven by the
``anthropic`` SDK in test_anthropic_executor.py) and by plain HTTP: answer shapes, recording, failures,
latency, concurrency, stopping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from lumina_core.testing.fake_llm import FakeLLM, default_reply, last_user_text, tokens

KEY = "sk-test-fake-llm-0001"


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    with FakeLLM() as fake:
        yield fake


def client(llm: FakeLLM, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEY, base_url=llm.openai_base_url, max_retries=0, **options)


def chat(llm: FakeLLM, text: str = "hello", **params: Any) -> Any:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]
    return client(llm).chat.completions.create(model="gpt-4o-mini", messages=messages, **params)  # type: ignore[arg-type]


def test_answers_a_chat_completion_as_openai_does(llm: FakeLLM) -> None:
    completion = chat(llm, max_tokens=50, temperature=0.2)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o-mini"
    [choice] = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == "[gpt-4o-mini] hello"
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    # "be brief" (2) + "hello" (2) + 4 per message (2) = 12; "[gpt-4o-mini] hello" is 19 characters = 5
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (12, 5, 17)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None and usage.completion_tokens_details.reasoning_tokens == 0


def test_records_every_request(llm: FakeLLM) -> None:
    before = time.monotonic()
    chat(llm, max_tokens=50, temperature=0.2)
    [request] = llm.requests
    assert request.api == "openai"
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
        "max_tokens": 50,
        "temperature": 0.2,
    }
    assert before <= request.at <= time.monotonic()
    assert request.status == 200
    assert request.response is not None and request.response["choices"][0]["message"]["content"].endswith("hello")
    llm.clear()
    assert llm.requests == []


def test_the_reply_and_token_counts_are_deterministic_and_configurable(llm: FakeLLM) -> None:
    assert chat(llm).choices[0].message.content == chat(llm).choices[0].message.content
    llm.reply = lambda api, body: f"{api}: {len(body['messages'])} messages"
    assert chat(llm).choices[0].message.content == "openai: 2 messages"
    assert tokens("") == 0 and tokens("abcd") == 1 and tokens("abcde") == 2
    parts = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert last_user_text(parts) == "hi" and default_reply("openai", parts) == "[m] hi"


def test_cache_and_reasoning_tokens_are_reported_as_openai_does(llm: FakeLLM) -> None:
    llm.cache_read_tokens, llm.reasoning_tokens = 8, 3
    usage = chat(llm).usage
    assert usage is not None and usage.prompt_tokens_details and usage.completion_tokens_details
    assert usage.prompt_tokens == 12 and usage.prompt_tokens_details.cached_tokens == 8  # included in prompt_tokens
    assert usage.completion_tokens == 5 + 3 and usage.completion_tokens_details.reasoning_tokens == 3


def test_max_tokens_and_stop_cut_the_answer(llm: FakeLLM) -> None:
    cut = chat(llm, "a long question that goes on", max_tokens=2)
    assert cut.choices[0].message.content == "[gpt-4o-"
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage is not None and cut.usage.completion_tokens == 2
    stopped = chat(llm, "one. two", stop=["."])
    assert stopped.choices[0].message.content == "[gpt-4o-mini] one"
    assert stopped.choices[0].finish_reason == "stop"


def test_fail_first_answers_429_with_retry_after_and_openais_error_body(llm: FakeLLM) -> None:
    llm.fail_first = 2
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as raised:
            chat(llm)
        assert raised.value.status_code == 429
        assert raised.value.response.headers["retry-after"] == "2"
        assert raised.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
        assert raised.value.body["type"] == "requests"  # type: ignore[index]
        assert "Please try again in 2s" in raised.value.message
    assert llm.fail_first == 0, "it counts down"
    assert chat(llm).choices[0].message.content
    assert [r.status for r in llm.requests] == [429, 429, 200]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
        (529, openai.InternalServerError),
        (400, openai.BadRequestError),
        (404, openai.NotFoundError),
    ],
)
def test_other_failure_statuses(llm: FakeLLM, status: int, error: type[Exception]) -> None:
    llm.fail_first, llm.fail_status, llm.retry_after = 1, status, 0.5
    with pytest.raises(error) as raised:
        chat(llm)
    assert raised.value.status_code == status  # type: ignore[attr-defined]
    headers = raised.value.response.headers  # type: ignore[attr-defined]
    assert headers.get("retry-after") == ("0.5" if status >= 500 else None)


def test_fail_every_and_a_custom_error_body(llm: FakeLLM) -> None:
    llm.fail_every, llm.fail_status, llm.retry_after = 3, 500, None
    llm.error_body = {"error": {"message": "custom", "type": "server_error", "param": None, "code": "x"}}
    statuses = []
    for _ in range(6):
        try:
            chat(llm)
            statuses.append(200)
        except openai.InternalServerError as exc:
            assert "retry-after" not in exc.response.headers
            assert exc.body == {"message": "custom", "type": "server_error", "param": None, "code": "x"}
            statuses.append(exc.status_code)
    assert statuses == [200, 200, 500, 200, 200, 500]


def test_refuses_requests_without_a_key_or_with_a_wrong_one() -> None:
    with FakeLLM(api_key=KEY) as llm:
        response = httpx.post(f"{llm.openai_base_url}/chat/completions", json={"model": "m", "messages": []})
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert "Authorization" in response.json()["error"]["message"]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(api_key="sk-wrong", base_url=llm.openai_base_url, max_retries=0).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
        assert chat(llm).choices[0].message.content == "[gpt-4o-mini] hello"
        assert [r.status for r in llm.requests] == [401, 401, 200]


def test_refuses_malformed_requests_streaming_and_unknown_routes(llm: FakeLLM) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    url = f"{llm.openai_base_url}/chat/completions"
    assert httpx.post(url, content=b"{not json", headers=headers).status_code == 400
    missing = httpx.post(url, json={"messages": []}, headers=headers)
    assert missing.status_code == 400 and "model" in missing.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError):
        client(llm).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    unknown = httpx.post(f"{llm.url}/v1/embeddings", json={}, headers=headers)
    assert unknown.status_code == 404 and "embeddings" in unknown.json()["error"]["message"]
    assert [r.api for r in llm.requests] == ["openai", "openai", "openai", "unknown"]


def test_latency_and_a_client_timeout(llm: FakeLLM) -> None:
    llm.latency = 0.3
    started = time.monotonic()
    chat(llm)
    assert 0.3 <= time.monotonic() - started < 2
    llm.latency = 5
    with pytest.raises(openai.APITimeoutError):
        client(llm, timeout=0.3).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    started = time.monotonic()
    llm.stop()
    assert time.monotonic() - started < 2, "stopping does not wait for a sleeping request"


async def test_serves_twenty_requests_at_once(llm: FakeLLM) -> None:
    llm.latency = 1.0
    async with openai.AsyncOpenAI(api_key=KEY, base_url=llm.openai_base_url, max_retries=0) as aclient:
        started = time.monotonic()
        completions = await asyncio.gather(
            *(
                aclient.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i}"}])
                for i in range(20)
            )
        )
        elapsed = time.monotonic() - started
    assert [c.choices[0].message.content for c in completions] == [f"[m] q{i}" for i in range(20)]
    assert elapsed < 5, f"20 requests of 1 s took {elapsed:.1f} s"
    assert llm.peak_concurrency == 20
    assert len(llm.wait_for(20)) == 20


def test_a_stopped_server_no_longer_answers_even_on_a_kept_alive_connection(llm: FakeLLM) -> None:
    sdk = client(llm, timeout=5)
    sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])  # opens a connection
    llm.stop()
    with pytest.raises(openai.APIConnectionError):
        sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert len(llm.requests) == 1
