"""Quality benchmark: the semantic detector (lumina-semantic) behind a steady stream of LLM calls.

Sends ``--rate`` LLM spans per second for ``--seconds`` over OTLP/HTTP: ``--prompts`` distinct prompts,
each answered with a different sentence every time, so after its first answer (the baseline) every call
is compared by both exact match and the semantic detector. Every second it prints how many calls were
sent and how many the semantic detector has scored; at the end, the detector's steady rate (answers
embedded per second), the backlog it left and the time it needed to drain it.

    .venv/bin/python bench/quality.py --rate 200 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import count_rows, lumina_server
from workload import WORDS

from tests.support.otlp import raw_request


def answer(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randrange(12, 40))).capitalize() + "."


def body(rng: random.Random, prompts: int, n: int) -> bytes:
    spans = []
    for _ in range(n):
        prompt = f"Question {rng.randrange(prompts)}: {' '.join(WORDS[:8])}?"
        attributes = {
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 40,
            "gen_ai.usage.output_tokens": 30,
            "gen_ai.input.messages": json.dumps([{"role": "user", "content": prompt}]),
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": answer(rng)}]),
        }
        spans.append({"trace_id": os.urandom(16), "name": "chat", "attributes": attributes, "start": time.time_ns()})
    return raw_request(spans, service="assistant").SerializeToString()


async def scored(database_url: str) -> int:
    return await count_rows(database_url, "quality_results", "detector = 'semantic' AND score IS NOT NULL")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=200, help="LLM spans per second")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--prompts", type=int, default=50)
    args = parser.parse_args()
    rng = random.Random(5)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        database_url = f"sqlite+aiosqlite:///{workdir / 'lumina.db'}"
        quality = '[quality]\ndetectors = ["exact_match", "semantic"]\n'
        with lumina_server(workdir, database_url, more_config=quality) as server, httpx.Client() as client:
            # the first check loads the model (several seconds): warm it up before timing
            warm = body(rng, 1, 2)
            client.post(server.otlp_http_url, content=warm, headers={"content-type": "application/x-protobuf"})
            while asyncio.run(scored(database_url)) < 1:
                time.sleep(0.2)
            base = asyncio.run(scored(database_url))
            per_tick = max(1, args.rate // 10)  # ten requests a second
            sent, began, readings = 0, time.monotonic(), []
            next_report = began + 1
            while (now := time.monotonic()) - began < args.seconds:
                response = client.post(
                    server.otlp_http_url,
                    content=body(rng, args.prompts, per_tick),
                    headers={"content-type": "application/x-protobuf"},
                )
                response.raise_for_status()
                sent += per_tick
                if now >= next_report:
                    done = asyncio.run(scored(database_url)) - base
                    readings.append((now - began, sent, done))
                    print(f"{now - began:5.0f} s  sent {sent:6}  semantic scored {done:6}  backlog {sent - done:6}")
                    next_report += 1
                time.sleep(max(0.0, began + (sent / args.rate) - time.monotonic()))
            stopped = time.monotonic()
            comparable = sent - args.prompts  # each prompt's first answer becomes its baseline
            while (done := asyncio.run(scored(database_url)) - base) < comparable and time.monotonic() - stopped < 600:
                time.sleep(0.5)
            drained = time.monotonic() - stopped
        half = len(readings) // 2
        (t0, _, d0), (t1, _, d1) = readings[half], readings[-1]
        print(f"\nsent {sent} LLM spans at {sent / (stopped - began):.0f}/s for {stopped - began:.0f} s")
        print(f"semantic detector: {(d1 - d0) / (t1 - t0):.0f} answers scored per second (second half)")
        print(f"backlog when sending stopped: {readings[-1][1] - readings[-1][2]} calls; drained in {drained:.0f} s")
        print(f"scored {done} of {comparable} comparable calls")


if __name__ == "__main__":
    main()
