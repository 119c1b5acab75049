"""What every dashboard page shares: who is looking (API key cookie or open mode), which project and time
range, the navigation, and rendering with a strict Content-Security-Policy and a ``Server-Timing`` header."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from lumina_core.api import PROJECT_PARAM, ApiError, Param, choice_param, parse_query, parse_time
from lumina_core.auth import Access, AuthError, InvalidProjectId, Unauthenticated, key_from_headers
from lumina_core.plugin_api import NavItem
from lumina_core.storage.projects import list_projects
from lumina_web import format as fmt

if TYPE_CHECKING:
    from lumina_core.app import Lumina

HERE = Path(__file__).parent
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
KEY_COOKIE = "lumina_key"
RANGES = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
DEFAULT_RANGE = "24h"
PAGES = (
    ("Overview", "/"),
    ("Traces", "/traces"),
    ("Quality", "/quality"),
    ("Alerts", "/alerts"),
    ("Models & pricing", "/models"),
    ("Replay", "/replay"),
    ("Queue", "/queue"),
    ("Settings", "/settings"),
)

templates = Jinja2Templates(directory=str(HERE / "templates"))
for name in ("cost", "count", "ms", "when", "ago", "pct", "tokens"):
    templates.env.filters[name] = getattr(fmt, name)


class PageError(Exception):
    """Shown to the user as a page with ``status`` (a bad filter, a missing trace …)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TimeRange:
    """The range a page covers: a preset (``range=24h``) ending now, or a custom ``start``/``end``."""

    start_ns: int
    end_ns: int
    preset: str | None

    @property
    def bucket(self) -> str:
        """The chart bucket that gives a readable number of points."""
        seconds = (self.end_ns - self.start_ns) / 1e9
        return "minute" if seconds <= 6 * 3600 else "hour" if seconds <= 8 * 86400 else "day"


def _dashboard_time(value: str) -> int:
    # <input type="datetime-local"> sends no zone; the dashboard shows UTC, so read it as UTC
    if "T" in value and not value.endswith(("Z", "z")) and "+" not in value[10:] and "-" not in value[10:]:
        value += "Z"
    return parse_time(value)


RANGE_NAMES = ("range", "start", "end")
FRAME_PARAMS = ("project", *RANGE_NAMES)
"""Query parameters that every page keeps when you move between pages."""
RANGE_PARAMS: tuple[Param, ...] = (
    choice_param("range", "time range ending now", tuple(RANGES)),
    Param("start", "custom range start (UTC)", {}, _dashboard_time),
    Param("end", "custom range end (UTC)", {}, _dashboard_time),
)


def time_range(args: dict[str, Any]) -> TimeRange:
    now = time.time_ns()
    if args.get("start") is not None or args.get("end") is not None:
        end = args.get("end") or now
        start = args.get("start") or end - RANGES[DEFAULT_RANGE] * 10**9
        if start >= end:
            raise PageError(400, "the range must start before it ends")
        return TimeRange(start, end, None)
    preset = args.get("range") or DEFAULT_RANGE
    return TimeRange(now - RANGES[preset] * 10**9, now, preset)


class Dashboard:
    """The dashboard of one Lumina: access checks, the frame around pages, and rendering."""

    def __init__(self, lumina: Lumina) -> None:
        self.lumina = lumina
        self.nav_items: list[NavItem] = lumina.plugins.nav_items
        self.span_panels = lumina.plugins.span_panels

    async def access(self, request: Request, scope: str = "read") -> Access:
        key = key_from_headers(request.headers.get) or request.cookies.get(KEY_COOKIE)
        try:
            return await self.lumina.auth.access(key, scope, request.query_params.get("project") or None)
        except InvalidProjectId as exc:
            raise PageError(400, str(exc)) from None

    def args(self, request: Request, params: tuple[Param, ...]) -> dict[str, Any]:
        """The page's query parameters: the API's own names and rules, plus the frame's."""
        given = [(k, v) for k, v in request.query_params.multi_items() if v != ""]  # an empty field means "any"
        try:
            return parse_query(given, (*RANGE_PARAMS, *params, PROJECT_PARAM))
        except ApiError as exc:
            raise PageError(400, exc.message) from None

    async def render(
        self, request: Request, access: Access | None, name: str, context: dict[str, Any], status: int = 200
    ) -> Response:
        frame_query = {k: v for k in FRAME_PARAMS if (v := request.query_params.get(k))}
        projects: list[str] = []
        if access is not None:
            open_mode = access.key_id is None
            projects = [p["id"] for p in await list_projects(self.lumina.engine)] if open_mode else []
            if access.project_id not in projects:
                projects.append(access.project_id)
        carried = [(k, v) for k, v in request.query_params.multi_items() if k not in (*RANGE_NAMES, "cursor")]
        context = {
            "access": access,
            "carried": carried,
            "range_links": [
                (preset, link(request.url.path, {**_grouped(carried), "range": preset})) for preset in RANGES
            ],
            "projects": sorted(projects),
            "pages": PAGES,
            "nav_items": self.nav_items,
            "frame_query": frame_query,
            "keep": lambda path, **extra: link(path, {**frame_query, **extra}),
            "logged_in": KEY_COOKIE in request.cookies,
            **context,
        }
        response = templates.TemplateResponse(request, name, context, status_code=status)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        return response


def _grouped(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for k, v in pairs:
        grouped.setdefault(k, []).append(v)
    return grouped


def link(path: str, query: dict[str, Any]) -> str:
    """``path`` with the query parameters that have a value (lists repeat the parameter)."""
    pairs = [
        (k, item)
        for k, v in query.items()
        for item in (v if isinstance(v, list | tuple) else [v])
        if item not in (None, "")
    ]
    return f"{path}?{urlencode(pairs)}" if pairs else path


Handler = Callable[[Request, Access], Awaitable[Response]]


def page(dash: Dashboard, handler: Handler, scope: str = "read") -> Callable[[Request], Awaitable[Response]]:
    """A page endpoint: access check (to the login page without a key), errors as pages, server timing."""

    async def endpoint(request: Request) -> Response:
        began = time.perf_counter()
        access: Access | None = None
        try:
            access = await dash.access(request, scope)
            response = await handler(request, access)
        except Unauthenticated:
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(link("/login", {"next": here}), 303)
        except AuthError as exc:
            response = await dash.render(request, access, "message.html", {"message": str(exc)}, exc.status)
        except PageError as exc:
            response = await dash.render(request, access, "message.html", {"message": str(exc)}, exc.status)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - began) * 1000:.1f}"
        return response

    return endpoint


def same_origin(request: Request) -> bool:
    """A form post from this dashboard (the browser says where it came from), not from another site."""
    if request.headers.get("sec-fetch-site") not in (None, "same-origin"):
        return False
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.url.netloc}"
