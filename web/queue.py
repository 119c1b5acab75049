"""The Queue page: the queue's status and backlog, and (admin) its dead letters, each with re-drive and
discard over the same functions as ``/api/v1/queue/dead-letters``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from lumina_core.api import ApiError
from lumina_core.api.queue import act_on, letter_out, visible_letters
from lumina_core.auth import Access
from lumina_core.plugin_api import DeadLetterStore
from lumina_web.frame import Dashboard, PageError, link, same_origin

if TYPE_CHECKING:
    from lumina_core.app import Lumina

LISTED = 200


def queue_page(dash: Dashboard) -> Any:
    lumina = dash.lumina

    async def handler(request: Request, access: Access) -> Response:
        keeps = isinstance(lumina.queue, DeadLetterStore)
        can_act = "admin" in access.scopes
        letters: list[dict[str, Any]] = []
        error = None
        if keeps and can_act:
            try:
                letters = [letter_out(letter) for letter in await visible_letters(lumina, access, LISTED)]
            except ApiError as exc:
                error = exc.message
        context = {
            "queue_type": lumina.settings.queue.type,
            "status": lumina.queue.status(),
            "keeps": keeps,
            "can_act": can_act,
            "letters": letters,
            "letters_error": error,
            "done": request.query_params.get("done"),
        }
        return await dash.render(request, access, "queue.html", context)

    return handler


def dead_letter_actions(dash: Dashboard) -> Any:
    """``POST /queue/dead-letters/redrive`` and ``…/discard`` with the ids ticked (or one row's id)."""
    lumina: Lumina = dash.lumina

    async def handler(request: Request, access: Access) -> Response:
        if not same_origin(request):
            raise PageError(403, "this form can only be sent from the Lumina dashboard itself")
        ids = [str(i) for i in (await request.form()).getlist("id")]
        if not ids:
            raise PageError(400, "tick at least one dead letter")
        redrive = request.url.path.endswith("/redrive")
        try:
            count = await act_on(lumina, access, ids, redrive=redrive)
        except ApiError as exc:
            raise PageError(exc.status, exc.message) from None
        done = f"{count} {'put back on the queue' if redrive else 'discarded'}"
        return RedirectResponse(link("/queue", {"project": request.query_params.get("project"), "done": done}), 303)

    return handler
