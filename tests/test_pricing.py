"""Costs: exact per-bucket pricing, custom prices, effective dates, unknown models, reprice, dedup."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from lumina_core.cli import main
from lumina_core.server import Endpoints
from tests.support.otlp import raw_request

JAN_2026 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
DAY = 86_400 * 1_000_000_000

# Published list prices, USD per 1M tokens: (input, cache read, cache write, output). Cache prices of
# None: the provider has no cache discount for the model, so cached tokens are billed as input.
PUBLISHED = {
    ("openai", "gpt-4-0613"): (30.0, None, None, 60.0),
    ("openai", "gpt-4"): (30.0, None, None, 60.0),
    ("openai", "gpt-4-turbo-2024-04-09"): (10.0, None, None, 30.0),
    ("openai", "gpt-3.5-turbo-0125"): (0.5, None, None, 1.5),
    ("openai", "gpt-4o-2024-08-06"): (2.5, 1.25, None, 10.0),
    ("openai", "o1"): (15.0, 7.5, None, 60.0),
    ("anthropic", "claude-3-opus-20240229"): (15.0, 1.5, 18.75, 75.0),
    ("anthropic", "claude-3-sonnet-20240229"): (3.0, 0.3, 3.75, 15.0),
    ("anthropic", "claude-3-haiku-20240307"): (0.25, 0.03, 0.3, 1.25),
    ("anthropic", "claude-3-5-sonnet-20241022"): (3.0, 0.3, 3.75, 15.0),
    ("anthropic", "claude-sonnet-4-5-20250929"): (3.0, 0.3, 3.75, 15.0),
    ("anthropic", "claude-3-5-sonnet-latest"): (3.0, 0.3, 3.75, 15.0),
    ("aws.bedrock", "anthropic.claude-3-5-sonnet-20241022-v2:0"): (3.0, 0.3, 3.75, 15.0),
    ("gcp.vertex_ai", "claude-3-5-sonnet-v2@20241022"): (3.0, 0.3, 3.75, 15.0),
    (None, "openai/gpt-4o"): (2.5, 1.25, None, 10.0),
}
# Usage as instrumentations report it: (input incl. cache, cache read, cache write, output incl. reasoning,
# reasoning).
CASES = {
    "plain": (1_000, None, None, 500, None),
    "cached": (1_000, 600, None, 500, None),
    "cache-write": (1_000, 200, 400, 500, None),
    "reasoning": (1_000, None, None, 500, 200),
}


def expected_usd(prices: tuple, usage: tuple) -> float:
    """The bill computed by hand: every token in exactly one bucket, times that bucket's price."""
    input_price, read_price, write_price, output_price = prices
    total_in, read, write, total_out, _reasoning = (x or 0 for x in usage)
    uncached = total_in - read - write
    return (
        uncached * input_price
        + read * (read_price if read_price is not None else input_price)
        + write * (write_price if write_price is not None else input_price)
        + total_out * output_price  # visible output + reasoning, both at the output price
    ) / 1_000_000


def llm_span(trace_id: bytes, provider, model, usage, *, start=JAN_2026, extra=None, parent=b"") -> dict:
    total_in, read, write, total_out, reasoning = usage
    attributes = {
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": total_in,
        "gen_ai.usage.output_tokens": total_out,
        **(extra or {}),
    }
    if provider:
        attributes["gen_ai.provider.name"] = provider
    for key, value in (
        ("gen_ai.usage.cache_read.input_tokens", read),
        ("gen_ai.usage.cache_creation.input_tokens", write),
        ("gen_ai.usage.reasoning.output_tokens", reasoning),
    ):
        if value is not None:
            attributes[key] = value
    return {
        "trace_id": trace_id,
        "name": f"chat {model}",
        "attributes": attributes,
        "start": start,
        "end": start + 1_000_000,
        "parent_span_id": parent,
    }


def send(server: Endpoints, spans: list[dict], service: str = "priced") -> None:
    body = raw_request(spans, service=service).SerializeToString()
    response = httpx.post(server.otlp_http_url, content=body, headers={"content-type": "application/x-protobuf"})
    assert response.status_code == 200, response.text


def trace_detail(server: Endpoints, trace_id: bytes) -> dict:
    return httpx.get(f"{server.http_url}/api/v1/traces/{trace_id.hex()}").json()


