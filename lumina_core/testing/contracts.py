"""Contract suites: what every component of a kind must do, as pytest test classes to subclass.

    from lumina_core.testing.contracts import AlertSinkContract

    class TestMySink(AlertSinkContract):
        type_name = "my_sink"           # the type your plugin registers

        @pytest.fixture
        def plugin(self):               # the module (or object) with your hook implementations
            return my_package

        @pytest.fixture
        def sink(self, receiver):       # your sink, pointed at a receiver that accepts
            return MySink(MySinkConfig(url=receiver.url))

Each suite lists the fixtures it needs in its docstring. The built-in and contrib components run these
same suites (a meta-test checks that every registered type has one).
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest

from lumina_core.plugin_api import (
    TOKEN_BUCKETS,
    Alert,
    AlertRuleKind,
    AlertSink,
    AlertVerdict,
    Archiver,
    ComponentConfig,
    ComponentKind,
    Detector,
    Extractor,
    LLMFields,
    PriceRule,
    PricingProvider,
    QueueBackend,
    Sampler,
    SpanBatch,
    SpanRecord,
    WindowStats,
)

__all__ = [
    "AlertRuleContract",
    "AlertSinkContract",
    "ArchiverContract",
    "DetectorContract",
    "ExtractorContract",
    "PricingProviderContract",
    "QueueBackendContract",
    "ReplayExecutorContract",
    "SamplerContract",
    "make_span",
    "sample_alert",
]


def sample_alert(event: str = "firing", **changes: Any) -> Alert:
    """A realistic alert to send; ``changes`` replace any field."""
    values: dict[str, Any] = {
        "alert_id": 7,
        "event_id": 42,
        "event": event,
        "dedup_key": "lumina/default/cost-spike/service=checkout",
        "rule": "cost-spike",
        "kind": "cost_spike",
        "project_id": "default",
        "scope": {"service": "checkout"},
        "severity": "critical",
        "summary": "cost $3.0000 is 3.0 times the baseline $1.0000 (threshold $2.0000)",
        "value": 3.0,
        "threshold": 2.0,
        "baseline": 1.0,
        "started_at": datetime(2026, 12, 1, 10, 0, tzinfo=UTC),
        "at": datetime(2026, 12, 1, 10, 5, tzinfo=UTC),
        "url": "http://127.0.0.1:8000/alerts/7?project=default",
    }
    values.update(changes)
    return Alert(**values)


def make_span(attributes: dict[str, Any], *, name: str = "chat", service: str = "svc") -> SpanRecord:
    """A span as intake decodes it, carrying ``attributes``."""
    return SpanRecord(
        "a" * 32,
        "b" * 16,
        None,
        name,
        "client",
        1_700_000_000_000_000_000,
        1_700_000_000_500_000_000,
        "unset",
        None,
        service,
        None,
        attributes,
        {"service.name": service},
        [],
        [],
    )


class _Registered:
    """Every suite: the plugin registers ``type_name`` for its kind, with a strict config model."""

    kind: ClassVar[ComponentKind]
    type_name: ClassVar[str]

    @pytest.fixture
    def plugin(self) -> object:
        raise NotImplementedError("define a `plugin` fixture: the module with your hook implementations")

    def test_the_plugin_registers_the_type(self, plugin: object) -> None:
        from lumina_core.plugins import PluginHost, builtin_plugins

        others = [p for p in builtin_plugins() if p is not plugin]
        factory = PluginHost([*others, plugin], entry_points=False).factory(self.kind, self.type_name)
        assert issubclass(factory.config_model, ComponentConfig), "configs must extend ComponentConfig"
        assert factory.description, "describe the component: `lumina plugins` shows it"
        assert factory.stability in ("stable", "beta", "alpha")


class AlertSinkContract(_Registered):
    """Fixtures: ``plugin``; ``sink`` (sends to a receiver that accepts); ``failing_sink`` (the same sink
    pointed at a receiver that refuses or cannot be reached). A sink with no receiver, which cannot fail,
    sets ``test_a_failed_delivery_raises = None``."""

    kind = "alert_sink"

    @pytest.fixture
    def failing_sink(self) -> Any:
        raise NotImplementedError("define `failing_sink`: your sink pointed at a receiver that fails")

    def test_is_an_alert_sink(self, sink: Any) -> None:
        assert isinstance(sink, AlertSink)

    @pytest.mark.parametrize("event", ["firing", "repeat", "resolved"])
    async def test_sends_every_event(self, sink: Any, event: str) -> None:
        await sink.send(sample_alert(event))

    async def test_sends_odd_scopes_and_missing_values(self, sink: Any) -> None:
        odd = {"user_id": 'ünï <b>"code"</b>\r\nBcc: x@y', "attribute:tenant.id": ""}
        await sink.send(sample_alert(scope=odd, value=None, threshold=None, baseline=None, url=None, summary=""))

    async def test_a_failed_delivery_raises(self, failing_sink: Any) -> None:
        with pytest.raises(Exception):  # noqa: B017 - any exception: Lumina's outbox retries
            await failing_sink.send(sample_alert())


class PricingProviderContract(_Registered):
    """Fixtures: ``plugin``; ``provider``; ``known`` — a ``(provider, model)`` pair it prices."""

    kind = "pricing_provider"

    def test_is_a_pricing_provider(self, provider: Any) -> None:
        assert isinstance(provider, PricingProvider)

    def test_prices_a_known_model(self, provider: Any, known: tuple[str | None, str]) -> None:
        rule = provider.lookup(*known, datetime.now(UTC))
        assert isinstance(rule, PriceRule)
        assert rule.source and rule.rule
        for bucket in TOKEN_BUCKETS:
            price = rule.per_mtok(bucket)
            assert math.isfinite(price) and price >= 0, bucket

    def test_an_unknown_model_has_no_price(self, provider: Any) -> None:
        assert provider.lookup(None, "no-such-model-9f3c", datetime.now(UTC)) is None
        assert provider.lookup("no-such-provider", "no-such-model-9f3c", datetime.now(UTC)) is None


class ExtractorContract(_Registered):
    """Fixtures: ``plugin``; ``extractor``; ``span`` — a span in the extractor's convention."""

    kind = "extractor"

    def test_is_an_extractor(self, extractor: Any) -> None:
        assert isinstance(extractor, Extractor)

    def test_reads_its_convention(self, extractor: Any, span: SpanRecord) -> None:
        fields = extractor.extract(span)
        assert isinstance(fields, LLMFields) and not fields.is_empty()

    def test_ignores_a_plain_span(self, extractor: Any) -> None:
        fields = extractor.extract(make_span({"http.method": "GET"}, name="GET /"))
        assert fields is None or fields.is_empty()

    @pytest.mark.parametrize("odd", [None, "", "not a number", -1, 1e308, [], {}, [1, "x"], True])
    def test_odd_values_never_raise(self, extractor: Any, span: SpanRecord, odd: Any) -> None:
        for key in span.attributes:
            extractor.extract(make_span({**span.attributes, key: odd}))


