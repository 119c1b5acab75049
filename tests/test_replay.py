"""Replay testing end to end: captured LLM calls (nested under agent spans) frozen as a set and replayed
through the official ``openai`` and ``anthropic`` SDKs against a fake provider on 127.0.0.1 — with a model
switch from OpenAI to Anthropic, pricing, comparison, rate limits held (measured at the fake server), 429s
retried, cancellation, and a run killed midway that resumes without sending finished calls again. API keys
never reach stored data or API responses."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lumina_core import ComponentConfig, ComponentFactory, ReplayAnswer, ReplayCall, hookimpl
from lumina_core.testing import llm_span, otlp_request
from lumina_core.testing.fake_llm import FakeLLM
from tests.support.db import fetch_all

SECRET = "sk-test-9f8e7d6c5b4a-secret"
PROTOBUF = {"content-type": "application/x-protobuf"}


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    with FakeLLM(retry_after=0.2) as fake:
        yield fake


def executors(llm: FakeLLM) -> dict[str, Any]:
    return {
        "replay_executors": {
            "openai": {"api_key": SECRET, "base_url": llm.openai_base_url},
            "anthropic": {"api_key": SECRET + "-anthropic", "base_url": llm.anthropic_base_url},
        }
    }


@pytest.fixture
def server(lumina_server: Callable[..., Any], llm: FakeLLM) -> Any:
    return lumina_server(settings=executors(llm), entry_points=True)


@pytest.fixture
def db(server: Any, tmp_path: Path) -> str:
    """The server's database (the kit puts it under the test's folder)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'lumina-0' / 'lumina.db'}"


def capture(server: Any, n: int, service: str = "support") -> None:
    """``n`` agent traces, each with a nested LLM call that asked "question i" and got "answer i"."""
    spans = []
    for i in range(n):
        trace_id, agent_id = os.urandom(16), os.urandom(8)
        spans.append({"trace_id": trace_id, "span_id": agent_id, "name": "agent"})
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"question {i}"}]
        call = llm_span(
            model="gpt-4o",
            input_tokens=40,
            output_tokens=10,
            **{
                "gen_ai.input.messages": json.dumps(messages),
                "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": f"answer {i}"}]),
                "gen_ai.request.temperature": 0.3,
            },
        )
        spans.append({**call, "trace_id": trace_id, "span_id": os.urandom(8), "parent_span_id": agent_id})
    body = otlp_request(spans, service=service).SerializeToString()
    assert httpx.post(server.otlp_http_url, content=body, headers=PROTOBUF).status_code == 200


def make_set(api: httpx.Client, limit: int = 200) -> dict[str, Any]:
    response = api.post(
        "/api/v1/replay/sets", json={"name": "support", "selection": {"service": "support", "limit": limit}}
    )
    assert response.status_code == 201, response.text
    return response.json()


def start(api: httpx.Client, set_id: int, **body: Any) -> dict[str, Any]:
    response = api.post("/api/v1/replay/runs", json={"set_id": set_id, **body})
    assert response.status_code == 201, response.text
    return response.json()


