"""Replay sets, runs and results in the database: freezing a selection of LLM calls, starting a run,
recording each replayed call, and summing a run up against the originals."""

from __future__ import annotations

import statistics
import time
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from lumina_core.quality import output_text
from lumina_core.storage.database import writing
from lumina_core.storage.filters import SpanFilter, span_field_conditions, span_keys
from lumina_core.storage.models import (
    TOKEN_COLUMNS,
    replay_items_table,
    replay_results_table,
    replay_runs_table,
    replay_sets_table,
    spans_table,
)

MAX_SET_ITEMS = 10_000
_s, _i, _r, _res, _set = (
    spans_table.c,
    replay_items_table.c,
    replay_runs_table.c,
    replay_results_table.c,
    replay_sets_table.c,
)


class ReplaySelection(BaseModel):
    """Which LLM calls a set freezes: these spans, or those matching the filters (newest first, or a random
    sample), at most ``limit``. Calls nested under agent spans are as replayable as root ones."""

    model_config = ConfigDict(extra="forbid")
    spans: list[tuple[str, str]] | None = Field(None, description="[trace_id, span_id] pairs")
    service: str | None = None
    span_name: str | None = None
    model: str | None = None
    provider: str | None = None
    start_ns: int | None = Field(None, description="calls started at or after (Unix ns)")
    end_ns: int | None = Field(None, description="calls started before (Unix ns)")
    limit: int = Field(200, ge=1, le=MAX_SET_ITEMS)
    sample: bool = Field(False, description="a random sample instead of the newest")