def flat(spans: list[dict]) -> list[dict]:
    return [s for span in spans for s in [span, *flat(span["children"])]]


def test_every_documented_model_is_priced_exactly_per_bucket(server: Endpoints) -> None:
    traces = {}
    for (provider, model), _prices in PUBLISHED.items():
        trace_id = os.urandom(16)
        traces[(provider, model)] = trace_id
        send(server, [llm_span(trace_id, provider, model, usage) for usage in CASES.values()])
    for key, trace_id in traces.items():
        detail = trace_detail(server, trace_id)
        spans = flat(detail["spans"])
        costs = sorted(s["cost_usd"] for s in spans)
        expected = sorted(expected_usd(PUBLISHED[key], usage) for usage in CASES.values())
        assert costs == pytest.approx(expected, abs=1e-9), key
        for span in spans:
            assert span["pricing_status"] == "priced" and span["cost_source"] == "genai-prices", key
            assert span["pricing_rule"].startswith("genai-prices:")
        assert detail["cost_usd"] == pytest.approx(sum(costs), abs=1e-9)


def test_long_prompts_switch_claude_sonnet_4_5_to_its_higher_tier(server: Endpoints) -> None:
    trace_id = os.urandom(16)
    usage = (250_000, 50_000, None, 1_000, None)
    send(server, [llm_span(trace_id, "anthropic", "claude-sonnet-4-5", usage)])
    (span,) = flat(trace_detail(server, trace_id)["spans"])
    # above 200k prompt tokens the whole request costs $6 input, $0.60 cache read, $22.50 output per 1M
    assert span["cost_usd"] == pytest.approx((200_000 * 6 + 50_000 * 0.6 + 1_000 * 22.5) / 1e6, abs=1e-9)
    assert "200,000" in span["pricing_rule"]


def add_price(server: Endpoints, **price) -> dict:
    response = httpx.post(f"{server.http_url}/api/v1/pricing/custom", json=price)
    assert response.status_code == 201, response.text
    return response.json()


def cost_of(server: Endpoints, provider, model, usage=(1_000_000, None, None, 1_000_000, None), **kw) -> dict:
    trace_id = os.urandom(16)
    send(server, [llm_span(trace_id, provider, model, usage, **kw)])
    (span,) = flat(trace_detail(server, trace_id)["spans"])
    return span


def test_custom_price_beats_built_in_and_deleting_it_restores_the_list_price(server: Endpoints) -> None:
    assert cost_of(server, "openai", "gpt-4o")["cost_usd"] == pytest.approx(12.5)
    price = add_price(server, model="gpt-4o", provider="openai", input=1.0, output=2.0)
    custom = cost_of(server, "openai", "gpt-4o")
    assert (custom["cost_usd"], custom["cost_source"]) == (pytest.approx(3.0), "custom")
    url = f"{server.http_url}/api/v1/pricing/custom/{price['id']}"
    replaced = httpx.put(url, json={"model": "gpt-4o", "provider": "openai", "input": 2.0, "output": 2.0})
    assert (replaced.status_code, replaced.json()["input"]) == (200, 2.0)
    assert cost_of(server, "openai", "gpt-4o")["cost_usd"] == pytest.approx(4.0)
    assert httpx.put(url + "9", json={"model": "x", "input": 1, "output": 1}).status_code == 404
    assert cost_of(server, "azure", "gpt-4o")["cost_source"] != "custom"  # the rule names a provider
    listed = httpx.get(f"{server.http_url}/api/v1/pricing/custom").json()["data"]
    assert [p["id"] for p in listed] == [price["id"]]
    assert httpx.delete(f"{server.http_url}/api/v1/pricing/custom/{price['id']}").status_code == 204
    assert httpx.delete(f"{server.http_url}/api/v1/pricing/custom/{price['id']}").status_code == 404
    assert cost_of(server, "openai", "gpt-4o")["cost_usd"] == pytest.approx(12.5)