class DetectorContract(_Registered):
    """Fixtures: ``plugin``; ``detector``."""

    kind = "detector"

    def test_is_a_detector(self, detector: Any) -> None:
        assert isinstance(detector, Detector) and detector.mode in ("inline", "deferred")

    async def test_scores_one_per_pair_between_0_and_1(self, detector: Any) -> None:
        pairs = [
            ("The capital of France is Paris.", ["The capital of France is Paris."]),
            ("The capital of France is Paris.", ["Bananas are yellow."]),
            ("", [""]),
            ('{"a": 1}', ['{"a": 1}', '{"a": 2}']),
        ]
        scores = await detector.score(pairs)
        assert len(scores) == len(pairs)
        assert all(0 <= s <= 1 for s in scores)
        assert scores[0] >= 0.99, "an identical response scores 1"
        assert await detector.score([]) == []


class AlertRuleContract(_Registered):
    """Fixtures: ``plugin``; ``rule_kind`` — the kind built with a config that has ``min_samples = 1``."""

    kind = "alert_rule"

    def test_is_an_alert_rule_kind(self, rule_kind: Any) -> None:
        assert isinstance(rule_kind, AlertRuleKind)
        assert rule_kind.measures <= {"latency", "max_call_cost", "quality"}

    @pytest.mark.parametrize("calls", [0, 1, 1000])
    def test_judges_any_window_without_raising(self, rule_kind: Any, calls: int) -> None:
        quiet = WindowStats(0, 300 * 10**9)
        busy = WindowStats(
            0, 300 * 10**9, calls, calls // 10, calls * 0.01, calls * 100, 850.0, 0.05, calls, calls // 5, calls * 0.9
        )
        for current, history in ((quiet, []), (busy, [quiet, busy, busy]), (busy, [])):
            verdict = rule_kind.judge(current, history)
            assert isinstance(verdict, AlertVerdict) and verdict.firing in (True, False, None)
            value = rule_kind.metric(current)
            assert value is None or math.isfinite(value)
        assert rule_kind.judge(quiet, []).firing is not True, "no calls is no evidence"


