"""The Replay pages: replay sets (frozen LLM calls) and runs of them with overrides, with their progress; a
run's summary and each call side by side with its original and a diff; and two runs of one set compared.
Over the same functions as ``/api/v1/replay`` (the server's workers run the runs started here)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from lumina_core.api import int_param, row_id, text_param
from lumina_core.api.replay import NewRun, NewSet, run_detail
from lumina_core.auth import Access
from lumina_core.replay import store
from lumina_core.storage import analytics
from lumina_web import format as fmt
from lumina_web.frame import Dashboard, PageError, link, same_origin

if TYPE_CHECKING:
    from lumina_core.app import Lumina

LIVE = ("queued", "running")
"""States in which a run's page reloads itself."""
REFRESH_SECONDS = 2
LISTED_RUNS = 100
ITEMS_PER_PAGE = 50
PROMPT_CHARS = 160
DONE_PARAM = text_param("done", "what the last form did", 500)
OFFSET_PARAM = int_param("offset", "the first call shown", 0, store.MAX_SET_ITEMS)
RUN_A = int_param("a", "a run", 1, 2**31 - 1)
RUN_B = int_param("b", "the run to compare it with", 1, 2**31 - 1)
SET_FIELDS = ("name", "service", "span_name", "model", "limit")
OVERRIDE_FIELDS = ("model", "provider", "temperature", "max_tokens", "system_prompt", "find", "replace")
LIMIT_FIELDS = ("concurrency", "requests_per_minute")
VERBATIM = ("system_prompt", "find", "replace")
"""Run fields whose spaces matter (a prompt, text to find and its replacement): not stripped."""
LABELS = {
    "set_id": "set",
    "span_name": "span name",
    "max_tokens": "max tokens",
    "top_p": "top p",
    "system_prompt": "system prompt",
    "requests_per_minute": "requests per minute",
    "tokens_per_minute": "tokens per minute",
}


# ---- presentation ----


def _label(key: Any) -> str:
    return LABELS.get(str(key), str(key))


def _short(text: str, chars: int = 40) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def selection_text(selection: dict[str, Any]) -> str:
    """What a set froze: ``service=support · model=gpt-4o · newest 200``."""
    parts = []
    if selection.get("spans") is not None:
        parts.append(f"{len(selection['spans'])} chosen calls")
    parts += [f"{_label(k)}={selection[k]}" for k in ("service", "span_name", "model", "provider") if selection.get(k)]
    if selection.get("start_ns") is not None:
        parts.append(f"from {fmt.when(selection['start_ns'])}")
    if selection.get("end_ns") is not None:
        parts.append(f"before {fmt.when(selection['end_ns'])}")
    parts.append(f"{'random' if selection.get('sample') else 'newest'} {selection.get('limit', 200)}")
    return " · ".join(parts)


def overrides_text(overrides: dict[str, Any]) -> str:
    """What a run changes: ``model → gpt-4o-mini, provider → anthropic``."""
    parts = [
        f"{_label(k)} → {overrides[k]}"
        for k in ("model", "provider", "temperature", "max_tokens", "top_p")
        if overrides.get(k) is not None
    ]
    if overrides.get("system_prompt") is not None:
        parts.append(f"system prompt → “{_short(overrides['system_prompt'])}”")
    if overrides.get("find"):
        parts.append(f"“{_short(overrides['find'], 24)}” → “{_short(overrides.get('replace', ''), 24)}”")
    if overrides.get("template"):
        parts.append("prompt template")
    if overrides.get("extra"):
        parts.append("extra: " + ", ".join(sorted(overrides["extra"])))
    return ", ".join(parts) or "no changes"


def limits_text(limits: dict[str, Any]) -> str:
    parts = [f"{limits.get('concurrency', 5)} at a time"]
    if limits.get("requests_per_minute"):
        parts.append(f"{limits['requests_per_minute']:g} requests/min")
    if limits.get("tokens_per_minute"):
        parts.append(f"{limits['tokens_per_minute']:g} tokens/min")
    parts.append(f"{limits.get('max_attempts', 5)} attempts of at most {limits.get('timeout_seconds', 60):g} s")
    return ", ".join(parts)