def test_the_newest_price_effective_at_the_call_applies(server: Endpoints) -> None:
    add_price(server, model="acme-1", input=1.0, output=1.0, effective_from="2026-01-01")
    add_price(server, model="acme-1", input=2.0, output=2.0, effective_from="2026-03-01T00:00:00Z")
    before, between, after = JAN_2026 - DAY, JAN_2026 + 10 * DAY, JAN_2026 + 70 * DAY
    assert cost_of(server, None, "acme-1", start=before)["pricing_status"] == "unpriced"
    assert cost_of(server, None, "acme-1", start=between)["cost_usd"] == pytest.approx(2.0)
    assert cost_of(server, None, "acme-1", start=after)["cost_usd"] == pytest.approx(4.0)


def test_a_regex_rule_is_anchored_and_does_not_capture_a_newer_sibling(server: Endpoints) -> None:
    add_price(server, model="gpt-4", match="regex", input=1.0, output=1.0)
    add_price(server, model="ft:gpt-4o-mini:acme:.*", match="regex", input=5.0, output=5.0)
    assert cost_of(server, "openai", "gpt-4")["cost_source"] == "custom"
    sibling = cost_of(server, "openai", "gpt-4o")
    assert (sibling["cost_source"], sibling["cost_usd"]) == ("genai-prices", pytest.approx(12.5))
    assert cost_of(server, "openai", "ft:gpt-4o-mini:acme:v3")["cost_usd"] == pytest.approx(10.0)
    bad = httpx.post(
        f"{server.http_url}/api/v1/pricing/custom", json={"model": "(", "match": "regex", "input": 1, "output": 1}
    )
    assert bad.status_code == 422 and "regular expression" in bad.json()["error"]["message"]
    negative = httpx.post(f"{server.http_url}/api/v1/pricing/custom", json={"model": "m", "input": -1, "output": 1})
    assert negative.status_code == 422


def test_unknown_model_is_unpriced_not_zero_and_is_listed(server: Endpoints) -> None:
    for _ in range(2):
        span = cost_of(server, "acme", "acme-ultra-9000", usage=(100, None, None, 10, None))
        assert span["cost_usd"] is None and span["pricing_status"] == "unpriced"
    trace = cost_of(server, "openai", "gpt-4o")
    assert trace["cost_usd"] is not None
    unpriced = httpx.get(f"{server.http_url}/api/v1/pricing/unpriced").json()["data"]
    assert [(u["provider"], u["model"], u["requests"], u["input_tokens"]) for u in unpriced] == [
        ("acme", "acme-ultra-9000", 2, 200)
    ]
    metrics = httpx.get(f"{server.http_url}/metrics").text
    assert 'lumina_unpriced_spans_total{model="acme-ultra-9000",provider="acme"} 2.0' in metrics


def test_a_cost_reported_by_the_span_is_kept(server: Endpoints) -> None:
    for extra in ({"lumina.cost_usd": 0.123}, {"llm.cost.total": 0.123}):
        span = cost_of(server, "openai", "gpt-4o", extra=extra)
        assert (span["cost_usd"], span["cost_source"], span["pricing_status"]) == (0.123, "span", "priced")


def test_a_call_reported_twice_is_counted_once(server: Endpoints) -> None:
    usage = (1_000_000, None, None, 1_000_000, None)
    same_call = {"gen_ai.response.id": "msg_01XYZ"}
    trace_id, parent = os.urandom(16), os.urandom(8)
    sdk = llm_span(trace_id, "openai", "gpt-4o", usage, extra=same_call)
    sdk["span_id"] = parent
    instrumentation = llm_span(trace_id, "openai", "gpt-4o", usage, extra=same_call, parent=parent)
    send(server, [sdk, instrumentation])
    detail = trace_detail(server, trace_id)
    assert detail["span_count"] == 2
    assert detail["cost_usd"] == pytest.approx(12.5)
    assert detail["input_tokens"] == 1_000_000
    # a later report of the same call in another trace: the first report stays the counted one
    other = os.urandom(16)
    send(server, [llm_span(other, "openai", "gpt-4o", usage, extra=same_call, start=JAN_2026 + 1_000_000_000)])
    assert trace_detail(server, trace_id)["cost_usd"] == pytest.approx(12.5)
    assert trace_detail(server, other)["cost_usd"] is None
    assert trace_detail(server, other)["input_tokens"] is None
    # an earlier report arriving late takes over, and both traces follow
    earliest = os.urandom(16)
    send(server, [llm_span(earliest, "openai", "gpt-4o", usage, extra=same_call, start=JAN_2026 - 1_000_000_000)])
    assert trace_detail(server, earliest)["cost_usd"] == pytest.approx(12.5)
    assert trace_detail(server, trace_id)["cost_usd"] is None