class ReplayOverrides(BaseModel):
    """What a run changes in every call; ``find``/``replace`` and ``template`` (Jinja, over each message's
    ``content`` and ``role``) rewrite the prompts."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    provider: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, ge=0, le=1)
    system_prompt: str | None = None
    find: str | None = None
    replace: str = ""
    template: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict, description="more request parameters, passed as they are")


class ReplayLimits(BaseModel):
    """How a run spends: calls in flight, requests and tokens per minute (requests are paced evenly, which
    is also the load-test mode), attempts per call and the timeout of each."""

    model_config = ConfigDict(extra="forbid")
    concurrency: int = Field(5, ge=1, le=200)
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    max_attempts: int = Field(5, ge=1, le=20)
    timeout_seconds: float = Field(60, gt=0)


RunState = Literal["queued", "running", "done", "cancelled", "failed"]


async def create_set(
    engine: AsyncEngine, project_id: str, name: str, selection: ReplaySelection, description: str = ""
) -> dict[str, Any]:
    """Freeze the selected LLM calls (a copy of each: retention will not change the set)."""
    where = [_s.project_id == project_id, _s.is_llm, _s.input_messages.is_not(None)]
    if selection.spans is not None:
        where.append(span_keys(_s, project_id, selection.spans))
    flt = SpanFilter(
        service=selection.service, span_name=selection.span_name, model=selection.model, provider=selection.provider
    )
    where += span_field_conditions(flt, _s, engine.dialect.name)
    if selection.start_ns is not None:
        where.append(_s.start_time_unix_nano >= selection.start_ns)
    if selection.end_ns is not None:
        where.append(_s.start_time_unix_nano < selection.end_ns)
    order = sa.func.random() if selection.sample else _s.start_time_unix_nano.desc()
    query = sa.select(spans_table).where(*where).order_by(order, _s.span_id).limit(selection.limit)
    async with writing(engine) as conn:
        spans = [dict(row) for row in (await conn.execute(query)).mappings()]
        now = time.time_ns()
        row = {
            "project_id": project_id,
            "name": name,
            "description": description,
            "selection": selection.model_dump(exclude_none=True),
            "item_count": len(spans),
            "created_unix_nano": now,
        }
        set_id = (await conn.execute(sa.insert(replay_sets_table).values(row).returning(_set.id))).scalar_one()
        if spans:
            await conn.execute(sa.insert(replay_items_table), [_item(set_id, i, span) for i, span in enumerate(spans)])
    return {"id": set_id, **row}


def _item(set_id: int, position: int, span: dict[str, Any]) -> dict[str, Any]:
    return {
        "set_id": set_id,
        "position": position,
        "trace_id": span["trace_id"],
        "span_id": span["span_id"],
        "service_name": span["service_name"],
        "span_name": span["name"],
        "provider": span["provider"],
        "model": span["model"],
        "input_messages": span["input_messages"],
        "system_prompt": span["system_prompt"],
        "invocation_parameters": span["invocation_parameters"],
        "output_text": output_text(span),
        **{name: span[name] for name in TOKEN_COLUMNS},
        "cost_usd": span["cost_usd"],
        "latency_ms": span["latency_ms"],
    }


async def list_sets(engine: AsyncEngine, project_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        query = sa.select(replay_sets_table).where(_set.project_id == project_id).order_by(_set.id.desc())
        return [dict(row) for row in (await conn.execute(query)).mappings()]


async def get_set(engine: AsyncEngine, project_id: str, set_id: int) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        query = sa.select(replay_sets_table).where(_set.project_id == project_id, _set.id == set_id)
        row = (await conn.execute(query)).mappings().first()
    return dict(row) if row else None


async def set_items(engine: AsyncEngine, set_id: int) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        query = sa.select(replay_items_table).where(_i.set_id == set_id).order_by(_i.position)
        return [dict(row) for row in (await conn.execute(query)).mappings()]


async def create_run(
    engine: AsyncEngine,
    project_id: str,
    set_row: dict[str, Any],
    overrides: ReplayOverrides,
    limits: ReplayLimits,
    runner: Literal["server", "cli"],
) -> dict[str, Any]:
    row = {
        "project_id": project_id,
        "set_id": set_row["id"],
        "overrides": overrides.model_dump(exclude_defaults=True),
        "limits": limits.model_dump(),
        "state": "queued",
        "runner": runner,
        "item_count": set_row["item_count"],
        "created_unix_nano": time.time_ns(),
        "finished_unix_nano": None,
        "error": None,
    }
    async with writing(engine) as conn:
        run_id = (await conn.execute(sa.insert(replay_runs_table).values(row).returning(_r.id))).scalar_one()
    return {"id": run_id, **row}


async def get_run(engine: AsyncEngine, run_id: int, project_id: str | None = None) -> dict[str, Any] | None:
    where = [_r.id == run_id] + ([_r.project_id == project_id] if project_id is not None else [])
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(replay_runs_table).where(*where))).mappings().first()
    return dict(row) if row else None


async def list_runs(engine: AsyncEngine, project_id: str, set_id: int | None = None) -> list[dict[str, Any]]:
    where = [_r.project_id == project_id] + ([_r.set_id == set_id] if set_id is not None else [])
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(replay_runs_table).where(*where).order_by(_r.id.desc()))).mappings()
        runs = [dict(row) for row in rows]
        counts = await conn.execute(
            sa.select(_res.run_id, _res.status, sa.func.count())
            .where(_res.run_id.in_([run["id"] for run in runs]))
            .group_by(_res.run_id, _res.status)
        )
        done: dict[int, dict[str, int]] = {}
        for run_id, status, count in counts.all():
            done.setdefault(run_id, {})[status] = count
    return [
        {**run, "finished": sum(done.get(run["id"], {}).values()), "errors": done.get(run["id"], {}).get("error", 0)}
        for run in runs
    ]


async def set_state(engine: AsyncEngine, run_id: int, state: RunState, error: str | None = None) -> None:
    finished = time.time_ns() if state in ("done", "cancelled", "failed") else None
    async with writing(engine) as conn:
        await conn.execute(
            sa.update(replay_runs_table)
            .where(_r.id == run_id)
            .values(state=state, error=error, finished_unix_nano=finished)
        )


async def cancel_run(engine: AsyncEngine, project_id: str, run_id: int) -> bool:
    """Stop a queued or running run: no new call starts (calls in flight finish and are recorded)."""
    async with writing(engine) as conn:
        result = await conn.execute(
            sa.update(replay_runs_table)
            .where(_r.id == run_id, _r.project_id == project_id, _r.state.in_(("queued", "running")))
            .values(state="cancelled", finished_unix_nano=time.time_ns())
        )
    return bool(result.rowcount)


async def runs_to_run(engine: AsyncEngine) -> list[int]:
    """Runs for the server to run: queued, or running (left so by a process that stopped)."""
    async with engine.connect() as conn:
        query = sa.select(_r.id).where(_r.runner == "server", _r.state.in_(("queued", "running"))).order_by(_r.id)
        return list((await conn.execute(query)).scalars())


async def finished_positions(engine: AsyncEngine, run_id: int) -> set[int]:
    async with engine.connect() as conn:
        return set((await conn.execute(sa.select(_res.position).where(_res.run_id == run_id))).scalars())


async def record_result(engine: AsyncEngine, row: dict[str, Any]) -> None:
    async with writing(engine) as conn:
        await conn.execute(sa.insert(replay_results_table).values(row))


async def results(engine: AsyncEngine, run: dict[str, Any]) -> list[dict[str, Any]]:
    """Each item of the run's set with its original answer and its replay (``None`` until replayed)."""
    async with engine.connect() as conn:
        query = (
            sa.select(replay_items_table, *(c.label(f"replay_{c.name}") for c in replay_results_table.columns))
            .select_from(
                replay_items_table.outerjoin(
                    replay_results_table, (_res.run_id == run["id"]) & (_res.position == _i.position)
                )
            )
            .where(_i.set_id == run["set_id"])
            .order_by(_i.position)
        )
        rows = [dict(row) for row in (await conn.execute(query)).mappings()]
    out = []
    for row in rows:
        replay = {k.removeprefix("replay_"): row.pop(k) for k in list(row) if k.startswith("replay_")}
        out.append({"original": row, "replay": replay if replay["status"] is not None else None})
    return out


