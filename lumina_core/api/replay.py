"""``/api/v1/replay``: replay sets (frozen LLM calls), runs of a set with overrides (run by the worker
processes), their progress, per-item comparison with a text diff, a summary, and two runs side by side."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from lumina_core.api import ApiError, Operation, int_param, json_response, read_body, row_id
from lumina_core.api import schemas as s
from lumina_core.auth import Access
from lumina_core.replay import store
from lumina_core.replay.store import ReplayLimits, ReplayOverrides, ReplaySelection

if TYPE_CHECKING:
    from lumina_core.app import Lumina

OBJECT = {"type": "object"}
SET = s.obj(
    {
        "id": s.INTEGER,
        "project_id": s.STRING,
        "name": s.STRING,
        "description": s.STRING,
        "selection": OBJECT,
        "item_count": s.INTEGER,
        "created_unix_nano": s.INTEGER,
    }
)
RUN = s.obj(
    {
        "id": s.INTEGER,
        "project_id": s.STRING,
        "set_id": s.INTEGER,
        "overrides": OBJECT,
        "limits": OBJECT,
        "state": s.STRING,
        "runner": s.STRING,
        "item_count": s.INTEGER,
        "created_unix_nano": s.INTEGER,
        "finished_unix_nano": s.nullable(s.INTEGER),
        "error": s.nullable(s.STRING),
    },
    required=False,
)
RUN_DETAIL = s.obj({"run": RUN, "summary": OBJECT, "items": {"type": "array", "items": OBJECT}})


class NewSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=2000)
    selection: ReplaySelection = Field(default_factory=ReplaySelection)


class NewRun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    set_id: int = Field(ge=1)
    overrides: ReplayOverrides = Field(default_factory=ReplayOverrides)
    limits: ReplayLimits = Field(default_factory=ReplayLimits)


def diff(original: str | None, replayed: str | None) -> str:
    lines = difflib.unified_diff(
        (original or "").splitlines(), (replayed or "").splitlines(), "original", "replay", lineterm=""
    )
    return "\n".join(lines)


async def run_detail(lumina: Lumina, run: dict[str, Any]) -> dict[str, Any]:
    """A run with its summary and every item: the original, the replay and their diff."""
    compared = await store.results(lumina.engine, run)
    items = [
        {**c, "diff": diff(c["original"]["output_text"], c["replay"]["output_text"]) if c["replay"] else None}
        for c in compared
    ]
    return {"run": run, "summary": store.summary(run, compared), "items": items}


def operations(lumina: Lumina) -> list[Operation]:
    engine = lumina.engine

    async def found_run(request: Request, access: Access, name: str = "run_id") -> dict[str, Any]:
        raw = request.path_params.get(name) or request.query_params.get(name, "")
        run_id = row_id(raw)
        run = await store.get_run(engine, run_id, access.project_id) if run_id is not None else None
        if run is None:
            raise ApiError(404, "not_found", f"no replay run {raw} in project {access.project_id}")
        return run

    async def create_set(request: Request, access: Access, args: dict[str, Any]) -> Response:
        body = await read_body(request, NewSet)
        created = await store.create_set(engine, access.project_id, body.name, body.selection, body.description)
        return json_response(created, 201)

    async def list_sets(request: Request, access: Access, args: dict[str, Any]) -> Response:
        return json_response({"data": await store.list_sets(engine, access.project_id)})

    async def get_set(request: Request, access: Access, args: dict[str, Any]) -> Response:
        set_id = row_id(request.path_params["set_id"])
        found = await store.get_set(engine, access.project_id, set_id) if set_id is not None else None
        if found is None:
            raise ApiError(404, "not_found", f"no replay set {request.path_params['set_id']}")
        return json_response({**found, "items": await store.set_items(engine, found["id"])})

    async def start_run(request: Request, access: Access, args: dict[str, Any]) -> Response:
        body = await read_body(request, NewRun)
        found = await store.get_set(engine, access.project_id, body.set_id)
        if found is None:
            raise ApiError(404, "not_found", f"no replay set {body.set_id} in project {access.project_id}")
        run = await store.create_run(engine, access.project_id, found, body.overrides, body.limits, "server")
        return json_response(run, 201)

    async def list_runs(request: Request, access: Access, args: dict[str, Any]) -> Response:
        return json_response({"data": await store.list_runs(engine, access.project_id, args["set_id"])})

    async def get_run(request: Request, access: Access, args: dict[str, Any]) -> Response:
        return json_response(await run_detail(lumina, await found_run(request, access)))

    async def cancel(request: Request, access: Access, args: dict[str, Any]) -> Response:
        run = await found_run(request, access)
        if not await store.cancel_run(engine, access.project_id, run["id"]):
            raise ApiError(409, "not_running", f"replay run {run['id']} is {run['state']}")
        return json_response(await store.get_run(engine, run["id"]))

    async def compare(request: Request, access: Access, args: dict[str, Any]) -> Response:
        a, b = await found_run(request, access, "a"), await found_run(request, access, "b")
        if a["set_id"] != b["set_id"]:
            raise ApiError(400, "different_sets", "runs of different sets cannot be compared item by item")
        left, right = await run_detail(lumina, a), await run_detail(lumina, b)
        items = [
            {"original": x["original"], "a": x["replay"], "b": y["replay"]}
            for x, y in zip(left["items"], right["items"], strict=True)
        ]
        return json_response({"a": left["summary"], "b": right["summary"], "items": items})

    set_id = int_param("set_id", "only runs of this set", 1, 2**31 - 1)
    run_param = int_param("a", "a run", 1, 2**31 - 1)
    other = int_param("b", "the run to compare it with", 1, 2**31 - 1)
    return [
        Operation(
            "POST",
            "/api/v1/replay/sets",
            "Freeze LLM calls (by span ids or filters) as a replay set",
            create_set,
            SET,
            "admin",
            status=201,
            body=NewSet.model_json_schema(),
            tag="replay",
            errors=(400, 401, 403, 413, 422),
        ),
        Operation("GET", "/api/v1/replay/sets", "Replay sets", list_sets, s.listing(SET), tag="replay"),
        Operation(
            "GET",
            "/api/v1/replay/sets/{set_id}",
            "A replay set with its calls",
            get_set,
            OBJECT,
            tag="replay",
            errors=(400, 401, 403, 404),
        ),
        Operation(
            "POST",
            "/api/v1/replay/runs",
            "Run a set again with overrides (model, provider, parameters, prompts); the worker processes run it",
            start_run,
            RUN,
            "admin",
            status=201,
            body=NewRun.model_json_schema(),
            tag="replay",
            errors=(400, 401, 403, 404, 413, 422),
        ),
        Operation(
            "GET",
            "/api/v1/replay/runs",
            "Replay runs with progress",
            list_runs,
            s.listing(RUN),
            params=(set_id,),
            tag="replay",
        ),
        Operation(
            "GET",
            "/api/v1/replay/runs/{run_id}",
            "A run: summary, and each call's original and replay with a diff",
            get_run,
            RUN_DETAIL,
            tag="replay",
            errors=(400, 401, 403, 404),
        ),
        Operation(
            "POST",
            "/api/v1/replay/runs/{run_id}/cancel",
            "Stop a run: no new call is sent",
            cancel,
            RUN,
            "admin",
            tag="replay",
            errors=(400, 401, 403, 404, 409),
        ),
        Operation(
            "GET",
            "/api/v1/replay/compare",
            "Two runs of one set side by side",
            compare,
            OBJECT,
            params=(run_param, other),
            tag="replay",
            errors=(400, 401, 403, 404),
        ),
    ]