class QueueBackendContract(_Registered):
    """Fixtures: ``plugin``; ``queue`` — a backend not yet started (the suite starts and stops it)."""

    kind = "queue_backend"

    async def test_carries_a_batch_to_a_consumer_and_put_returns_once_it_is_durable(self, queue: Any) -> None:
        import asyncio

        assert isinstance(queue, QueueBackend)
        await queue.start()
        try:
            batch = SpanBatch("default", [make_span({"k": "v"})])
            received: list[SpanBatch] = []

            async def consume() -> None:
                async for group in queue.consume(100):
                    for delivery in group:
                        received.append(delivery.batch)
                        await delivery.ack()
                    return

            consumer = asyncio.create_task(consume())
            await asyncio.wait_for(queue.put(batch), 10)
            await asyncio.wait_for(consumer, 10)
            assert [b.to_dict() for b in received] == [batch.to_dict()]
            assert queue.status().ok
        finally:
            await queue.stop()


def archived_span(i: int, **changes: Any) -> dict[str, Any]:
    """A stored span row as the retention sweep hands it to an archiver: every column, JSON ones as values."""
    start = 1_767_225_600_000_000_000 + i * 1_000_000_000
    row: dict[str, Any] = {
        "project_id": "default",
        "trace_id": f"{i:032x}",
        "span_id": f"{i:016x}",
        "parent_span_id": None,
        "name": "chat gpt-4o",
        "kind": "client",
        "service_name": "svc",
        "scope_name": None,
        "start_time_unix_nano": start,
        "end_time_unix_nano": start + 250_000_000,
        "latency_ms": 250.0,
        "status_code": "unset",
        "status_message": None,
        "status": "ok",
        "is_llm": True,
        "model": "gpt-4o",
        "input_tokens": 1000 + i,
        "cost_usd": 0.0125,
        "counted": True,
        "input_messages": [{"role": "user", "content": 'héllo \u2603 "quoted"\n'}],
        "attributes": {"k": "v", "n": i, "nested": {"list": [1, 2.5, None, True]}},
        "events": [],
    }
    return row | changes


class ArchiverContract(_Registered):
    """Fixtures: ``plugin``; ``archiver`` — one writing under ``tmp_path``."""

    kind = "archiver"

    async def test_what_it_archives_reads_back_the_same_and_more_is_added(self, archiver: Any) -> None:
        assert isinstance(archiver, Archiver)
        first = [archived_span(i) for i in range(3)]
        later = [archived_span(i) for i in range(3, 5)]
        where = await archiver.archive("default", date(2026, 1, 1), first)
        assert await archiver.archive("default", date(2026, 1, 1), later) == where, "one place per project and day"
        chunks = archiver.read(Path(where))
        assert chunks is not None
        assert [row for chunk in chunks for row in chunk] == first + later

    async def test_days_and_projects_are_kept_apart(self, archiver: Any) -> None:
        one = await archiver.archive("a", date(2026, 1, 1), [archived_span(1, project_id="a")])
        other = await archiver.archive("a", date(2026, 1, 2), [archived_span(2, project_id="a")])
        third = await archiver.archive("b", date(2026, 1, 1), [archived_span(3, project_id="b")])
        assert len({one, other, third}) == 3

    def test_does_not_claim_files_it_did_not_write(self, archiver: Any, tmp_path: Path) -> None:
        stray = tmp_path / "notes.txt"
        stray.write_text("not an archive")
        assert archiver.read(stray) is None


class SamplerContract(_Registered):
    """Fixtures: ``plugin``; ``sampler`` — configured to drop some traces."""

    kind = "sampler"

    def test_decides_the_same_for_every_batch_of_a_trace(self, sampler: Any) -> None:
        assert isinstance(sampler, Sampler) and sampler.stage in ("head", "tail")
        for i in range(200):
            trace_id = f"{i * 7919:032x}"
            spans = [archived_span(i, trace_id=trace_id, parent_span_id=None, service_name="svc")]
            assert sampler.keep(trace_id, spans) == sampler.keep(trace_id, list(spans))

    def test_keeps_some_traces_and_drops_others(self, sampler: Any) -> None:
        import os

        verdicts = set()
        for i in range(500):
            trace_id = os.urandom(16).hex()
            verdicts.add(sampler.keep(trace_id, [archived_span(i, trace_id=trace_id, service_name="svc")]))
        assert verdicts == {True, False}


