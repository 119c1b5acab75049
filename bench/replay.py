"""Replay benchmark: a set of captured LLM calls replayed against a fake OpenAI-compatible provider on
127.0.0.1 (answering after ``--latency`` seconds) through a real Lumina process and the official SDK.

Prints the run's duration, calls per second, the peak concurrency the provider saw, and Lumina's overhead
per call: the replayed latency Lumina recorded minus the provider's, and the wall time per call beyond the
ideal ``items * latency / concurrency``.

    .venv/bin/python bench/replay.py --items 500 --concurrency 20 --latency 0.2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import lumina_server

from lumina_core.testing import llm_span, otlp_request
from lumina_core.testing.fake_llm import FakeLLM


def capture(url: str, items: int) -> None:
    for start in range(0, items, 250):
        spans = []
        for i in range(start, min(start + 250, items)):
            messages = [{"role": "user", "content": f"question {i}: summarise the ticket"}]
            attributes = {
                "gen_ai.input.messages": json.dumps(messages),
                "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": f"answer {i}"}]),
            }
            spans.append({**llm_span(model="gpt-4o", **attributes), "trace_id": os.urandom(16)})
        body = otlp_request(spans, service="support").SerializeToString()
        response = httpx.post(url, content=body, headers={"content-type": "application/x-protobuf"}, timeout=60)
        response.raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the fake provider takes per call")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="lumina-bench-replay-"))
    with FakeLLM(latency=args.latency) as llm:
        executors = f'[replay_executors.openai]\napi_key = "sk-bench"\nbase_url = "{llm.openai_base_url}"\n'
        with lumina_server(workdir, f"sqlite+aiosqlite:///{workdir / 'lumina.db'}", more_config=executors) as server:
            capture(server.otlp_http_url, args.items)
            api = httpx.Client(base_url=server.http_url, timeout=60)
            selection = {"service": "support", "limit": args.items}
            replay_set = api.post("/api/v1/replay/sets", json={"name": "bench", "selection": selection}).json()
            assert replay_set["item_count"] == args.items, replay_set
            began = time.perf_counter()
            body = {"set_id": replay_set["id"], "overrides": {"model": "gpt-4o-mini"}}
            run = api.post("/api/v1/replay/runs", json={**body, "limits": {"concurrency": args.concurrency}}).json()
            while (detail := api.get(f"/api/v1/replay/runs/{run['id']}").json())["run"]["state"] in (
                "queued",
                "running",
            ):
                time.sleep(0.05)
            duration = time.perf_counter() - began
    replays = [item["replay"] for item in detail["items"] if item["replay"]]
    latencies = [r["latency_ms"] for r in replays if r["latency_ms"] is not None]
    ideal = args.items * args.latency / args.concurrency
    figures = {
        "items": args.items,
        "concurrency": args.concurrency,
        "provider_latency_s": args.latency,
        "state": detail["run"]["state"],
        "ok": sum(r["status"] == "ok" for r in replays),
        "duration_s": round(duration, 2),
        "calls_per_s": round(args.items / duration, 1),
        "provider_peak_concurrency": llm.peak_concurrency,
        "ideal_duration_s": round(ideal, 2),
        "overhead_per_call_ms": round((duration - ideal) / args.items * 1000, 2),
        "recorded_latency_ms_median": round(statistics.median(latencies), 1),
        "sdk_and_lumina_ms_per_call_median": round(statistics.median(latencies) - args.latency * 1000, 1),
        "summary": detail["summary"],
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
