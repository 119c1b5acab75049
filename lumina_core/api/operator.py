"""Operator pages under ``/-/`` (health, readiness, plugins) and ``/metrics`` for Prometheus."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lumina_core.api import json_response
from lumina_core.components import configured_instances

if TYPE_CHECKING:
    from lumina_core.app import Lumina


def routes(lumina: Lumina) -> list[Route]:
    async def health(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def ready(request: Request) -> Response:
        checks = await lumina.readiness()
        ok = all(check["ok"] for check in checks.values())
        return json_response({"status": "ready" if ok else "unavailable", "checks": checks}, 200 if ok else 503)

    async def plugins(request: Request) -> Response:
        infos = lumina.plugins.describe(configured_instances(lumina.settings))
        return json_response({"plugins": [info.as_dict() for info in infos]})

    async def metrics(request: Request) -> Response:
        lumina.metrics.show_queue(lumina.queue.status())
        return Response(lumina.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/-/health", health, methods=["GET"]),
        Route("/-/ready", ready, methods=["GET"]),
        Route("/-/plugins", plugins, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