def change(pct: float | None) -> str:
    """A change in percent, signed (with a minus sign, not a hyphen): ``+12.5%``, ``\u221240.0%``."""
    return fmt.DASH if pct is None else f"{pct:+.1f}%".replace("-", "\u2212")


def similarity(value: float | None) -> str:
    return fmt.DASH if value is None else f"{value:.3f}"


def summary_view(summary: dict[str, Any]) -> dict[str, str]:
    """A run's summary as the pages write it."""
    return {
        "finished": f"{summary['finished']}/{summary['items']}",
        "errors": fmt.count(summary["errors"]),
        "identical": fmt.pct(summary["identical_share"]),
        "similarity": similarity(summary["mean_similarity"]),
        "original_cost": fmt.cost(summary["original_cost_usd"]),
        "cost": fmt.cost(summary["cost_usd"]),
        "cost_change": change(summary["cost_change_pct"]),
        "latency_change": change(summary["latency_change_pct"]),
        "p50": fmt.ms(summary["latency_p50_ms"]),
        "p95": fmt.ms(summary["latency_p95_ms"]),
    }


SUMMARY_ROWS = (
    ("finished", "Finished"),
    ("errors", "Errors"),
    ("identical", "Identical"),
    ("similarity", "Mean similarity"),
    ("original_cost", "Cost, original"),
    ("cost", "Cost, replay"),
    ("cost_change", "Cost change"),
    ("latency_change", "Latency change"),
    ("p50", "Latency p50"),
    ("p95", "Latency p95"),
)
"""The summary's lines, in the order the comparison lists them."""


def diff_lines(diff: str | None) -> list[tuple[str, str]]:
    """Each line of a unified diff with its class: file headers, hunks, removed, added and context lines."""
    lines = []
    for number, line in enumerate((diff or "").splitlines()):
        if number < 2 and line.startswith(("--- ", "+++ ")):
            kind = "d-file"
        elif line.startswith("@@"):
            kind = "d-hunk"
        elif line.startswith("+"):
            kind = "d-add"
        elif line.startswith("-"):
            kind = "d-del"
        else:
            kind = "d-ctx"
        lines.append((kind, line))
    return lines


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_text(part) for part in content)
    if isinstance(content, dict):
        return _text(content.get("text") or content.get("content") or "")
    return ""


