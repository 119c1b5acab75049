"""Spans from real instrumentation packages around the official openai SDK come out right."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lumina_core.server import Endpoints
from tests.support.fake_openai import RESPONSE_ID, RESPONSE_MODEL, start_fake_openai

ROOT = Path(__file__).resolve().parent.parent

# Buckets are disjoint: the fake server reports 120 prompt tokens of which 80 cached, and 50
# completion tokens of which 20 reasoning. A library that does not report a bucket leaves it unknown.
CASES = {
    # The OTel openai-v2 instrumentation reports no cached or reasoning tokens on chat.
    "openai-v2": dict(input_tokens=120, cache_read_tokens=None, output_tokens=50, reasoning_tokens=None),
    "openinference": dict(input_tokens=40, cache_read_tokens=80, output_tokens=30, reasoning_tokens=20),
    "openllmetry": dict(input_tokens=40, cache_read_tokens=80, output_tokens=30, reasoning_tokens=20),
}


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[str]:
    base_url, stop = start_fake_openai()
    yield base_url
    stop()


def run_instrumented(library: str, endpoints: Endpoints, base_url: str, service: str) -> None:
    env = {
        **os.environ,
        "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "span_only",
        "TRACELOOP_TRACE_CONTENT": "true",
    }
    subprocess.run(
        [sys.executable, "-m", "tests.support.instrumented_app", library, endpoints.otlp_http_url, base_url, service],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
    )


@pytest.mark.parametrize("library", sorted(CASES))
def test_instrumentation_spans_give_model_provider_and_every_token_bucket(
    library: str, sqlite_server: Endpoints, fake_openai: str
) -> None:
    service = f"app-{library}"
    run_instrumented(library, sqlite_server, fake_openai, service)
    with httpx.Client(base_url=sqlite_server.http_url) as client:
        traces = client.get("/api/v1/traces", params={"service": service}).json()["data"]
        spans = [s for t in traces for s in client.get(f"/api/v1/traces/{t['trace_id']}").json()["spans"]]
    llm_spans = [s for s in spans if s["is_llm"]]
    ok = [s for s in llm_spans if s["status"] == "ok"]
    failed = [s for s in llm_spans if s["status"] == "error"]
    assert len(ok) == 1, llm_spans
    assert len(failed) == 1, llm_spans
    span = ok[0]
    assert span["provider"] == "openai"
    assert span["model"] == RESPONSE_MODEL
    assert span["request_model"] == "gpt-4o"
    assert span["response_id"] == RESPONSE_ID
    assert span["finish_reasons"] == ["stop"]
    for bucket, expected in CASES[library].items():
        assert span[bucket] == expected, (bucket, span)
    assert span["cache_write_tokens"] is None
    assert span["input_messages"][-1]["content"] == "Say hello"
    assert span["system_prompt"] == "You are a helpful assistant."
    assert span["output_messages"][0]["content"] == "Hello there"
    assert span["latency_ms"] > 0
    assert failed[0]["error_type"] in ("RateLimitError", "429")
