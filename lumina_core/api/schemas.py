"""JSON Schemas of the API's responses, for the OpenAPI document (trace and span schemas follow the tables)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from lumina_core.plugin_api import TOKEN_BUCKETS
from lumina_core.storage.models import TOKEN_COLUMNS, spans_table, traces_table
from lumina_core.storage.queries import HEAVY_SPAN_COLUMNS


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, Any], required: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(properties)
    return schema


STRING, INTEGER, NUMBER, BOOLEAN = ({"type": t} for t in ("string", "integer", "number", "boolean"))
TIME = {"type": "string", "format": "date-time"}


def _column_schema(column: sa.Column[Any]) -> dict[str, Any]:
    if isinstance(column.type, sa.JSON):
        return {}
    if isinstance(column.type, sa.Boolean):
        schema = BOOLEAN
    elif isinstance(column.type, sa.Integer):
        schema = INTEGER
    elif isinstance(column.type, sa.Float):
        schema = NUMBER
    else:
        schema = STRING
    return nullable(schema) if column.nullable else schema


def _row(table: sa.Table, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    properties = {c.name: _column_schema(c) for c in table.columns if c.name not in leave_out}
    properties.update(start_time=TIME, end_time=TIME, total_tokens=nullable(INTEGER))
    return obj(properties)


def table_row(table: sa.Table) -> dict[str, Any]:
    """A row of ``table`` as stored: one property per column."""
    return obj({c.name: _column_schema(c) for c in table.columns})


TRACE = _row(traces_table)
SPAN_SUMMARY = _row(spans_table, HEAVY_SPAN_COLUMNS)
SPAN = _row(spans_table)
NODES = {"type": "array", "items": {"$ref": "#/components/schemas/SpanNode"}}
COMPONENTS = {"SpanNode": {**SPAN, "properties": {**SPAN["properties"], "children": NODES}}}
"""Schemas referred to by ``$ref`` (the span tree is recursive)."""
TRACE_DETAIL = {**TRACE, "properties": {**TRACE["properties"], "spans": NODES}}


def page(item: dict[str, Any]) -> dict[str, Any]:
    return obj({"data": {"type": "array", "items": item}, "next_cursor": nullable(STRING)})


def listing(item: dict[str, Any]) -> dict[str, Any]:
    return obj({"data": {"type": "array", "items": item}})


ERROR = obj({"error": obj({"code": STRING, "message": STRING})})
TOKENS = {name: nullable(INTEGER) for name in TOKEN_COLUMNS}
SEEN = {"first_seen_unix_nano": INTEGER, "last_seen_unix_nano": INTEGER, "first_seen": TIME, "last_seen": TIME}
SERVICE = obj({"service_name": STRING, "span_count": INTEGER, **SEEN})
MODEL = obj(
    {
        "provider": nullable(STRING),
        "model": nullable(STRING),
        "requests": INTEGER,
        "cost_usd": nullable(NUMBER),
        **TOKENS,
        **SEEN,
    }
)
AGGREGATE = obj(
    {
        "bucket": nullable(TIME),
        "bucket_unix_nano": INTEGER,
        "group": {},
        "requests": INTEGER,
        "errors": INTEGER,
        "error_rate": nullable(NUMBER),
        "cost_usd": nullable(NUMBER),
        **TOKENS,
        **{name: nullable(NUMBER) for name in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms")},
    },
    required=False,
)
KEY = obj(
    {
        "id": INTEGER,
        "project_id": STRING,
        "name": STRING,
        "prefix": STRING,
        "scopes": {"type": "array", "items": STRING},
        "created_unix_nano": INTEGER,
        "revoked_unix_nano": nullable(INTEGER),
    }
)
NEW_KEY = {**KEY, "properties": {**KEY["properties"], "key": STRING}, "required": [*KEY["required"], "key"]}
PROJECT = obj({"id": STRING, "created_unix_nano": INTEGER})
PRICES = {bucket: nullable(NUMBER) for bucket in TOKEN_BUCKETS}
CUSTOM_PRICE = obj(
    {
        "id": nullable(INTEGER),
        "source": {"enum": ["config", "api"]},
        "model": STRING,
        "match": {"enum": ["exact", "regex"]},
        "provider": nullable(STRING),
        **PRICES,
        "effective_from": nullable(TIME),
    }
)
QUOTE = obj(
    {
        "model": STRING,
        "provider": nullable(STRING),
        "pricing_status": {"enum": ["priced", "unpriced"]},
        "cost_usd": nullable(NUMBER),
        "source": nullable(STRING),
        "rule": nullable(STRING),
        "prices_per_mtok": nullable(obj(PRICES)),
        "tokens": obj({bucket: nullable(INTEGER) for bucket in TOKEN_BUCKETS}),
    },
    required=False,
)


def inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON Schema with its ``$defs`` inlined, for a request body in the OpenAPI document."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node and node["$ref"].startswith("#/$defs/"):
                return walk(defs[node["$ref"].removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)
