"""A realistic mixed LLM workload as OTLP export requests (shared by the benchmarks)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from lumina_core.testing import kv

SERVICES = ["support-bot", "search-api", "summariser", "agent-runner"]
MODELS = [
    ("openai", "gpt-4o", "gpt-4o-2024-08-06"),
    ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
    ("anthropic", "claude-3-5-sonnet-20241022", "claude-3-5-sonnet-20241022"),
    ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
]
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dogs",
    "while",
    "agents",
    "call",
    "tools",
    "and",
    "models",
    "answer",
    "users",
]


def _text(rng: random.Random, n_bytes: int) -> str:
    words: list[str] = []
    size = 0
    while size < n_bytes:
        word = rng.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)


def _llm_attributes(rng: random.Random, convention: int, prompts: Sequence[str] = ()) -> list[KeyValue]:
    provider, request_model, response_model = rng.choice(MODELS)
    user = f"user-{rng.randrange(1000)}"
    prompt = rng.choice(prompts) if prompts else _text(rng, rng.randint(200, 500))
    completion = _text(rng, rng.randint(100, 400))
    inp, cached, out = rng.randint(200, 4000), rng.randint(0, 150), rng.randint(20, 800)
    if convention == 0:  # OTel GenAI, current names
        attrs = {
            "gen_ai.provider.name": provider,
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": request_model,
            "gen_ai.response.model": response_model,
            "gen_ai.request.temperature": 0.2,
            "gen_ai.usage.input_tokens": inp,
            "gen_ai.usage.cache_read.input_tokens": cached,
            "gen_ai.usage.output_tokens": out,
            "gen_ai.response.finish_reasons": "stop",
            "gen_ai.response.id": f"resp-{rng.getrandbits(64):x}",
            "gen_ai.input.messages": f'[{{"role":"user","parts":[{{"type":"text","content":"{prompt}"}}]}}]',
            "gen_ai.output.messages": f'[{{"role":"assistant","parts":[{{"type":"text","content":"{completion}"}}]}}]',
        }
    elif convention == 1:  # OpenInference
        attrs = {
            "openinference.span.kind": "LLM",
            "llm.system": provider,
            "llm.model_name": response_model,
            "llm.invocation_parameters": f'{{"model": "{request_model}", "temperature": 0.2}}',
            "llm.token_count.prompt": inp,
            "llm.token_count.prompt_details.cache_read": cached,
            "llm.token_count.completion": out,
            "llm.token_count.total": inp + out,
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content": prompt,
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": completion,
        }
    else:  # OpenLLMetry (older flattened names)
        attrs = {
            "gen_ai.system": provider,
            "llm.request.type": "chat",
            "gen_ai.request.model": request_model,
            "gen_ai.response.model": response_model,
            "gen_ai.usage.prompt_tokens": inp,
            "gen_ai.usage.completion_tokens": out,
            "llm.usage.total_tokens": inp + out,
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": prompt,
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": completion,
            "gen_ai.completion.0.finish_reason": "stop",
        }
    return [kv(k, v) for k, v in {**attrs, "user.id": user}.items()]


def trace_spans(rng: random.Random, start_ns: int, prompts: Sequence[str] = ()) -> list[Span]:
    """40% single LLM-span traces, 60% agent traces of 3-8 spans with 1-3 LLM calls; prompts drawn from
    ``prompts`` when given (else each one new)."""
    trace_id = rng.randbytes(16)
    if rng.random() < 0.4:
        shape = [("llm", 0)]
    else:
        n = rng.randint(3, 8)
        llm_slots = set(rng.sample(range(1, n), min(rng.randint(1, 3), n - 1)))
        shape = [("agent", 0)] + [("llm" if i in llm_slots else "tool", 1) for i in range(1, n)]
    spans: list[Span] = []
    root_id = rng.randbytes(8)
    for i, (kind, depth) in enumerate(shape):
        span_id = root_id if i == 0 else rng.randbytes(8)
        begin = start_ns + i * 1_000_000
        duration = rng.randint(50, 3000) * 1_000_000
        error = rng.random() < 0.02
        attributes = _llm_attributes(rng, rng.randrange(3), prompts) if kind == "llm" else [kv("tool.name", "search")]
        spans.append(
            Span(
                trace_id=trace_id,
                span_id=span_id,
                parent_span_id=root_id if depth else b"",
                name={"llm": "chat", "agent": "agent.run", "tool": "tool.call"}[kind],
                kind=Span.SPAN_KIND_CLIENT if kind == "llm" else Span.SPAN_KIND_INTERNAL,
                start_time_unix_nano=begin,
                end_time_unix_nano=begin + duration,
                attributes=attributes,
                status=Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_UNSET),
            )
        )
    return spans


def requests(
    total_spans: int,
    spans_per_request: int,
    seed: int = 7,
    start_ns: int = 0,
    span_gap_ns: int = 1_000_000,
    distinct_prompts: int = 0,
) -> Iterator[bytes]:
    """Serialized ExportTraceServiceRequests, one service per request, until ``total_spans`` are made;
    span ``n`` starts ``n * span_gap_ns`` after ``start_ns`` (default: an hour ago). With
    ``distinct_prompts``, LLM calls ask one of that many prompts (as templated applications do), else
    each a new one."""
    import time

    rng = random.Random(seed)
    pool = random.Random(seed + 1)
    prompts = [_text(pool, pool.randint(200, 500)) for _ in range(distinct_prompts)]
    start_ns = start_ns or time.time_ns() - 3_600_000_000_000
    made = 0
    while made < total_spans:
        spans: list[Span] = []
        while len(spans) < spans_per_request and made + len(spans) < total_spans:
            spans.extend(trace_spans(rng, start_ns + (made + len(spans)) * span_gap_ns, prompts))
        spans = spans[: total_spans - made]
        made += len(spans)
        resource = {"attributes": [kv("service.name", rng.choice(SERVICES)), kv("deployment.environment", "prod")]}
        request = ExportTraceServiceRequest(
            resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=spans)])]
        )
        yield request.SerializeToString()
