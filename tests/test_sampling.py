"""Sampling: a head sampler keeps its share of traces, whole, across batches and worker processes; a
conditional sampler keeps every important trace and a share of the rest; what they drop is counted so
that analytics totals equal those of the same traffic unsampled; a third-party sampler plugs in."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from lumina_core import ComponentConfig, ComponentFactory, hookimpl
from lumina_core.testing import llm_span, otlp_request
from tests.support.db import fetch_all

PROTOBUF = {"content-type": "application/x-protobuf"}
START = "1970-01-01T00:00:00Z"


def post(url: str, spans: list[dict[str, Any]], service: str = "svc") -> None:
    response = httpx.post(url, content=otlp_request(spans, service=service).SerializeToString(), headers=PROTOBUF)
    assert response.status_code == 200, response.text
    assert "partialSuccess" not in response.text


def split_traces(n: int, seed: int = 0) -> tuple[list[list[dict]], list[list[dict]], list[str]]:
    """``n`` traces whose root and LLM child travel in different requests (roots first, children later)."""
    roots, children, ids = [], [], []
    for i in range(n):
        trace_id, root_id = os.urandom(16), os.urandom(8)
        ids.append(trace_id.hex())
        roots.append({"trace_id": trace_id, "span_id": root_id, "name": "agent", "start": time.time_ns()})
        call = llm_span(input_tokens=100 + i % 50, output_tokens=10 + i % 7)
        children.append({**call, "trace_id": trace_id, "span_id": os.urandom(8), "parent_span_id": root_id})
    per = 500
    return (
        [roots[i : i + per] for i in range(0, n, per)],
        [children[i : i + per] for i in range(0, n, per)],
        ids,
    )


@pytest.mark.postgres
def test_head_sampling_keeps_its_share_of_whole_traces_across_two_worker_processes(
    write_config: Callable[..., Path], pg_url: str, shared_nats_url: str
) -> None:
    from lumina_core.testing.processes import lumina_processes

    sampling = '[sampling]\nsamplers = ["head"]\n[samplers.head]\nratio = 0.1\n'
    config = write_config(pg_url, shared_nats_url, extra=sampling)
    roots, children, ids = split_traces(20_000)
    with lumina_processes(config, ("intake",), ("worker",), ("worker",)) as (intake, *workers):
        for batches in (roots, children):  # every root stored before any child is sent
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda batch: post(intake.otlp_http_url, batch), batches))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            [(stored,)] = fetch_all(pg_url, "SELECT count(*) FROM spans")
            [(dropped,)] = fetch_all(pg_url, "SELECT coalesce(sum(requests), 0) FROM sampled_out")
            if stored + dropped >= 40_000:
                break
            time.sleep(0.5)
        ready = [httpx.get(f"{w.http_url}/-/ready").json()["checks"]["worker"]["spans_stored"] for w in workers]
    assert stored + dropped == 40_000
    assert all(ready), f"both workers stored spans: {ready}"
    per_trace = dict(fetch_all(pg_url, "SELECT trace_id, count(*) FROM spans GROUP BY trace_id"))
    assert 1_800 <= len(per_trace) <= 2_200, f"10% ± 1% of 20,000: kept {len(per_trace)}"
    assert set(per_trace.values()) == {2}, "every kept trace whole; no dropped trace in part"
    assert set(per_trace) <= set(ids)
    [(traces, llm_dropped)] = fetch_all(
        pg_url, "SELECT sum(traces), sum(CASE WHEN is_llm THEN requests ELSE 0 END) FROM sampled_out"
    )
    assert traces == 20_000 - len(per_trace) and llm_dropped == 20_000 - len(per_trace)


def send_mixed(url: str) -> None:
    """1,000 routine traces, 50 with an error, 50 expensive ones (a root and an LLM call each)."""
    for kind, count in (("routine", 1000), ("error", 50), ("expensive", 50)):
        spans = []
        for _ in range(count):
            trace_id, root_id = os.urandom(16), os.urandom(8)
            root = {"trace_id": trace_id, "span_id": root_id, "name": kind, "start": time.time_ns()}
            if kind == "error":
                root["status_code"] = 2
            tokens = 2_000_000 if kind == "expensive" else 100
            call = {**llm_span(input_tokens=tokens), "trace_id": trace_id, "span_id": os.urandom(8)}
            spans += [root, {**call, "parent_span_id": root_id}]
        post(url, spans)


def totals(http_url: str) -> dict[str, Any]:
    params = {"start": START, "latency": "false", "llm": "false"}
    [row] = httpx.get(f"{http_url}/api/v1/analytics", params=params).json()["data"]
    return {k: row[k] for k in ("requests", "errors", "cost_usd", "input_tokens", "output_tokens")}


def wait_until_judged(database: Path, timeout: float = 30) -> None:
    url = f"sqlite+aiosqlite:///{database}"
    deadline = time.monotonic() + timeout
    while fetch_all(url, "SELECT count(*) FROM undecided_traces")[0][0] and time.monotonic() < deadline:
        time.sleep(0.2)


def test_conditional_sampling_keeps_important_traces_and_totals_stay_exact(
    lumina_server: Callable[..., Any], tmp_path: Path
) -> None:
    sampled = lumina_server(
        settings={
            "sampling.samplers": ["conditional"],
            "sampling.decision_wait_seconds": 0.3,
            "samplers.conditional": {"ratio": 0.1, "min_cost_usd": 1.0},
        }
    )
    unsampled = lumina_server()
    for server in (sampled, unsampled):
        send_mixed(server.otlp_http_url)
    wait_until_judged(tmp_path / "lumina-0" / "lumina.db")
    url = f"sqlite+aiosqlite:///{tmp_path / 'lumina-0' / 'lumina.db'}"
    kept = dict(fetch_all(url, "SELECT name, count(*) FROM traces GROUP BY name"))
    assert kept["error"] == 50 and kept["expensive"] == 50, "every important trace is kept"
    assert 50 <= kept.get("routine", 0) <= 150, f"about 10% of 1,000 routine traces: {kept.get('routine')}"
    assert totals(sampled.http_url) == totals(unsampled.http_url), "dropped traces are counted"
    data = httpx.get(f"{sampled.http_url}/api/v1/data").json()["sampling"]
    assert data["samplers"] == ["conditional"] and data["dropped_last_24h"]["traces"] == 1000 - kept["routine"]


def test_head_sampling_totals_equal_the_unsampled_run(lumina_server: Callable[..., Any]) -> None:
    sampled = lumina_server(settings={"sampling.samplers": ["head"], "samplers.head": {"ratio": 0.1}})
    unsampled = lumina_server()
    for server in (sampled, unsampled):
        send_mixed(server.otlp_http_url)
    assert totals(sampled.http_url) == totals(unsampled.http_url)
    stored = httpx.get(f"{sampled.http_url}/api/v1/traces", params={"start": START, "limit": 500}).json()["data"]
    assert 40 <= len(stored) <= 200


class VipConfig(ComponentConfig):
    users: list[str]


class VipSampler:
    """A third-party tail sampler: keeps the traces of some users only."""

    stage = "tail"

    def __init__(self, config: VipConfig) -> None:
        self.users = set(config.users)

    def keep(self, trace_id: str, spans: list[dict[str, Any]]) -> bool:
        return any(span["user_id"] in self.users for span in spans)


class VipPlugin:
    @hookimpl
    def lumina_register_samplers(self) -> list[ComponentFactory]:
        return [ComponentFactory("vip", lambda ctx, config: VipSampler(config), VipConfig, "Keeps VIP users.")]


def test_a_sampler_plugin_judges_whole_traces(lumina_server: Callable[..., Any], tmp_path: Path) -> None:
    server = lumina_server(
        plugins=[VipPlugin()],
        settings={
            "sampling.samplers": ["vip"],
            "sampling.decision_wait_seconds": 0.2,
            "samplers.vip": {"users": ["ada"]},
        },
    )
    for user in ("ada", "bob", "cy"):
        post(server.otlp_http_url, [{**llm_span(**{"user.id": user}), "trace_id": os.urandom(16)}])
    wait_until_judged(tmp_path / "lumina-0" / "lumina.db")
    users = fetch_all(f"sqlite+aiosqlite:///{tmp_path / 'lumina-0' / 'lumina.db'}", "SELECT user_id FROM spans")
    assert users == [("ada",)]


def test_a_dropped_batch_delivered_twice_is_counted_once(database_url: str) -> None:
    """Queues deliver at least once: the sums of what a head sampler dropped are keyed by the dropped
    spans, so a redelivered batch (or an exporter's retry of the same spans) adds nothing."""
    import asyncio

    from lumina_core.components import build_components
    from lumina_core.config import load_settings
    from lumina_core.extraction import ExtractStage
    from lumina_core.intake.decode import spans_from_request
    from lumina_core.plugin_api import SpanBatch
    from lumina_core.plugins import PluginHost
    from lumina_core.sampling import HeadSampling
    from lumina_core.storage.database import create_engine, migrate
    from lumina_core.storage.writer import SpanWriter
    from lumina_plugins.samplers import HeadSampler, HeadSamplerConfig

    stage = ExtractStage(build_components(load_settings(None, env={}), PluginHost(entry_points=False)).extractors)
    spans = [llm_span(input_tokens=10) for _ in range(20)]  # 20 single-span traces
    rows = stage.rows(SpanBatch("default", spans_from_request(otlp_request(spans)).spans))
    kept, dropped = HeadSampling([("head", HeadSampler(HeadSamplerConfig(ratio=0)))]).apply("default", rows)
    assert kept == [] and len(dropped) == 1

    async def deliver_twice() -> None:
        engine = create_engine(database_url)
        try:
            await migrate(engine)
            writer = SpanWriter(engine)
            for _ in range(2):
                await writer.write(writer.prepare([], dropped))
        finally:
            await engine.dispose()

    asyncio.run(deliver_twice())
    assert fetch_all(database_url, "SELECT SUM(requests), SUM(traces), SUM(input_tokens) FROM sampled_out") == [
        (20, 20, 200)
    ]
