"""One Lumina instance: settings, plugins, storage, queue, intake and worker, and its ASGI app."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import grpc
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from lumina_core import api
from lumina_core.alerting.engine import AlertEngine
from lumina_core.alerting.outbox import Outbox
from lumina_core.api import operator
from lumina_core.auth import Authenticator, is_loopback
from lumina_core.components import build_components
from lumina_core.config import CustomPriceSettings, Settings, secret_values
from lumina_core.extraction import ExtractStage
from lumina_core.intake.export import Intake
from lumina_core.intake.grpc import create_grpc_server
from lumina_core.intake.http import otlp_http_endpoint
from lumina_core.metrics import Metrics
from lumina_core.plugin_api import ConfigError
from lumina_core.plugins import PluginHost
from lumina_core.pricing import CustomPriceRule, PriceStage, PricingChain
from lumina_core.quality import QualityMonitor
from lumina_core.replay import store as replay_store
from lumina_core.replay.runner import ReplayRunner
from lumina_core.retention import RetentionSweeper
from lumina_core.sampling import HeadSampling, TailSampling
from lumina_core.storage import prices, queries
from lumina_core.storage.cache import QueryCache
from lumina_core.storage.database import JobLock, create_engine, migrate, refresh_statistics
from lumina_core.storage.hours import sum_settled_hours
from lumina_core.storage.limits import DailyLimiter
from lumina_core.storage.writer import SpanWriter
from lumina_core.worker import Worker

log = logging.getLogger("lumina")
OTLP_PATH = "/v1/traces"


class Lumina:
    """Everything one process runs. Build it, then serve :meth:`asgi_app` (its lifespan starts it)."""

    def __init__(self, settings: Settings, plugins: PluginHost | None = None) -> None:
        self.settings = settings
        self.plugins = plugins or PluginHost.configured(settings.plugins)
        components = build_components(settings, self.plugins)
        self.metrics = Metrics()
        self.queue = components.queue
        self.engine = create_engine(settings.database_url, sqlite_synchronous=settings.storage.sqlite_synchronous)
        samplers = list(zip(settings.sampling.samplers, components.samplers, strict=True))
        tail = [(name, sampler) for name, sampler in samplers if sampler.stage == "tail"]
        self.writer = SpanWriter(self.engine, track_undecided=bool(tail))
        self.tail_sampling = TailSampling(self.engine, self.writer, tail, settings.sampling.decision_wait_seconds)
        self.pricing = PricingChain(components.pricing_providers, self._config_prices())
        self.auth = Authenticator(self.engine)
        self.cache = QueryCache(self.engine, settings.storage.query_cache_entries)
        self.limiter = DailyLimiter(self.engine, settings.limits.daily_traces_for)
        self.intake = Intake(self.queue, self.metrics, self.auth, self.limiter)
        self.quality = (
            QualityMonitor(self.engine, self.writer, settings.quality, components.detectors)
            if components.detectors
            else None
        )
        self.outbox = Outbox(self.engine, components.alert_sinks, settings.alerts.delivery)
        self.alerts = AlertEngine(self.engine, settings.alerts, components.alert_rules, self.outbox.wake)
        self.replay = ReplayRunner(
            self.engine,
            components.replay_executors,
            PriceStage(self.pricing),
            components.detectors,
            secret_values(settings),
        )
        self.retention = RetentionSweeper(self.engine, self.writer, settings.retention, components.archiver)
        self.worker = Worker(
            self.queue,
            ExtractStage(components.extractors),
            PriceStage(self.pricing, self.metrics.unpriced),
            self.writer,
            settings.pipeline.batch_max_spans,
            self.quality,
            self.alerts,
            HeadSampling([(name, sampler) for name, sampler in samplers if sampler.stage == "head"]),
        )
        self.grpc_server: grpc.aio.Server | None = None
        self.grpc_port: int | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _config_prices(self) -> list[CustomPriceRule]:
        return [CustomPriceRule.build(**price.as_values()) for price in self.settings.pricing.custom]

    async def reload_custom_prices(self) -> None:
        """Custom prices from ``lumina.toml`` and from the database, into the in-memory pricing chain."""
        stored = [
            CustomPriceRule.build(**{k: row[k] for k in (*prices.PRICE_FIELDS, "id", "effective_from_unix_nano")})
            for row in await prices.list_custom_prices(self.engine)
        ]
        self.pricing.set_custom([*self._config_prices(), *stored])

    async def add_custom_price(self, price: CustomPriceSettings) -> dict[str, Any]:
        """Store a custom price and price new spans with it at once (API and dashboard)."""
        row = await prices.add_custom_price(self.engine, price.as_values())
        await self.reload_custom_prices()
        return row

    async def update_custom_price(self, price_id: int, price: CustomPriceSettings) -> dict[str, Any] | None:
        row = await prices.update_custom_price(self.engine, price_id, price.as_values())
        await self.reload_custom_prices()
        return row

    async def delete_custom_price(self, price_id: int) -> bool:
        deleted = await prices.delete_custom_price(self.engine, price_id)
        await self.reload_custom_prices()
        return deleted

    async def _refresh_custom_prices(self) -> None:
        # Other processes may change custom prices in the shared database; pick them up periodically.
        while True:
            await asyncio.sleep(self.settings.pricing.refresh_seconds)
            try:
                await self.reload_custom_prices()
            except Exception:
                log.exception("reloading custom prices failed")

    async def _maintain_storage(self) -> None:
        """Sum settled hours of spans for analytics (every worker takes a share), and keep the query
        planner's statistics fresh (one worker: concurrent ANALYZEs of a table only queue up)."""
        quiet = self.settings.storage.sum_hours_after_seconds
        analyzed: dict[str, int] = {}
        statistics = JobLock(self.engine, "storage-statistics")
        try:
            while True:
                try:
                    if await statistics.held():
                        await refresh_statistics(self.engine, analyzed)
                    while await sum_settled_hours(self.engine, quiet):
                        pass
                except Exception:
                    log.exception("storage maintenance failed")
                await asyncio.sleep(min(max(quiet / 3, 0.5), 10))
        finally:
            await statistics.release()

    async def _run_replays(self) -> None:
        """Run the replay runs started through the API (queued, or left running by a process that stopped),
        one process per run (a :class:`JobLock` on PostgreSQL)."""
        running: dict[int, asyncio.Task[str]] = {}
        while True:
            await asyncio.sleep(1)
            try:
                for run_id in await replay_store.runs_to_run(self.engine):
                    if run_id in running:
                        continue
                    lock = JobLock(self.engine, f"replay-run/{run_id}")
                    if await lock.held():
                        running[run_id] = asyncio.create_task(self._run_replay(run_id, lock))
                for run_id in [r for r, task in running.items() if task.done()]:
                    del running[run_id]
            except Exception:
                log.exception("starting replay runs failed")

    async def _run_replay(self, run_id: int, lock: JobLock) -> str:
        try:
            return await self.replay.run(run_id)
        except Exception as exc:
            log.exception("replay run %d failed", run_id)
            await replay_store.set_state(self.engine, run_id, "failed", str(exc)[:500])
            return "failed"
        finally:
            await lock.release()

    def _start_task(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=f"lumina-{name}")
        self._tasks.append(task)
        return task

    async def start(self) -> None:
        """Migrate, connect the queue, and start what this process's roles run (``server.roles``): the
        worker role stores spans and runs the background jobs, intake serves gRPC; the HTTP routes of each
        role are in :meth:`asgi_app`. Jobs that must run once across processes take a :class:`JobLock`."""
        server = self.settings.server
        await migrate(self.engine)
        await self._refuse_open_on_network()
        await self.reload_custom_prices()
        await self.alerts.load_rules()
        await self.queue.start()
        self._start_task(self._refresh_custom_prices(), "price-refresh")
        if server.runs("worker"):
            self._worker_task = self._start_task(self.worker.run(), "worker")
            self._start_task(self._maintain_storage(), "storage-maintenance")
            self._start_task(self._run_replays(), "replay")
            if self.tail_sampling.samplers:
                self._start_task(self.tail_sampling.run(), "tail-sampling")
            if self.settings.retention.enabled:
                self._start_task(self.retention.run(), "retention")
            if self.settings.alerts.enabled:
                self._start_task(self.alerts.run(), "alerts")
                self._start_task(self.outbox.run(), "alert-delivery")
            if self.quality is not None:
                self._start_task(self.quality.run(), "quality")
                if self.quality.deferred:
                    self._start_task(self.quality.run_deferred(), "quality-deferred")
        if server.runs("intake") and server.otlp_grpc_port is not None:
            self.grpc_server, self.grpc_port = create_grpc_server(
                self.intake, server.host, server.otlp_grpc_port, server.max_decompressed_bytes
            )
            await self.grpc_server.start()
        log.info(
            "Lumina started (%s): database %s, OTLP/gRPC port %s",
            ", ".join(server.roles),
            self.engine.url.render_as_string(),
            self.grpc_port,
        )

    async def _refuse_open_on_network(self) -> None:
        server = self.settings.server
        if is_loopback(server.host) or server.insecure or await self.auth.keys_exist():
            return
        message = (
            f"refusing to serve on {server.host} without API keys: anyone who can reach it could read and write "
            "every project. Create a key first (lumina keys create --project default --scope admin), "
            "or start with --insecure (server.insecure = true) if a proxy in front of Lumina authenticates."
        )
        log.error(message)
        raise ConfigError([("server.host", message)])

    async def stop(self) -> None:
        """Stop taking spans (gRPC), let the worker finish the batch it is storing and ack it, close the
        queue (what still waits in the in-process queue is refused: its clients retry), then the jobs."""
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace=5)
        if self._worker_task is not None:
            await self._finish(self._worker_task)
        await self.queue.stop()
        for task in self._tasks:
            await self._finish(task)
        await self.engine.dispose()

    @staticmethod
    async def _finish(task: asyncio.Task[None]) -> None:
        task.cancel()
        [outcome] = await asyncio.gather(task, return_exceptions=True)
        if isinstance(outcome, Exception):
            log.error("%s had failed: %r", task.get_name(), outcome)

    async def readiness(self) -> dict[str, dict[str, Any]]:
        """What ``/-/ready`` reports: the database and the queue, and the worker's jobs where it runs. An
        intake-only process stays ready without the database: it goes on taking spans into a broker queue
        (keys it checked recently still pass), so a load balancer should keep sending to it."""
        server = self.settings.server
        checks: dict[str, dict[str, Any]] = {}
        try:
            await queries.ping(self.engine)
            checks["database"] = {"ok": True}
        except Exception as exc:
            needed = server.runs("worker") or server.runs("api")
            checks["database"] = {"ok": not needed, "reachable": False, "error": str(exc)}
        queue = self.queue.status()
        checks["queue"] = {k: v for k, v in dataclasses.asdict(queue).items() if v is not None}
        if not server.runs("worker"):
            return checks
        worker_alive = self._worker_task is not None and not self._worker_task.done()
        checks["worker"] = {"ok": worker_alive, "spans_stored": self.worker.spans_stored}
        if self.settings.alerts.enabled:
            try:
                checks["alerts"] = {"ok": True, "notifications": await self.outbox.backlog()}
            except Exception as exc:
                checks["alerts"] = {"ok": False, "error": str(exc)}
        if self.quality is not None:
            q = self.quality
            checks["quality"] = {"ok": True, "waiting_calls": q.pending(), "checked": q.checked, "skipped": q.skipped}
        return checks

    def asgi_app(self, otlp_http_port: int | None = None) -> ASGIApp:
        """The ASGI app for the main port; ``otlp_http_port`` is the bound OTLP/HTTP port, if any."""
        from lumina_web import routes as web_routes

        server = self.settings.server
        otlp = otlp_http_endpoint(self.intake, server.max_request_bytes, server.max_decompressed_bytes)

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        routes = operator.routes(self)
        if server.runs("intake"):
            routes.append(Route(OTLP_PATH, otlp, methods=["POST"]))
        if server.runs("api"):
            routes += [*api.routes(self), *web_routes(self)]
        app = Starlette(
            routes=routes,
            lifespan=lifespan,
            exception_handlers={api.ApiError: api.handle_api_error, HTTPException: api.handle_http_exception},
        )
        return OtlpPortOnly(app, otlp_http_port)


class OtlpPortOnly:
    """On the dedicated OTLP/HTTP port only ``/v1/traces`` is served; the main port serves everything."""

    def __init__(self, app: ASGIApp, otlp_port: int | None) -> None:
        self.app = app
        self.otlp_port = otlp_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and self.otlp_port
            and scope.get("server")
            and scope["server"][1] == self.otlp_port
            and scope["path"] != OTLP_PATH
        ):
            response = api.error_response(404, "not_found", f"this port serves only {OTLP_PATH}")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
