"""``/api/v1/keys`` (admin scope): create, list and revoke a project's API keys; ``/api/v1/projects``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from lumina_core.api import ApiError, Operation, json_response, read_body
from lumina_core.api import schemas as s
from lumina_core.auth import Access, new_key
from lumina_core.storage import projects

if TYPE_CHECKING:
    from lumina_core.app import Lumina


class KeyRequest(BaseModel):
    """A new key for the caller's project."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=200, description="what the key is for")
    scopes: list[Literal["ingest", "read", "admin"]] = Field(min_length=1)


def operations(lumina: Lumina) -> list[Operation]:
    async def list_keys(request: Request, access: Access, args: dict[str, Any]) -> Response:
        return json_response({"data": await projects.list_keys(lumina.engine, access.project_id)})

    async def create_key(request: Request, access: Access, args: dict[str, Any]) -> Response:
        body = await read_body(request, KeyRequest)
        key = new_key()
        scopes = list(dict.fromkeys(body.scopes))
        row = await projects.create_key(lumina.engine, access.project_id, body.name, scopes, key.key_hash, key.prefix)
        return json_response({**row, "key": key.secret}, 201)

    async def revoke_key(request: Request, access: Access, args: dict[str, Any]) -> Response:
        raw_id = request.path_params["key_id"]
        revoked = raw_id.isascii() and raw_id.isdecimal() and len(raw_id) <= 9
        if not (revoked and await projects.revoke_key(lumina.engine, int(raw_id), access.project_id)):
            raise ApiError(404, "not_found", f"no live key {raw_id} in project {access.project_id}")
        return Response(status_code=204)

    async def list_projects(request: Request, access: Access, args: dict[str, Any]) -> Response:
        rows = await projects.list_projects(lumina.engine)
        if access.key_id is not None:  # a key sees its own project only
            rows = [row for row in rows if row["id"] == access.project_id]
        return json_response({"data": rows})

    return [
        Operation("GET", "/api/v1/keys", "The project's API keys", list_keys, s.listing(s.KEY), "admin", tag="keys"),
        Operation(
            "POST",
            "/api/v1/keys",
            "Create an API key (its secret is in this response only)",
            create_key,
            s.NEW_KEY,
            "admin",
            status=201,
            body=KeyRequest.model_json_schema(),
            tag="keys",
            errors=(400, 401, 403, 422),
        ),
        Operation(
            "DELETE",
            "/api/v1/keys/{key_id}",
            "Revoke an API key (at once, in every process)",
            revoke_key,
            {},
            "admin",
            status=204,
            tag="keys",
            errors=(401, 403, 404),
        ),
        Operation("GET", "/api/v1/projects", "Projects visible to the caller", list_projects, s.listing(s.PROJECT)),
    ]
