"""``/api/v1/pricing``: custom prices (create, list, delete), unpriced models, and price quotes."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lumina_core.api import ApiError, int_param, json_response, time_param
from lumina_core.config import CustomPriceSettings
from lumina_core.intake.export import DEFAULT_PROJECT
from lumina_core.plugin_api import TOKEN_BUCKETS
from lumina_core.pricing import price_call
from lumina_core.storage import queries
from lumina_core.storage.prices import add_custom_price, delete_custom_price, list_custom_prices
from lumina_core.storage.queries import iso

if TYPE_CHECKING:
    from lumina_core.app import Lumina

MAX_TOKENS = 10**12


def _price_out(row: dict[str, Any], source: str) -> dict[str, Any]:
    effective = row.get("effective_from_unix_nano")
    return {
        "id": row.get("id"),
        "source": source,
        **{k: row.get(k) for k in ("model", "match", "provider", *TOKEN_BUCKETS)},
        "effective_from": iso(effective) if effective is not None else None,
    }


def routes(lumina: Lumina) -> list[Route]:
    async def list_custom(request: Request) -> Response:
        from_config = [_price_out(p.as_values(), "config") for p in lumina.settings.pricing.custom]
        stored = [_price_out(row, "api") for row in await list_custom_prices(lumina.engine)]
        return json_response({"data": from_config + stored})

    async def create_custom(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
            price = CustomPriceSettings.model_validate(body)
        except orjson.JSONDecodeError:
            raise ApiError(400, "invalid_body", "the body must be a JSON object") from None
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            raise ApiError(422, "invalid_price", problems) from None
        row = await add_custom_price(lumina.engine, price.as_values())
        await lumina.reload_custom_prices()
        return json_response(_price_out(row, "api"), 201)

    async def delete_custom(request: Request) -> Response:
        raw_id = request.path_params["price_id"]
        if not (raw_id.isascii() and raw_id.isdecimal() and len(raw_id) <= 9):
            raise ApiError(404, "not_found", f"custom price {raw_id} not found")
        price_id = int(raw_id)
        if not await delete_custom_price(lumina.engine, price_id):
            raise ApiError(404, "not_found", f"custom price {price_id} not found")
        await lumina.reload_custom_prices()
        return Response(status_code=204)

    async def unpriced(request: Request) -> Response:
        return json_response({"data": await queries.unpriced_models(lumina.engine, DEFAULT_PROJECT)})

    async def quote(request: Request) -> Response:
        model = request.query_params.get("model")
        if not model:
            raise ApiError(400, "invalid_parameter", "model is required")
        provider = (request.query_params.get("provider") or "").lower() or None
        at = time_param(request, "at") or time.time_ns()
        tokens: dict[str, int | None] = {}
        for bucket in TOKEN_BUCKETS:
            name = f"{bucket}_tokens"
            tokens[bucket] = int_param(request, name, 0, 0, MAX_TOKENS) if name in request.query_params else None
        rule = lumina.pricing.lookup(provider, model, at)
        if rule is None:
            return json_response(
                {
                    "model": model,
                    "provider": provider,
                    "pricing_status": "unpriced",
                    "cost_usd": None,
                    "source": None,
                    "rule": None,
                    "prices_per_mtok": None,
                }
            )
        applied, cost = price_call(rule, tokens)
        return json_response(
            {
                "model": model,
                "provider": provider,
                "pricing_status": "priced",
                "cost_usd": cost,
                "source": applied.source,
                "rule": applied.rule,
                "prices_per_mtok": {bucket: applied.per_mtok(bucket) for bucket in TOKEN_BUCKETS},
                "tokens": tokens,
            }
        )

    return [
        Route("/api/v1/pricing/custom", list_custom, methods=["GET"]),
        Route("/api/v1/pricing/custom", create_custom, methods=["POST"]),
        Route("/api/v1/pricing/custom/{price_id}", delete_custom, methods=["DELETE"]),
        Route("/api/v1/pricing/unpriced", unpriced, methods=["GET"]),
        Route("/api/v1/pricing/quote", quote, methods=["GET"]),
    ]
