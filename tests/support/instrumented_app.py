"""An application instrumented with one real LLM instrumentation package, exporting to Lumina.

Run as ``python -m tests.support.instrumented_app LIBRARY OTLP_ENDPOINT OPENAI_BASE_URL SERVICE``.
Each library patches the ``openai`` module globally, so each runs in its own process. It makes one
successful chat call and one that fails with HTTP 429, then flushes.
"""

from __future__ import annotations

import contextlib
import sys

import openai
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


def instrument(library: str, provider: TracerProvider) -> None:
    if library == "openai-v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as OpenAIv2

        OpenAIv2().instrument(tracer_provider=provider)
    elif library == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor as OpenInference

        OpenInference().instrument(tracer_provider=provider)
    elif library == "openllmetry":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor as OpenLLMetry

        OpenLLMetry().instrument(tracer_provider=provider)
    else:
        raise SystemExit(f"unknown library {library}")


def main(library: str, endpoint: str, base_url: str, service: str) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    instrument(library, provider)
    client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
    client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello"},
        ],
        temperature=0.2,
        max_tokens=100,
    )
    with contextlib.suppress(openai.RateLimitError):
        client.chat.completions.create(model="error-429", messages=[{"role": "user", "content": "again"}])
    provider.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:5])