def wait_run(api: httpx.Client, run_id: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        detail = api.get(f"/api/v1/replay/runs/{run_id}").json()
        if detail["run"]["state"] in ("done", "cancelled", "failed") or time.monotonic() > deadline:
            return detail
        time.sleep(0.1)


def test_a_model_switch_from_openai_to_anthropic_is_replayed_priced_and_compared(
    server: Any, llm: FakeLLM, db: str
) -> None:
    capture(server, 6)
    with httpx.Client(base_url=server.http_url, timeout=30) as api:
        replay_set = make_set(api)
        assert replay_set["item_count"] == 6, "nested LLM calls are replayable, agent spans are not LLM calls"
        same = wait_run(api, start(api, replay_set["id"], overrides={"model": "gpt-4o-mini"})["id"])
        switched = wait_run(
            api,
            start(api, replay_set["id"], overrides={"provider": "anthropic", "model": "claude-3-5-haiku-latest"})["id"],
        )
        compared = api.get("/api/v1/replay/compare", params={"a": same["run"]["id"], "b": switched["run"]["id"]})
        text = json.dumps([same, switched, compared.json(), api.get("/api/v1/replay/runs").json()])

    for detail, model, api_name in (
        (same, "gpt-4o-mini", "openai"),
        (switched, "claude-3-5-haiku-latest", "anthropic"),
    ):
        assert detail["run"]["state"] == "done"
        for item in detail["items"]:
            replay = item["replay"]
            question = item["original"]["input_messages"][-1]["content"]
            assert replay["status"] == "ok" and replay["output_text"] == f"[{model}] {question}"
            assert replay["cost_usd"] and replay["cost_usd"] > 0, "priced by the pricing chain"
            assert replay["identical"] is False and item["diff"].startswith("--- original")
        summary = detail["summary"]
        assert summary["finished"] == 6 and summary["errors"] == 0 and summary["identical_share"] == 0
        assert summary["cost_change_pct"] is not None and summary["latency_p95_ms"] is not None
        sent = [r for r in llm.requests if r.api == api_name]
        assert {r.body["model"] for r in sent} == {model}
    anthropic_body = next(r.body for r in llm.requests if r.api == "anthropic")
    assert anthropic_body["system"] == "Be brief." and anthropic_body["temperature"] == 0.3
    assert compared.status_code == 200 and len(compared.json()["items"]) == 6
    assert SECRET not in text, "API keys never appear in API responses"
    stored = fetch_all(db, "SELECT * FROM replay_runs") + fetch_all(db, "SELECT * FROM replay_results")
    assert SECRET not in repr(stored), "… nor in stored data"


def test_the_rate_limit_holds_and_429s_are_retried(server: Any, llm: FakeLLM) -> None:
    capture(server, 12)
    llm.fail_first = 3  # 429 with Retry-After 0.2 s
    with httpx.Client(base_url=server.http_url, timeout=30) as api:
        replay_set = make_set(api)
        limits = {"concurrency": 6, "requests_per_minute": 600}  # one request every 0.1 s
        detail = wait_run(api, start(api, replay_set["id"], limits=limits)["id"])
    assert detail["run"]["state"] == "done" and detail["summary"]["errors"] == 0
    assert sum(item["replay"]["attempts"] for item in detail["items"]) == 12 + 3
    arrivals = sorted(r.at for r in llm.requests)
    assert len(arrivals) == 15
    # Every request, retries too, is paced 0.1 s apart (give or take the network's jitter of one request).
    too_fast = [(i, j) for i in range(15) for j in range(i + 1, 15) if arrivals[j] - arrivals[i] < (j - i) * 0.1 - 0.06]
    assert too_fast == [], [round(b - a, 3) for a, b in itertools.pairwise(arrivals)]
    assert arrivals[-1] - arrivals[0] >= 1.0
    assert detail["summary"]["calls_per_second"] <= 10.5, "the load-test rate is what was asked"


def test_cancelling_stops_spending(server: Any, llm: FakeLLM) -> None:
    capture(server, 30)
    llm.latency = 0.2
    with httpx.Client(base_url=server.http_url, timeout=30) as api:
        replay_set = make_set(api)
        run = start(api, replay_set["id"], limits={"concurrency": 1})
        llm.wait_for(3)
        assert api.post(f"/api/v1/replay/runs/{run['id']}/cancel").json()["state"] == "cancelled"
        time.sleep(1.5)
        sent = len(llm.requests)
        time.sleep(1)
        assert len(llm.requests) == sent < 30, "no new call after the cancellation"
        detail = api.get(f"/api/v1/replay/runs/{run['id']}").json()
        assert detail["run"]["state"] == "cancelled" and detail["summary"]["finished"] < 30
        assert api.post(f"/api/v1/replay/runs/{run['id']}/cancel").status_code == 409


def test_a_run_killed_midway_resumes_without_sending_finished_calls_again(
    server: Any, llm: FakeLLM, db: str, tmp_path: Path
) -> None:
    capture(server, 20)
    llm.latency = 0.15
    config = tmp_path / "replay.toml"
    config.write_text(
        f'data_dir = "{tmp_path}"\n[storage]\nurl = "{db}"\n[plugins]\nentry_points = false\n'
        f'[replay_executors.openai]\napi_key = "{SECRET}"\nbase_url = "{llm.openai_base_url}"\n'
    )
    with httpx.Client(base_url=server.http_url, timeout=30) as api:
        set_id = make_set(api)["id"]
    command = [sys.executable, "-m", "lumina_core.cli", "replay"]
    env = {**os.environ, "LUMINA_CONFIG": str(config)}
    first = subprocess.Popen([*command, "run", str(set_id), "--concurrency", "2"], env=env, stdout=subprocess.PIPE)
    llm.wait_for(8, timeout=30)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    [(run_id, state)] = fetch_all(db, "SELECT id, state FROM replay_runs")
    assert state == "running"
    finished_before = {
        position for (position,) in fetch_all(db, f"SELECT position FROM replay_results WHERE run_id = {run_id}")
    }
    assert 0 < len(finished_before) < 20
    sent_before = len(llm.requests)

    resumed = subprocess.run([*command, "resume", str(run_id)], env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout[resumed.stdout.index("{") :])["finished"] == 20
    asked_again = {r.body["messages"][-1]["content"] for r in llm.requests[sent_before:]}
    question_of = {
        position: (json.loads(messages) if isinstance(messages, str) else messages)[-1]["content"]
        for position, messages in fetch_all(
            db, f"SELECT position, input_messages FROM replay_items WHERE set_id = {set_id}"
        )
    }
    assert not asked_again & {question_of[p] for p in finished_before}, (
        "calls answered before the kill are not sent again"
    )
    assert {question_of[p] for p in set(question_of) - finished_before} <= asked_again


class EchoExecutor:
    """A third-party executor for a provider of its own: answers with the prompt, reversed."""

    providers = ("local-echo",)

    async def execute(self, call: ReplayCall, timeout: float) -> ReplayAnswer:
        text = call.messages[-1]["content"][::-1]
        return ReplayAnswer(output_text=text, model=call.model, input_tokens=3, output_tokens=len(text))


class EchoPlugin:
    @hookimpl
    def lumina_register_replay_executors(self) -> list[ComponentFactory]:
        return [ComponentFactory("echo", lambda ctx, config: EchoExecutor(), ComponentConfig, "Echoes, reversed.")]


def test_an_executor_plugin_serves_its_own_provider_with_a_prompt_rewrite(lumina_server: Callable[..., Any]) -> None:
    server = lumina_server(plugins=[EchoPlugin()], settings={"replay_executors": {"echo": {}}})
    capture(server, 2)
    with httpx.Client(base_url=server.http_url, timeout=30) as api:
        replay_set = make_set(api)
        overrides = {"provider": "local-echo", "model": "m", "find": "question", "replace": "query"}
        detail = wait_run(api, start(api, replay_set["id"], overrides=overrides)["id"])
        templated = {"provider": "local-echo", "model": "m", "template": "{{ role }}: {{ content | upper }}"}
        shouted = wait_run(api, start(api, replay_set["id"], overrides=templated)["id"])
        unknown = wait_run(api, start(api, replay_set["id"], overrides={"provider": "nowhere"})["id"])
    outputs = sorted(item["replay"]["output_text"] for item in detail["items"])
    assert outputs == ["0 yreuq", "1 yreuq"], "find/replace rewrote the prompts"
    assert sorted(item["replay"]["output_text"] for item in shouted["items"]) == [
        "0 NOITSEUQ :resu",
        "1 NOITSEUQ :resu",
    ]
    assert detail["items"][0]["replay"]["cost_usd"] is None, "a model no price list knows stays unpriced"
    errors = [item["replay"]["error"] for item in unknown["items"]]
    assert all("no replay executor serves provider 'nowhere'" in e for e in errors)
    assert unknown["summary"]["errors"] == 2
