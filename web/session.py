"""Signing in to the dashboard with an API key (``read`` scope or more), kept in an HttpOnly cookie."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from lumina_core.auth import AuthError
from lumina_web.frame import KEY_COOKIE, Dashboard, same_origin

MAX_KEY_LENGTH = 200
COOKIE_DAYS = 30


def _safe_next(value: Any) -> str:
    """Where to go after signing in: a path on this server, never another site (browsers drop tabs and
    newlines, so ``/\t/evil.example`` would become ``//evil.example``)."""
    if (
        isinstance(value, str)
        and value.startswith("/")
        and not value.startswith(("//", "/\\"))
        and not any(ch.isspace() or ord(ch) < 32 or ch == "\\" for ch in value)
    ):
        return value
    return "/"


def login(dash: Dashboard) -> Any:
    async def endpoint(request: Request) -> Response:
        target = _safe_next(request.query_params.get("next"))
        if request.method == "GET":
            needed = await dash.lumina.auth.keys_exist()
            return await dash.render(request, None, "login.html", {"next": target, "needed": needed})
        if not same_origin(request):
            return await dash.render(request, None, "login.html", {"next": "/", "error": "sign in from this page"}, 403)
        form = await request.form()
        key = form.get("key")
        target = _safe_next(form.get("next"))
        if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_LENGTH:
            return await dash.render(request, None, "login.html", {"next": target, "error": "enter an API key"}, 400)
        try:
            await dash.lumina.auth.access(key.strip(), "read")
        except AuthError as exc:
            context = {"next": target, "error": str(exc), "needed": True}
            return await dash.render(request, None, "login.html", context, exc.status)
        response = RedirectResponse(target, 303)
        response.set_cookie(
            KEY_COOKIE,
            key.strip(),
            max_age=COOKIE_DAYS * 86400,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    return endpoint


async def logout(request: Request) -> Response:
    if not same_origin(request):
        return Response("sign out from the dashboard itself", status_code=403)
    response = RedirectResponse("/login", 303)
    response.delete_cookie(KEY_COOKIE)
    return response
