"""The OpenAPI 3.1 document of ``/api/v1``, written from the same :class:`Operation` declarations that
serve the requests, so it cannot drift from them."""

from __future__ import annotations

import re
from importlib.metadata import version
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lumina_core.api import PROJECT_PARAM, Operation, json_response
from lumina_core.api.schemas import COMPONENTS, ERROR

PATH_PARAM = re.compile(r"{(\w+)}")
ERROR_TEXT = {
    400: "invalid parameter",
    401: "no API key, or an unknown or revoked one",
    403: "the key lacks the scope, or belongs to another project",
    404: "not found (or in another project)",
    413: "body too large",
    422: "invalid body",
}
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "an API key: Authorization: Bearer lum_…"},
    "header": {"type": "apiKey", "in": "header", "name": "x-lumina-api-key"},
}


def _operation(op: Operation) -> dict[str, Any]:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in PATH_PARAM.findall(op.path)
    ]
    for param in (PROJECT_PARAM, *op.params):
        schema = {"type": "array", "items": param.schema} if param.repeated else param.schema
        entry = {"name": param.name, "in": "query", "required": param.required, "description": param.description}
        parameters.append({**entry, "schema": schema, **({"explode": True} if param.repeated else {})})
    error = {"content": {"application/json": {"schema": ERROR}}}
    responses: dict[str, Any] = {
        str(code): {"description": ERROR_TEXT.get(code, "error"), **error} for code in sorted({*op.errors, 400})
    }
    if op.status == 204:
        responses["204"] = {"description": "done"}
    else:
        responses[str(op.status)] = {
            "description": op.summary,
            "content": {"application/json": {"schema": op.response}},
        }
    out: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{op.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', op.path.lower()).strip('_')}",
        "tags": [op.tag] if op.tag else [],
        "parameters": parameters,
        "responses": responses,
        "x-lumina-scope": op.scope,
    }
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": op.body}}}
    return out


def document(operations: list[Operation]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Lumina API",
            "version": version("lumina"),
            "description": "Traces, spans, analytics and pricing of LLM applications. Errors are "
            '{"error": {"code", "message"}}. Lists page with next_cursor.',
        },
        "servers": [{"url": "/"}],
        "components": {"schemas": COMPONENTS, "securitySchemes": SECURITY_SCHEMES},
        "security": [{"bearer": []}, {"header": []}, {}],
        "paths": paths,
    }


def routes(operations: list[Operation]) -> list[Route]:
    doc = document(operations)

    async def openapi(request: Request) -> Response:
        return json_response(doc)

    return [Route("/api/v1/openapi.json", openapi, methods=["GET"])]