def test_quote(server: Endpoints) -> None:
    quote = httpx.get(
        f"{server.http_url}/api/v1/pricing/quote",
        params={
            "model": "claude-3-5-sonnet-20241022",
            "provider": "anthropic",
            "input_tokens": 1000,
            "cache_read_tokens": 2000,
            "output_tokens": 300,
        },
    ).json()
    assert quote["cost_usd"] == pytest.approx((1000 * 3 + 2000 * 0.3 + 300 * 15) / 1e6, abs=1e-12)
    assert quote["rule"] == "genai-prices:anthropic/claude-3-5-sonnet"
    assert quote["prices_per_mtok"]["cache_write"] == 3.75
    unknown = httpx.get(f"{server.http_url}/api/v1/pricing/quote", params={"model": "nope-1"}).json()
    assert (unknown["pricing_status"], unknown["cost_usd"]) == ("unpriced", None)
    assert httpx.get(f"{server.http_url}/api/v1/pricing/quote").status_code == 400


def test_reprice_updates_spans_and_trace_rollups(server: Endpoints, database_url: str, tmp_path: Path) -> None:
    trace_id = os.urandom(16)
    usage = (1_000_000, None, None, 1_000_000, None)
    send(server, [llm_span(trace_id, None, "acme-2", usage), llm_span(trace_id, "openai", "gpt-4o", usage)])
    assert trace_detail(server, trace_id)["cost_usd"] == pytest.approx(12.5)  # only the known model so far
    add_price(server, model="acme-2", input=3.0, output=4.0)
    config = tmp_path / "reprice.toml"
    config.write_text(f'[storage]\nurl = "{database_url}"\n[plugins]\nentry_points = false\n')
    result = CliRunner().invoke(main, ["reprice", "--config", str(config), "--since", "2025-12-31"])
    assert result.exit_code == 0, result.output
    assert "2 spans repriced, 1 changed" in result.output
    detail = trace_detail(server, trace_id)
    assert detail["cost_usd"] == pytest.approx(12.5 + 7.0)
    assert {s["model"]: s["pricing_status"] for s in flat(detail["spans"])} == {"acme-2": "priced", "gpt-4o": "priced"}
    only_model = CliRunner().invoke(
        main, ["reprice", "--config", str(config), "--since", "2025-12-31", "--model", "gpt-4o"]
    )
    assert "1 spans repriced, 0 changed" in only_model.output


def test_prices_from_lumina_toml(lumina_factory) -> None:
    server = lumina_factory(
        **{"pricing.custom": [{"model": "house-model", "input": 0.5, "output": 1.5, "cache_read": 0.1}]}
    )
    span = cost_of(server, None, "house-model", usage=(2_000_000, 1_000_000, None, 1_000_000, None))
    assert span["cost_usd"] == pytest.approx(0.5 + 0.1 + 1.5)
    assert span["pricing_rule"].startswith("custom (lumina.toml)")
    listed = httpx.get(f"{server.http_url}/api/v1/pricing/custom").json()["data"]
    assert listed[0]["source"] == "config" and listed[0]["model"] == "house-model"


def test_contrib_price_file_provider_is_discovered_and_prices_what_nothing_else_knows(
    lumina_factory, tmp_path: Path
) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"acme-large-2": {"input_cost_per_token": 2e-06, "output_cost_per_token": 8e-06}}))
    server = lumina_factory(
        **{
            "plugins.entry_points": True,
            "pricing.providers": ["pricing_file", "genai_prices"],
            "pricing_providers": {"pricing_file": {"path": str(prices)}},
        }
    )
    plugins = httpx.get(f"{server.http_url}/-/plugins").json()["plugins"]
    (info,) = [p for p in plugins if p["name"] == "pricing_file"]
    assert info["distribution"] == "lumina-pricing-file"
    span = cost_of(server, None, "acme-large-2")
    assert (span["cost_usd"], span["cost_source"]) == (pytest.approx(10.0), "pricing_file")
    assert cost_of(server, "openai", "gpt-4o")["cost_source"] == "genai-prices"
