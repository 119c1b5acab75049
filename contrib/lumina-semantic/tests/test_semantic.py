"""The semantic detector with the real bundled model, its OpenAI-compatible embedder against a local
server, its discovery through the entry point, and a full run through Lumina's intake."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import lumina_semantic
import pytest
import uvicorn
from lumina_semantic import LocalEmbedder, OpenAIEmbedder, SemanticDetector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lumina_core.app import Lumina
from lumina_core.config import load_settings
from lumina_core.plugins import PluginHost
from lumina_core.server import LuminaServer
from lumina_core.testing.contracts import DetectorContract

PARAPHRASES = [
    ("Your order will arrive on Monday.", "The package should be delivered to you on Monday."),
    ("You can get a refund within 30 days of purchase.", "Refunds are available for 30 days after you buy."),
    ("I cannot help with that request.", "Sorry, I am not able to assist with this."),
]
UNRELATED = [
    ("Your order will arrive on Monday.", "Photosynthesis turns sunlight into chemical energy."),
    ("You can get a refund within 30 days of purchase.", "The weather in Oslo is cold in January."),
    ("I cannot help with that request.", "Add two cups of flour and stir the batter."),
]


@pytest.fixture(scope="module")
def local() -> SemanticDetector:
    return SemanticDetector(LocalEmbedder())


def test_paraphrases_score_high_and_unrelated_answers_low(local: SemanticDetector) -> None:
    close = asyncio.run(local.score([(a, [b]) for a, b in PARAPHRASES]))
    far = asyncio.run(local.score([(a, [b]) for a, b in UNRELATED]))
    assert min(close) > 0.5, close  # all-MiniLM-L6-v2 puts paraphrases at 0.5 to 0.9
    assert max(far) < 0.2, far
    same = asyncio.run(local.score([(PARAPHRASES[0][0], [UNRELATED[2][1], PARAPHRASES[0][0]])]))
    assert same == [pytest.approx(1.0, abs=1e-5)]  # the closest baseline counts


def test_baseline_embeddings_are_computed_once(local: SemanticDetector) -> None:
    before = local.embedded
    asyncio.run(local.score([("first answer", ["the baseline answer"])]))
    asyncio.run(local.score([("second answer", ["the baseline answer"])]))
    assert local.embedded - before == 3


async def fake_embeddings(request: Request) -> JSONResponse:
    """An OpenAI-compatible /embeddings: a vector per text from its words' hashes (same words, same vector)."""
    body = await request.json()
    assert request.headers["authorization"] == "Bearer sk-test"
    data = []
    for index, text in enumerate(body["input"]):
        vector = [0.0] * 16
        for word in text.lower().split():
            vector[hashlib.sha256(word.encode()).digest()[0] % 16] += 1.0
        data.append({"object": "embedding", "index": index, "embedding": vector})
    return JSONResponse({"object": "list", "data": list(reversed(data)), "model": body["model"]})


@pytest.fixture
def embeddings_url() -> Iterator[str]:
    app = Starlette(routes=[Route("/v1/embeddings", fake_embeddings, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(10)


def test_an_openai_compatible_endpoint_can_replace_the_local_model(embeddings_url: str) -> None:
    detector = SemanticDetector(OpenAIEmbedder(embeddings_url, "text-embedding-3-small", "sk-test"), batch_size=2)
    same, different = asyncio.run(
        detector.score([("alpha beta gamma", ["gamma beta alpha"]), ("alpha beta", ["delta epsilon zeta eta"])])
    )
    assert same == pytest.approx(1.0)
    assert different < 0.5


def test_discovered_through_its_entry_point() -> None:
    host = PluginHost()
    assert "semantic" in host.factories["detector"]
    (info,) = [i for i in host.describe() if i.types.get("detector") == ["semantic"]]
    assert info.distribution == "lumina-semantic"


def test_paraphrased_answers_pass_and_unrelated_ones_degrade_through_lumina(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        env={},
        overrides={
            "data_dir": str(tmp_path),
            "server.port": 0,
            "server.otlp_http_port": 0,
            "server.otlp_grpc_port": 0,
            "quality.detectors": ["exact_match", "semantic"],
            "quality.services": {"support": {"degraded_below": 0.6}},
        },
    )
    with LuminaServer(Lumina(settings), log_level="warning").in_thread() as server:
        ids = {}
        for label, answer in [
            ("baseline", PARAPHRASES[1][0]),
            ("paraphrase", PARAPHRASES[1][1]),
            ("off", UNRELATED[1][1]),
        ]:
            ids[label] = send(server.otlp_http_url, "support", "What is the refund policy?", answer)
        verdicts = {label: wait_for(server.http_url, *ids[label], "semantic") for label in ("paraphrase", "off")}
        exact = {label: wait_for(server.http_url, *ids[label], "exact_match") for label in ("paraphrase", "off")}
        assert exact["paraphrase"]["verdict"] == exact["off"]["verdict"] == "changed"
        assert verdicts["paraphrase"]["score"] > 0.6 and not verdicts["paraphrase"]["degraded"]
        assert verdicts["off"]["score"] < 0.2 and verdicts["off"]["degraded"]
        status = {label: span(server.http_url, *ids[label])["status"] for label in ("paraphrase", "off")}
        assert status == {"paraphrase": "ok", "off": "degraded"}


def send(url: str, service: str, prompt: str, answer: str) -> tuple[str, str]:
    from tests.support.otlp import raw_request

    trace_id, span_id = os.urandom(16), os.urandom(8)
    attributes = {
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.input.messages": json.dumps([{"role": "user", "content": prompt}]),
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": answer}]),
    }
    body = raw_request([{"trace_id": trace_id, "span_id": span_id, "name": "chat", "attributes": attributes}], service)
    response = httpx.post(url, content=body.SerializeToString(), headers={"content-type": "application/x-protobuf"})
    assert response.status_code == 200, response.text
    return trace_id.hex(), span_id.hex()


def wait_for(base: str, trace_id: str, span_id: str, detector: str) -> dict:
    deadline = time.monotonic() + 120  # the first deferred check loads the model
    while time.monotonic() < deadline:
        found = httpx.get(f"{base}/api/v1/quality/results", params={"span_id": span_id}).json()["data"]
        mine = [r for r in found if r["detector"] == detector and r["trace_id"] == trace_id]
        if mine:
            return mine[0]
        time.sleep(0.1)
    raise AssertionError(f"no {detector} verdict on {trace_id}/{span_id}")


def span(base: str, trace_id: str, span_id: str) -> dict:
    return httpx.get(f"{base}/api/v1/spans/{trace_id}/{span_id}").json()


class TestSemanticDetectorContract(DetectorContract):
    type_name = "semantic"

    @pytest.fixture
    def plugin(self) -> object:
        return lumina_semantic

    @pytest.fixture
    def detector(self, local: SemanticDetector) -> SemanticDetector:
        return local
