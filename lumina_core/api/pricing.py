"""``/api/v1/pricing``: custom prices (create, list, replace, delete), unpriced models, and price quotes.

Custom prices apply to every project (they are prices, not data), so changing them takes an admin key.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from lumina_core.api import ApiError, Operation, json_response, read_body, row_id, text_param, time_param
from lumina_core.api import int_param as int_query
from lumina_core.api import schemas as s
from lumina_core.auth import Access
from lumina_core.config import CustomPriceSettings
from lumina_core.plugin_api import TOKEN_BUCKETS
from lumina_core.pricing import price_call
from lumina_core.storage import analytics
from lumina_core.storage.prices import list_custom_prices
from lumina_core.storage.queries import iso

if TYPE_CHECKING:
    from lumina_core.app import Lumina

MAX_TOKENS = 10**12
QUOTE_PARAMS = (
    replace(text_param("model", "model name, as on spans"), required=True),
    text_param("provider", "provider, e.g. openai"),
    time_param("at", "price in effect at this time (default: now)"),
    *(int_query(f"{bucket}_tokens", f"{bucket} tokens", 0, MAX_TOKENS) for bucket in TOKEN_BUCKETS),
)


def price_out(row: dict[str, Any], source: str) -> dict[str, Any]:
    effective = row.get("effective_from_unix_nano")
    return {
        "id": row.get("id"),
        "source": source,
        **{k: row.get(k) for k in ("model", "match", "provider", *TOKEN_BUCKETS)},
        "effective_from": iso(effective) if effective is not None else None,
    }


async def custom_prices(lumina: Lumina) -> list[dict[str, Any]]:
    """Every custom price: those of ``lumina.toml`` (``source`` config), then those added through the API."""
    from_config = [price_out(p.as_values(), "config") for p in lumina.settings.pricing.custom]
    return from_config + [price_out(row, "api") for row in await list_custom_prices(lumina.engine)]


def quote(lumina: Lumina, args: dict[str, Any]) -> dict[str, Any]:
    """The price of a hypothetical call (``QUOTE_PARAMS``, parsed), and the rule that prices it."""
    model = args["model"]
    provider = (args["provider"] or "").lower() or None
    tokens: dict[str, int | None] = {bucket: args[f"{bucket}_tokens"] for bucket in TOKEN_BUCKETS}
    rule = lumina.pricing.lookup(provider, model, args["at"] or time.time_ns())
    out: dict[str, Any] = {"model": model, "provider": provider, "tokens": tokens}
    if rule is None:
        out.update(pricing_status="unpriced", cost_usd=None, source=None, rule=None, prices_per_mtok=None)
        return out
    applied, cost = price_call(rule, tokens)
    out.update(
        pricing_status="priced",
        cost_usd=cost,
        source=applied.source,
        rule=applied.rule,
        prices_per_mtok={bucket: applied.per_mtok(bucket) for bucket in TOKEN_BUCKETS},
    )
    return out


def operations(lumina: Lumina) -> list[Operation]:
    async def list_custom(request: Request, access: Access, args: dict[str, Any]) -> Response:
        return json_response({"data": await custom_prices(lumina)})

    async def create_custom(request: Request, access: Access, args: dict[str, Any]) -> Response:
        row = await lumina.add_custom_price(await read_body(request, CustomPriceSettings))
        return json_response(price_out(row, "api"), 201)

    async def replace_custom(request: Request, access: Access, args: dict[str, Any]) -> Response:
        price_id = row_id(request.path_params["price_id"])
        price = await read_body(request, CustomPriceSettings)
        row = await lumina.update_custom_price(price_id, price) if price_id is not None else None
        if row is None:
            raise ApiError(404, "not_found", f"custom price {request.path_params['price_id']} not found")
        return json_response(price_out(row, "api"))

    async def delete_custom(request: Request, access: Access, args: dict[str, Any]) -> Response:
        price_id = row_id(request.path_params["price_id"])
        if price_id is None or not await lumina.delete_custom_price(price_id):
            raise ApiError(404, "not_found", f"custom price {request.path_params['price_id']} not found")
        return Response(status_code=204)

    async def unpriced(request: Request, access: Access, args: dict[str, Any]) -> Response:
        data = await lumina.cache.get(
            access.project_id,
            ("unpriced",),
            lambda: analytics.models(lumina.engine, access.project_id, pricing_status="unpriced"),
        )
        return json_response({"data": data})

    async def quote_endpoint(request: Request, access: Access, args: dict[str, Any]) -> Response:
        return json_response(quote(lumina, args))

    price_body = CustomPriceSettings.model_json_schema()
    return [
        Operation(
            "GET", "/api/v1/pricing/custom", "Custom prices", list_custom, s.listing(s.CUSTOM_PRICE), tag="pricing"
        ),
        Operation(
            "POST",
            "/api/v1/pricing/custom",
            "Add a custom price (applies to every project)",
            create_custom,
            s.CUSTOM_PRICE,
            "admin",
            status=201,
            body=price_body,
            tag="pricing",
            errors=(400, 401, 403, 422),
        ),
        Operation(
            "PUT",
            "/api/v1/pricing/custom/{price_id}",
            "Replace a custom price added through the API",
            replace_custom,
            s.CUSTOM_PRICE,
            "admin",
            body=price_body,
            tag="pricing",
            errors=(400, 401, 403, 404, 422),
        ),
        Operation(
            "DELETE",
            "/api/v1/pricing/custom/{price_id}",
            "Delete a custom price added through the API",
            delete_custom,
            {},
            "admin",
            status=204,
            tag="pricing",
            errors=(401, 403, 404),
        ),
        Operation(
            "GET",
            "/api/v1/pricing/unpriced",
            "Models no pricing rule knows",
            unpriced,
            s.listing(s.MODEL),
            tag="pricing",
        ),
        Operation(
            "GET",
            "/api/v1/pricing/quote",
            "Price a hypothetical call and name the rule",
            quote_endpoint,
            s.QUOTE,
            params=QUOTE_PARAMS,
            tag="pricing",
        ),
    ]