def _change(new: list[float], old: list[float]) -> float | None:
    """The change of the total, in percent of the original's."""
    return (sum(new) - sum(old)) / sum(old) * 100 if old and sum(old) else None


def summary(run: dict[str, Any], compared: list[dict[str, Any]]) -> dict[str, Any]:
    """A run against its originals: share identical, mean similarity, cost and latency change, errors."""
    replayed = [c for c in compared if c["replay"] is not None]
    ok = [c for c in replayed if c["replay"]["status"] == "ok"]
    similarities = [c["replay"]["similarity"] for c in ok if c["replay"]["similarity"] is not None]
    identical = [c["replay"]["identical"] for c in ok if c["replay"]["identical"] is not None]
    priced = [c for c in ok if c["replay"]["cost_usd"] is not None and c["original"]["cost_usd"] is not None]
    latencies = sorted(c["replay"]["latency_ms"] for c in ok if c["replay"]["latency_ms"] is not None)
    starts = [c["replay"]["finished_unix_nano"] - (c["replay"]["latency_ms"] or 0) * 1e6 for c in ok]
    spread_s = (max(starts) - min(starts)) / 1e9 if len(starts) > 1 else 0
    return {
        "items": run["item_count"],
        "finished": len(replayed),
        "errors": len(replayed) - len(ok),
        "identical_share": sum(identical) / len(identical) if identical else None,
        "mean_similarity": statistics.fmean(similarities) if similarities else None,
        "cost_usd": sum(c["replay"]["cost_usd"] or 0 for c in ok),
        "original_cost_usd": sum(c["original"]["cost_usd"] or 0 for c in ok),
        "cost_change_pct": _change(
            [c["replay"]["cost_usd"] for c in priced], [c["original"]["cost_usd"] for c in priced]
        ),
        "latency_change_pct": _change(
            [c["replay"]["latency_ms"] for c in ok], [c["original"]["latency_ms"] for c in ok]
        ),
        "latency_p50_ms": latencies[len(latencies) // 2] if latencies else None,
        "latency_p95_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))] if latencies else None,
        "calls_per_second": (len(starts) - 1) / spread_s if spread_s > 0 else None,  # answered calls, by their start
    }
