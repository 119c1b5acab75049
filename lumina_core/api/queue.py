"""``/api/v1/queue``: the queue's status, and its dead letters (batches it gave up on) to list, put back on
the queue or discard. A key sees its own project's dead letters and those whose project is unknown
(undecodable messages); open mode sees all."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from lumina_core.api import ApiError, Operation, int_param, json_response, read_body
from lumina_core.api import schemas as s
from lumina_core.auth import DEFAULT_PROJECT, Access
from lumina_core.plugin_api import DeadLetter, DeadLetterStore, QueueUnavailable

if TYPE_CHECKING:
    from lumina_core.app import Lumina

MAX_LISTED = 1000

STATUS = s.obj(
    {
        "type": s.STRING,
        "ok": s.BOOLEAN,
        "error": s.nullable(s.STRING),
        "waiting_spans": s.nullable(s.INTEGER),
        "waiting_batches": s.nullable(s.INTEGER),
        "keeps_dead_letters": s.BOOLEAN,
    }
)
DEAD_LETTER = s.obj(
    {
        "id": s.STRING,
        "reason": s.STRING,
        "failed_at": s.TIME,
        "deliveries": s.INTEGER,
        "size_bytes": s.INTEGER,
        "project_id": s.nullable(s.STRING),
        "spans": s.nullable(s.INTEGER),
    }
)


class DeadLetterIds(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[str] = Field(min_length=1, max_length=MAX_LISTED, description="dead letter ids, as listed")


def visible(letter: DeadLetter, access: Access) -> bool:
    """A project's keys see its own dead letters; a letter of no known project (a message that was never a
    Lumina batch) belongs to the operator, i.e. the default project. Without auth, everything is seen."""
    return access.key_id is None or (letter.project_id or DEFAULT_PROJECT) == access.project_id


def letter_out(letter: DeadLetter) -> dict[str, Any]:
    return {**dataclasses.asdict(letter), "failed_at": letter.failed_at.isoformat()}


def dead_letter_store(lumina: Lumina) -> DeadLetterStore:
    if not isinstance(lumina.queue, DeadLetterStore):
        queue_type = lumina.settings.queue.type
        raise ApiError(404, "no_dead_letters", f"the {queue_type!r} queue keeps no dead letters")
    return lumina.queue


async def visible_letters(lumina: Lumina, access: Access, limit: int = MAX_LISTED) -> list[DeadLetter]:
    try:
        letters = await dead_letter_store(lumina).dead_letters(MAX_LISTED)
    except QueueUnavailable as exc:
        raise ApiError(503, "queue_unavailable", str(exc), {"Retry-After": "2"}) from None
    return [letter for letter in letters if visible(letter, access)][:limit]


async def act_on(lumina: Lumina, access: Access, ids: list[str], redrive: bool) -> int:
    """Re-drive or discard those of ``ids`` the caller may see."""
    mine = {letter.id for letter in await visible_letters(lumina, access)}
    chosen = [i for i in dict.fromkeys(ids) if i in mine]
    store = dead_letter_store(lumina)
    try:
        return await (store.redrive(chosen) if redrive else store.discard(chosen))
    except QueueUnavailable as exc:
        raise ApiError(503, "queue_unavailable", str(exc), {"Retry-After": "2"}) from None


def operations(lumina: Lumina) -> list[Operation]:
    async def status(request: Request, access: Access, args: dict[str, Any]) -> Response:
        queue = lumina.queue.status()
        keeps = isinstance(lumina.queue, DeadLetterStore)
        body = {"type": lumina.settings.queue.type, **dataclasses.asdict(queue), "keeps_dead_letters": keeps}
        return json_response(body)

    async def list_dead_letters(request: Request, access: Access, args: dict[str, Any]) -> Response:
        letters = await visible_letters(lumina, access, args["limit"])
        return json_response({"data": [letter_out(letter) for letter in letters]})

    async def redrive(request: Request, access: Access, args: dict[str, Any]) -> Response:
        body = await read_body(request, DeadLetterIds)
        return json_response({"redriven": await act_on(lumina, access, body.ids, redrive=True)})

    async def discard(request: Request, access: Access, args: dict[str, Any]) -> Response:
        body = await read_body(request, DeadLetterIds)
        return json_response({"discarded": await act_on(lumina, access, body.ids, redrive=False)})

    limit = int_param("limit", "most dead letters to list, oldest first", 1, MAX_LISTED, 100)
    return [
        Operation("GET", "/api/v1/queue", "The queue's status and backlog", status, STATUS, tag="queue"),
        Operation(
            "GET",
            "/api/v1/queue/dead-letters",
            "Batches the queue gave up on (refused, undecodable or delivered too often), oldest first",
            list_dead_letters,
            s.listing(DEAD_LETTER),
            "admin",
            params=(limit,),
            tag="queue",
            errors=(400, 401, 403, 404, 503),
        ),
        Operation(
            "POST",
            "/api/v1/queue/dead-letters/redrive",
            "Put dead letters back on the queue (unknown ids are skipped)",
            redrive,
            s.obj({"redriven": s.INTEGER}),
            "admin",
            body=DeadLetterIds.model_json_schema(),
            tag="queue",
            errors=(400, 401, 403, 404, 413, 422, 503),
        ),
        Operation(
            "POST",
            "/api/v1/queue/dead-letters/discard",
            "Drop dead letters for good (unknown ids are skipped)",
            discard,
            s.obj({"discarded": s.INTEGER}),
            "admin",
            body=DeadLetterIds.model_json_schema(),
            tag="queue",
            errors=(400, 401, 403, 404, 413, 422, 503),
        ),
    ]