class ReplayExecutorContract(_Registered):
    """Fixtures: ``plugin``; ``provider`` — a provider name the executor serves; ``executor`` — your executor
    pointed at ``llm`` with the key ``api_key``; ``llm`` — a running
    :class:`~lumina_core.testing.fake_llm.FakeLLM` that accepts only ``api_key`` (the suite gives one; tests
    set its knobs, e.g. ``fail_first``); ``api_key`` — a recognisable secret (the suite gives one) that must
    never show in an answer or an error.

        @pytest.fixture
        def executor(self, llm, api_key):
            return MyExecutor(MyConfig(api_key=api_key, base_url=llm.openai_base_url))

    Requests go to the fake's OpenAI (``/v1/chat/completions``) or Anthropic (``/v1/messages``) API; the
    suite checks each in that API's own format.
    """

    kind = "replay_executor"

    @pytest.fixture
    def api_key(self) -> str:
        return "sk-lumina-contract-SECRET-7f3a9c2e41d8"

    @pytest.fixture
    def llm(self, api_key: str) -> Any:
        from lumina_core.testing.fake_llm import FakeLLM

        with FakeLLM(api_key=api_key) as fake:
            yield fake

    @staticmethod
    def call(provider: str, text: str = "hello", **changes: Any) -> Any:
        """The call the suite replays: one user message, a system prompt, temperature and max_tokens."""
        from lumina_core.plugin_api import ReplayCall

        params: dict[str, Any] = {"system_prompt": "be brief", "temperature": 0.2, "max_tokens": 50}
        return ReplayCall(provider, "some-model", [{"role": "user", "content": text}], **(params | changes))

    def test_is_a_replay_executor(self, executor: Any, provider: str) -> None:
        from lumina_core.plugin_api import ReplayExecutor

        assert isinstance(executor, ReplayExecutor)
        assert isinstance(executor.providers, tuple) and all(isinstance(p, str) for p in executor.providers)
        assert provider in executor.providers

    async def test_answers_with_the_text_and_the_usage_the_provider_reported(
        self, executor: Any, llm: Any, provider: str
    ) -> None:
        from lumina_core.plugin_api import ReplayAnswer

        answer = await executor.execute(self.call(provider), timeout=10)
        assert isinstance(answer, ReplayAnswer)
        assert "hello" in answer.output_text
        [request] = llm.requests
        reported = request.response
        assert request.status == 200 and reported is not None
        usage = reported["usage"]
        if request.api == "openai":
            assert (answer.input_tokens, answer.output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
            assert answer.input_includes_cache is True, "OpenAI's prompt_tokens include cached tokens"
        else:
            assert (answer.input_tokens, answer.output_tokens) == (usage["input_tokens"], usage["output_tokens"])
            assert answer.input_includes_cache is False, "Anthropic's input_tokens leave out cache reads and writes"
        assert (answer.input_tokens or 0) > 0 and (answer.output_tokens or 0) > 0
        assert answer.model == reported["model"]
        assert answer.response_id == reported["id"]
        assert answer.finish_reason in ("stop", "end_turn")

    async def test_reports_cache_tokens_as_the_provider_does(self, executor: Any, llm: Any, provider: str) -> None:
        llm.cache_read_tokens, llm.cache_write_tokens = 4, 2
        answer = await executor.execute(self.call(provider), timeout=10)
        [request] = llm.requests
        usage = request.response["usage"]
        if request.api == "openai":
            assert answer.input_tokens == usage["prompt_tokens"] and answer.input_includes_cache is True
            assert answer.cache_read_tokens == usage["prompt_tokens_details"]["cached_tokens"] == 4
        else:
            assert answer.input_tokens == usage["input_tokens"] and answer.input_includes_cache is False
            assert answer.cache_read_tokens == usage["cache_read_input_tokens"] == 4
            assert answer.cache_write_tokens == usage["cache_creation_input_tokens"] == 2

    async def test_sends_the_call_in_the_providers_format(
        self, executor: Any, llm: Any, provider: str, api_key: str
    ) -> None:
        from lumina_core.testing.fake_llm import text_of

        await executor.execute(self.call(provider), timeout=10)
        [request] = llm.requests
        body = request.body
        assert body["model"] == "some-model"
        assert body["temperature"] == 0.2
        authenticated = request.headers.get("x-api-key") == api_key
        authenticated |= request.headers.get("authorization") == f"Bearer {api_key}"
        assert authenticated, "the executor authenticates with its configured key"
        messages = body["messages"]
        if request.api == "openai":
            system, *rest = messages
            assert system["role"] in ("system", "developer") and text_of(system["content"]) == "be brief"
            assert [(m["role"], text_of(m["content"])) for m in rest] == [("user", "hello")]
            assert body.get("max_tokens", body.get("max_completion_tokens")) == 50
        elif request.api == "anthropic":
            assert text_of(body["system"]) == "be brief"
            assert [(m["role"], text_of(m["content"])) for m in messages] == [("user", "hello")]
            assert body["max_tokens"] == 50
        else:
            pytest.fail(f"the executor called {request.path}: neither OpenAI's nor Anthropic's API")

    async def test_passes_top_p_and_extra_parameters_as_they_are(self, executor: Any, llm: Any, provider: str) -> None:
        call = self.call(provider, top_p=0.9, extra={"metadata": {"user_id": "replay-1"}})
        await executor.execute(call, timeout=10)
        [request] = llm.requests
        assert request.body["top_p"] == 0.9
        assert request.body["metadata"] == {"user_id": "replay-1"}

    async def test_a_rate_limit_is_retryable_after_what_the_provider_said(
        self, executor: Any, llm: Any, provider: str
    ) -> None:
        from lumina_core.plugin_api import ReplayRetryable

        llm.fail_first, llm.fail_status, llm.retry_after = 1, 429, 2
        with pytest.raises(ReplayRetryable) as raised:
            await executor.execute(self.call(provider), timeout=10)
        assert raised.value.retry_after == 2
        assert [r.status for r in llm.requests] == [429], "the executor must not retry by itself"

    @pytest.mark.parametrize("status", [500, 503, 529])
    async def test_a_failing_or_overloaded_provider_is_retryable(
        self, executor: Any, llm: Any, provider: str, status: int
    ) -> None:
        from lumina_core.plugin_api import ReplayRetryable

        llm.fail_first, llm.fail_status, llm.retry_after = 1, status, None
        with pytest.raises(ReplayRetryable) as raised:
            await executor.execute(self.call(provider), timeout=10)
        assert raised.value.retry_after is None, "the provider did not say when: the engine backs off"
        assert [r.status for r in llm.requests] == [status], "the executor must not retry by itself"

    @pytest.mark.parametrize("status", [400, 401, 404])
    async def test_a_refused_call_is_not_retryable_and_says_why(
        self, executor: Any, llm: Any, provider: str, status: int
    ) -> None:
        from lumina_core.plugin_api import ReplayRetryable

        llm.fail_first, llm.fail_status = 1, status
        with pytest.raises(Exception) as raised:  # any exception but ReplayRetryable
            await executor.execute(self.call(provider), timeout=10)
        assert not isinstance(raised.value, ReplayRetryable), f"a {status} will not go away by trying again"
        [request] = llm.requests
        assert request.status == status
        assert str(status) in str(raised.value), "name the status"
        assert request.response["error"]["message"] in str(raised.value), "name the provider's reason"

    async def test_a_timeout_is_retryable(self, executor: Any, llm: Any, provider: str) -> None:
        import time

        from lumina_core.plugin_api import ReplayRetryable

        llm.latency = 5
        started = time.monotonic()
        with pytest.raises(ReplayRetryable):
            await executor.execute(self.call(provider), timeout=0.5)
        assert time.monotonic() - started < 4, "execute keeps to its timeout"
        assert len(llm.requests) == 1, "the executor must not retry by itself"

    async def test_an_unreachable_provider_is_retryable(self, executor: Any, llm: Any, provider: str) -> None:
        from lumina_core.plugin_api import ReplayRetryable

        llm.stop()
        with pytest.raises(ReplayRetryable):
            await executor.execute(self.call(provider), timeout=5)

    async def test_the_api_key_never_shows(self, executor: Any, llm: Any, provider: str, api_key: str) -> None:
        import traceback

        answer = await executor.execute(self.call(provider), timeout=10)
        shown = [repr(answer), str(answer)]
        for status in (429, 500, 400, 401, 403):
            llm.fail_first, llm.fail_status = 1, status
            try:
                await executor.execute(self.call(provider), timeout=10)
            except Exception as exc:
                shown += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
            else:
                pytest.fail(f"a {status} did not raise")
        for text in shown:
            assert api_key not in text

    async def test_runs_calls_concurrently(self, executor: Any, llm: Any, provider: str) -> None:
        import asyncio
        import time

        llm.latency = 0.5
        started = time.monotonic()
        answers = await asyncio.gather(
            *(executor.execute(self.call(provider, f"hello {i}"), timeout=10) for i in range(20))
        )
        assert time.monotonic() - started < 5, "20 calls of 0.5 s each ran one after another"
        assert [a.output_text.endswith(f"hello {i}") for i, a in enumerate(answers)] == [True] * 20
        assert llm.peak_concurrency > 1