def prompt_of(original: dict[str, Any]) -> str:
    """The last user message of a captured call, shortened: what the row is about."""
    users = [m for m in original.get("input_messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
    return _short(" ".join(_text(users[-1].get("content")).split()), PROMPT_CHARS) if users else ""


def item_view(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "prompt": prompt_of(item["original"]), "diff_lines": diff_lines(item.get("diff"))}


def run_view(run: dict[str, Any], set_names: dict[int, str]) -> dict[str, Any]:
    return {
        **run,
        "set_name": set_names.get(run["set_id"], f"set {run['set_id']}"),
        "overrides_text": overrides_text(run["overrides"]),
        "live": run["state"] in LIVE,
    }


def problems(exc: ValidationError) -> list[str]:
    return [f"{_label(e['loc'][-1]) if e['loc'] else 'form'}: {e['msg']}" for e in exc.errors()]


# ---- pages ----


def replay_page(dash: Dashboard) -> Any:
    async def handler(request: Request, access: Access) -> Response:
        return await render_replay(dash, request, access)

    return handler


async def render_replay(
    dash: Dashboard,
    request: Request,
    access: Access,
    set_form: dict[str, Any] | None = None,
    run_form: dict[str, Any] | None = None,
    errors: list[str] | None = None,
    status: int = 200,
) -> Response:
    """The list; after a refused form, with the form as sent and what was wrong with it."""
    lumina = dash.lumina
    engine, project = lumina.engine, access.project_id
    args = dash.args(request, (DONE_PARAM,))
    sets = await store.list_sets(engine, project)
    runs = await store.list_runs(engine, project)
    names = {s["id"]: s["name"] for s in sets}
    seen = await lumina.cache.get(project, ("models",), lambda: analytics.models(engine, project))
    context = {
        "sets": [{**s, "selection_text": selection_text(s["selection"])} for s in sets],
        "runs": [run_view(r, names) for r in runs[:LISTED_RUNS]],
        "more_runs": max(len(runs) - LISTED_RUNS, 0),
        "can_edit": "admin" in access.scopes,
        "set_form": set_form if set_form is not None else {"limit": "200"},
        "run_form": run_form if run_form is not None else {"concurrency": "5"},
        "set_errors": errors if set_form is not None else [],
        "run_errors": errors if run_form is not None else [],
        "models": sorted({m["model"] for m in seen if m.get("model")}),
        "providers": sorted({p for executor in lumina.replay.executors for p in executor.providers}),
        "done": args["done"],
    }
    return await dash.render(request, access, "replay.html", context, status)


async def _found_run(lumina: Lumina, access: Access, raw: str | int) -> dict[str, Any]:
    run_id = raw if isinstance(raw, int) else row_id(raw)
    run = await store.get_run(lumina.engine, run_id, access.project_id) if run_id is not None else None
    if run is None:
        raise PageError(404, f"no replay run {raw} in project {access.project_id}")
    return run


def run_page(dash: Dashboard) -> Any:
    lumina = dash.lumina

    async def handler(request: Request, access: Access) -> Response:
        offset = dash.args(request, (OFFSET_PARAM,))["offset"] or 0
        run = await _found_run(lumina, access, request.path_params["run_id"])
        detail = await run_detail(lumina, run)
        replay_set = await store.get_set(lumina.engine, access.project_id, run["set_id"])
        names = {run["set_id"]: replay_set["name"]} if replay_set else {}
        others = [
            run_view(r, names)
            for r in await store.list_runs(lumina.engine, access.project_id, run["set_id"])
            if r["id"] != run["id"]
        ]
        items = detail["items"]
        context = {
            "compare": False,
            "run": run_view(run, names),
            "replay_set": replay_set,
            "limits_text": limits_text(run["limits"]),
            "summary": detail["summary"],
            "shown": summary_view(detail["summary"]),
            "items": [item_view(i) for i in items[offset : offset + ITEMS_PER_PAGE]],
            "offset": offset,
            "total": len(items),
            "per_page": ITEMS_PER_PAGE,
            "others": others,
            "can_edit": "admin" in access.scopes,
            "refresh": REFRESH_SECONDS if run["state"] in LIVE else None,
        }
        response = await dash.render(request, access, "replay_run.html", context)
        if run["state"] in LIVE:  # the page follows the run: a declarative reload, no script
            response.headers["Refresh"] = str(REFRESH_SECONDS)
        return response

    return handler


def compare_page(dash: Dashboard) -> Any:
    lumina = dash.lumina

    async def handler(request: Request, access: Access) -> Response:
        args = dash.args(request, (RUN_A, RUN_B))
        if args["a"] is None or args["b"] is None:
            raise PageError(400, "choose two runs of one set to compare (a and b)")
        a, b = await _found_run(lumina, access, args["a"]), await _found_run(lumina, access, args["b"])
        if a["set_id"] != b["set_id"]:
            raise PageError(400, "runs of different sets cannot be compared item by item")
        left, right = await run_detail(lumina, a), await run_detail(lumina, b)
        replay_set = await store.get_set(lumina.engine, access.project_id, a["set_id"])
        names = {a["set_id"]: replay_set["name"]} if replay_set else {}
        shown_a, shown_b = summary_view(left["summary"]), summary_view(right["summary"])
        items = [
            {"original": x["original"], "prompt": prompt_of(x["original"]), "a": x["replay"], "b": y["replay"]}
            for x, y in zip(left["items"], right["items"], strict=True)
        ]
        context = {
            "compare": True,
            "a": run_view(a, names),
            "b": run_view(b, names),
            "replay_set": replay_set,
            "rows": [(label, shown_a[key], shown_b[key]) for key, label in SUMMARY_ROWS],
            "items": items,
        }
        return await dash.render(request, access, "replay_run.html", context)

    return handler


# ---- forms ----


def _values(form: FormData, fields: tuple[str, ...]) -> dict[str, str]:
    """The posted fields as text (a field not sent is empty)."""
    values = {}
    for key in fields:
        value = form.get(key)
        text = value if isinstance(value, str) else ""
        values[key] = text if key in VERBATIM else text.strip()
    return values


def _run_link(request: Request, run_id: int) -> str:
    return link(f"/replay/runs/{run_id}", {"project": request.query_params.get("project")})


def set_creation(dash: Dashboard) -> Any:
    """``POST /replay/sets``: freeze the calls the form selects, as ``POST /api/v1/replay/sets`` does."""
    lumina = dash.lumina

    async def handler(request: Request, access: Access) -> Response:
        if not same_origin(request):
            raise PageError(403, "this form can only be sent from the Lumina dashboard itself")
        form = await request.form()
        values: dict[str, Any] = {**_values(form, SET_FIELDS), "sample": form.get("sample") is not None}
        selection = {k: values[k] for k in ("service", "span_name", "model", "limit") if values[k]}
        try:
            body = NewSet.model_validate(
                {"name": values["name"], "selection": {**selection, "sample": values["sample"]}}
            )
        except ValidationError as exc:
            return await render_replay(dash, request, access, set_form=values, errors=problems(exc), status=422)
        made = await store.create_set(lumina.engine, access.project_id, body.name, body.selection, body.description)
        count = made["item_count"]
        done = (
            f"Set “{made['name']}” froze {count} call{'' if count == 1 else 's'}"
            if count
            else f"Set “{made['name']}” is empty: no LLM call with its prompt matched the selection"
        )
        back = {"project": request.query_params.get("project"), "done": done}
        return RedirectResponse(link("/replay", back) + "#sets", 303)

    return handler


def run_start(dash: Dashboard) -> Any:
    """``POST /replay/runs``: a run of a set with the form's overrides and limits, for the server's workers
    (``runner="server"``), as ``POST /api/v1/replay/runs`` starts it; then to the run's page."""
    lumina = dash.lumina

    async def handler(request: Request, access: Access) -> Response:
        if not same_origin(request):
            raise PageError(403, "this form can only be sent from the Lumina dashboard itself")
        values = _values(await request.form(), ("set_id", *OVERRIDE_FIELDS, *LIMIT_FIELDS))
        if not values["set_id"]:
            return await render_replay(dash, request, access, run_form=values, errors=["set: choose a set"], status=422)
        overrides = {k: values[k] for k in OVERRIDE_FIELDS if values[k]}
        if "find" not in overrides:
            overrides.pop("replace", None)
        limits = {k: values[k] for k in LIMIT_FIELDS if values[k]}
        try:
            body = NewRun.model_validate({"set_id": values["set_id"], "overrides": overrides, "limits": limits})
        except ValidationError as exc:
            return await render_replay(dash, request, access, run_form=values, errors=problems(exc), status=422)
        found = await store.get_set(lumina.engine, access.project_id, body.set_id)
        if found is None:
            raise PageError(404, f"no replay set {body.set_id} in project {access.project_id}")
        run = await store.create_run(lumina.engine, access.project_id, found, body.overrides, body.limits, "server")
        return RedirectResponse(_run_link(request, run["id"]), 303)

    return handler


def run_cancel(dash: Dashboard) -> Any:
    """``POST /replay/runs/{id}/cancel``: no new call is sent; back to the run (a finished run stays as it is)."""
    lumina = dash.lumina

    async def handler(request: Request, access: Access) -> Response:
        if not same_origin(request):
            raise PageError(403, "this form can only be sent from the Lumina dashboard itself")
        run = await _found_run(lumina, access, request.path_params["run_id"])
        await store.cancel_run(lumina.engine, access.project_id, run["id"])
        return RedirectResponse(_run_link(request, run["id"]), 303)

    return handler
