"""Running a replay: each frozen call, with the run's overrides, through the executor serving its provider
— paced to the run's requests and tokens per minute, at most ``concurrency`` at a time, retried with
backoff when the provider says "later", timed out, cancellable, and resumable: a call whose result is
recorded is never sent again. Each answer is priced by the pricing chain and compared with the original
(exact match and semantic similarity, by the quality detectors configured)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2.sandbox

from lumina_core.extraction import llm_columns
from lumina_core.plugin_api import Detector, LLMFields, ReplayAnswer, ReplayCall, ReplayExecutor, ReplayRetryable
from lumina_core.pricing import PriceStage
from lumina_core.replay import store
from lumina_core.replay.store import ReplayLimits, ReplayOverrides
from lumina_core.storage.models import TOKEN_COLUMNS

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 60.0
TEMPLATES = jinja2.sandbox.SandboxedEnvironment(autoescape=False, undefined=jinja2.StrictUndefined)


def replay_call(item: Mapping[str, Any], overrides: ReplayOverrides) -> ReplayCall:
    """The call a run sends for a captured one: its messages and parameters, with the overrides applied."""
    params = dict(item["invocation_parameters"] or {})
    system = overrides.system_prompt if overrides.system_prompt is not None else item["system_prompt"]
    template = TEMPLATES.from_string(overrides.template) if overrides.template else None

    def rewrite(text: str, role: str) -> str:
        if overrides.find:
            text = text.replace(overrides.find, overrides.replace)
        if template is not None:
            text = template.render(content=text, role=role, system_prompt=system or "")
        return text

    messages = []
    for message in item["input_messages"] or []:
        role = str(message.get("role") or "user")
        if role == "system":  # the system prompt travels apart
            system = system if system is not None else str(message.get("content") or "")
            continue
        content = message.get("content")
        messages.append({"role": role, "content": rewrite(content, role) if isinstance(content, str) else content})
    if system is not None and overrides.find:
        system = system.replace(overrides.find, overrides.replace)
    return ReplayCall(
        provider=overrides.provider or item["provider"] or "openai",
        model=overrides.model or item["model"] or "",
        messages=messages,
        system_prompt=system,
        temperature=_first(overrides.temperature, params.get("temperature")),
        max_tokens=_first(overrides.max_tokens, params.get("max_tokens")),
        top_p=_first(overrides.top_p, params.get("top_p")),
        extra=dict(overrides.extra),
    )


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


class Pace:
    """Requests spaced evenly at ``per_minute`` (a load test's rate, or a provider's request limit) and a
    token bucket of ``tokens_per_minute``."""

    def __init__(self, limits: ReplayLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 60 / limits.requests_per_minute if limits.requests_per_minute else 0.0
        self.tokens_per_second = limits.tokens_per_minute / 60 if limits.tokens_per_minute else None
        self.capacity = limits.tokens_per_minute or 0.0
        self.tokens = self.capacity
        self.clock = clock
        self.next_start = clock()
        self.refilled = clock()
        self.lock = asyncio.Lock()

    async def wait(self, tokens: int) -> None:
        async with self.lock:
            now = self.clock()
            if now < self.next_start:
                await asyncio.sleep(self.next_start - now)
            self.next_start = max(self.next_start, now) + self.interval
            if self.tokens_per_second is not None:
                need = min(float(tokens), self.capacity)
                while True:
                    now = self.clock()
                    self.tokens = min(self.capacity, self.tokens + (now - self.refilled) * self.tokens_per_second)
                    self.refilled = now
                    if self.tokens >= need:
                        self.tokens -= need
                        return
                    await asyncio.sleep((need - self.tokens) / self.tokens_per_second)


@dataclass(frozen=True)
class Sending:
    """How a run sends its calls: overrides, limits, the shared pace, and whether it was cancelled."""

    overrides: ReplayOverrides
    limits: ReplayLimits
    pace: Pace
    cancelled: asyncio.Event


class ReplayRunner:
    """Runs replay runs with the configured executors, pricing and detectors."""

    def __init__(
        self,
        engine: Any,
        executors: list[ReplayExecutor],
        price: PriceStage,
        detectors: Mapping[str, Detector],
        secrets: list[str] | None = None,
    ) -> None:
        self.engine = engine
        self.executors = executors
        self.price = price
        self.detectors = detectors
        self.secrets = [s for s in secrets or [] if len(s) >= 6]

    def executor_for(self, provider: str) -> ReplayExecutor:
        for executor in self.executors:
            if provider in executor.providers:
                return executor
        raise LookupError(
            f"no replay executor serves provider {provider!r}: configure one in [replay_executors] "
            f"(built in: openai; lumina-replay-anthropic adds anthropic)"
        )

    async def run(self, run_id: int, progress: Callable[[int], None] | None = None) -> str:
        """Run (or resume) a run to its end; returns its final state. Calls already recorded are skipped."""
        run = await store.get_run(self.engine, run_id)
        if run is None:
            raise LookupError(f"no replay run {run_id}")
        if run["state"] in ("done", "cancelled", "failed"):
            return str(run["state"])
        overrides = ReplayOverrides.model_validate(run["overrides"])
        limits = ReplayLimits.model_validate(run["limits"])
        done = await store.finished_positions(self.engine, run_id)
        pending = [item for item in await store.set_items(self.engine, run["set_id"]) if item["position"] not in done]
        if progress is not None and done:
            progress(len(done))
        await store.set_state(self.engine, run_id, "running")
        pace = Pace(limits)
        slots = asyncio.Semaphore(limits.concurrency)
        cancelled = asyncio.Event()
        watcher = asyncio.create_task(self._watch_cancel(run_id, cancelled))
        tasks: list[asyncio.Task[None]] = []
        try:
            for item in pending:
                await slots.acquire()
                if cancelled.is_set():
                    slots.release()
                    break
                sending = Sending(overrides, limits, pace, cancelled)
                tasks.append(asyncio.create_task(self._replay(run_id, item, sending, slots, progress)))
            await asyncio.gather(*tasks)
        finally:
            watcher.cancel()
        if cancelled.is_set():
            return "cancelled"
        await store.set_state(self.engine, run_id, "done")
        return "done"

    async def _watch_cancel(self, run_id: int, cancelled: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            run = await store.get_run(self.engine, run_id)
            if run is None or run["state"] == "cancelled":
                cancelled.set()
                return

    async def _replay(
        self,
        run_id: int,
        item: dict[str, Any],
        sending: Sending,
        slots: asyncio.Semaphore,
        progress: Callable[[int], None] | None,
    ) -> None:
        try:
            row = await self._attempts(item, sending)
            if row is not None:
                await store.record_result(self.engine, {"run_id": run_id, "position": item["position"], **row})
        finally:
            slots.release()
        if progress is not None and row is not None:
            progress(1)

    async def _attempts(self, item: dict[str, Any], sending: Sending) -> dict[str, Any] | None:
        """Send the call until it is answered, refused for good, or out of attempts; the result row
        (``None`` when the run was cancelled before an answer: the call stays to do)."""
        limits = sending.limits
        attempts = 0
        error: str | None = None
        try:
            call = replay_call(item, sending.overrides)
            executor = self.executor_for(call.provider)
        except Exception as exc:
            return self._failed(1, f"{exc.__class__.__name__}: {exc}")
        while attempts < limits.max_attempts:
            await sending.pace.wait(int(item["input_tokens"] or 0) + int(item["output_tokens"] or 0))
            if sending.cancelled.is_set():  # every attempt is paced, and none starts after a cancellation
                return None
            attempts += 1
            began = time.perf_counter()
            try:
                answer = await asyncio.wait_for(executor.execute(call, limits.timeout_seconds), limits.timeout_seconds)
            except (ReplayRetryable, TimeoutError) as exc:
                error = str(exc) or "timed out"
                wait = getattr(exc, "retry_after", None) or min(0.5 * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)
                if attempts < limits.max_attempts:
                    await asyncio.sleep(wait)
                continue
            except Exception as exc:
                return self._failed(attempts, f"{exc.__class__.__name__}: {exc}")
            latency_ms = (time.perf_counter() - began) * 1000
            return await self._answered(item, call, answer, latency_ms, attempts)
        return self._failed(attempts, f"gave up after {attempts} attempts: {error}")

    def _failed(self, attempts: int, error: str) -> dict[str, Any]:
        for secret in self.secrets:  # a provider's error may quote what it was sent
            error = error.replace(secret, "***")
        return {"status": "error", "attempts": attempts, "error": error[:2000], "finished_unix_nano": time.time_ns()}

    async def _answered(
        self, item: dict[str, Any], call: ReplayCall, answer: ReplayAnswer, latency_ms: float, attempts: int
    ) -> dict[str, Any]:
        fields = LLMFields(
            provider=call.provider,
            request_model=call.model,
            response_model=answer.model,
            input_tokens=answer.input_tokens,
            cache_read_tokens=answer.cache_read_tokens,
            cache_write_tokens=answer.cache_write_tokens,
            output_tokens=answer.output_tokens,
            reasoning_tokens=answer.reasoning_tokens,
            input_includes_cache=answer.input_includes_cache,
        )
        columns = llm_columns(fields) | {"start_time_unix_nano": time.time_ns()}
        priced = self.price.price(columns)
        identical, similarity = await self._compare(answer.output_text, item["output_text"])
        return {
            "status": "ok",
            "output_text": answer.output_text,
            "model": columns["model"],
            **{name: columns[name] for name in TOKEN_COLUMNS},
            "cost_usd": priced["cost_usd"],
            "latency_ms": latency_ms,
            "attempts": attempts,
            "error": None,
            "identical": identical,
            "similarity": similarity,
            "finished_unix_nano": time.time_ns(),
        }

    async def _compare(self, replayed: str, original: str | None) -> tuple[bool | None, float | None]:
        """Exact match (the ``exact`` detector's normalisation, else the stripped text) and the best score of
        any other detector (the semantic one when installed)."""
        if original is None:
            return None, None
        identical: bool | None = replayed.strip() == original.strip()
        similarity = None
        for name, detector in self.detectors.items():
            try:
                [score] = await detector.score([(replayed, [original])])
            except Exception:
                log.exception("replay comparison by detector %s failed", name)
                continue
            if name == "exact":
                identical = score >= 1.0
            else:
                similarity = float(score) if similarity is None else max(similarity, float(score))
        return identical, similarity
