"""Models and pricing: the models called with their usage and cost, the unpriced ones, and the custom
price editor (add, edit, delete, quote) over the same operations as ``/api/v1/pricing``."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from lumina_core.api import int_param, row_id
from lumina_core.api.pricing import QUOTE_PARAMS, custom_prices, quote
from lumina_core.auth import Access
from lumina_core.config import CustomPriceSettings
from lumina_core.plugin_api import TOKEN_BUCKETS
from lumina_core.storage import analytics
from lumina_core.storage.filters import SpanFilter
from lumina_web.frame import Dashboard, PageError, link, same_origin, time_range

PRICE_FORM_FIELDS = ("model", "match", "provider", *TOKEN_BUCKETS, "effective_from")
QUOTE_FORM = tuple(replace(p, name=f"quote_{p.name}", required=False) for p in QUOTE_PARAMS)
EDIT_PARAM = int_param("edit", "custom price to edit", 1, 999_999_999)


def _quote_args(args: dict[str, Any]) -> dict[str, Any] | None:
    if not args["quote_model"]:
        return None
    return {p.name: args[f"quote_{p.name}"] for p in QUOTE_PARAMS}


def models_page(dash: Dashboard) -> Any:
    async def handler(request: Request, access: Access) -> Response:
        return await render_models(dash, request, access)

    return handler


async def render_models(
    dash: Dashboard, request: Request, access: Access, form: dict[str, Any] | None = None, error: str | None = None
) -> Response:
    """The page; after a refused edit, with the form as sent and what was wrong with it (422)."""
    lumina = dash.lumina
    engine, cache = lumina.engine, lumina.cache
    args = dash.args(request, (EDIT_PARAM, *QUOTE_FORM))
    when = time_range(args)
    project = access.project_id
    flt = SpanFilter(start_ns=when.start_ns, end_ns=when.end_ns, llm=True)
    seen = await cache.get(project, ("models",), lambda: analytics.models(engine, project))
    usage = await cache.get(
        project,
        ("analytics", flt, "model", None, True),
        lambda: analytics.aggregate(engine, project, flt, "model", None, True),
    )
    by_model = {row["group"]: row for row in usage}
    models = [{**row, "usage": by_model.get(row["model"])} for row in seen]
    models.sort(key=lambda m: -((m["usage"] or {}).get("cost_usd") or 0))
    unpriced = await cache.get(
        project, ("unpriced",), lambda: analytics.models(engine, project, pricing_status="unpriced")
    )
    prices = await custom_prices(lumina)
    stored = [p for p in prices if p["source"] == "api"]
    editing = next((p for p in stored if p["id"] == args["edit"]), None)
    quote_args = _quote_args(args)
    context = {
        "when": when,
        "models": models,
        "unpriced": unpriced,
        "prices": prices,
        "form": form if form is not None else editing or {},
        "quote": quote(lumina, quote_args) if quote_args else None,
        "quote_args": args,
        "buckets": TOKEN_BUCKETS,
        "can_edit": "admin" in access.scopes,
        "error": error,
    }
    return await dash.render(request, access, "models.html", context, 422 if error else 200)


def price_edits(dash: Dashboard) -> Any:
    """``POST /models/prices`` (add), ``/models/prices/{id}`` (replace) and ``/models/prices/{id}/delete``."""
    lumina = dash.lumina

    async def handler(request: Request, access: Access) -> Response:
        if not same_origin(request):
            raise PageError(403, "this form can only be sent from the Lumina dashboard itself")
        raw_id = request.path_params.get("price_id")
        price_id = row_id(raw_id) if raw_id is not None else None
        back = {"project": request.query_params.get("project")}
        if raw_id is not None and price_id is None:
            raise PageError(404, f"custom price {raw_id} not found")
        if request.url.path.endswith("/delete"):
            assert price_id is not None
            if not await lumina.delete_custom_price(price_id):
                raise PageError(404, f"custom price {raw_id} not found")
            return RedirectResponse(link("/models", back), 303)
        form = await request.form()
        values = {k: v for k in PRICE_FORM_FIELDS if isinstance(v := form.get(k), str) and v.strip() != ""}
        try:
            price = CustomPriceSettings.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'price'}: {e['msg']}" for e in exc.errors())
            return await render_models(dash, request, access, {**values, "id": price_id}, problems)
        if price_id is None:
            await lumina.add_custom_price(price)
        elif await lumina.update_custom_price(price_id, price) is None:
            raise PageError(404, f"custom price {raw_id} not found")
        return RedirectResponse(link("/models", back) + "#prices", 303)

    return handler
