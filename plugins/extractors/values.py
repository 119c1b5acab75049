"""Attribute-reading helpers shared by the built-in extractors: coercion, JSON, indexed keys, messages."""

from __future__ import annotations

import math
from typing import Any

import orjson

MAX_COUNT = 2**63 - 1


def as_int(value: Any) -> int | None:
    """A count: a non-negative integer that fits a BIGINT, from an int, a whole float or decimal text."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        value = int(value) if value.is_integer() else None
    elif isinstance(value, str):
        value = int(value) if value.isascii() and value.isdecimal() and len(value) < 20 else None
    if isinstance(value, int) and 0 <= value <= MAX_COUNT:
        return value
    return None


def as_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def reported_cost(value: Any, tokens: int | None) -> float | None:
    """A cost the span reports itself. Some libraries write 0 for models they cannot price; with
    tokens used, a zero is their "unknown", not a free call."""
    cost = as_float(value)
    if cost is None or not math.isfinite(cost) or cost < 0 or (cost == 0 and (tokens or 0) > 0):
        return None
    return cost


def as_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def first(attrs: dict[str, Any], *keys: str) -> Any:
    """The value of the first key present (and not empty) in ``attrs``."""
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return value
    return None


def first_int(attrs: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = as_int(attrs.get(key))
        if value is not None:
            return value
    return None


def json_value(value: Any) -> Any:
    """Parse a JSON-encoded attribute; values that are not JSON text are returned as they are."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def string_list(value: Any) -> list[str] | None:
    value = json_value(value)
    if value is None or value == "":
        return None
    if isinstance(value, list):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def indexed(attrs: dict[str, Any], prefix: str, wrapper: str = "") -> list[dict[str, Any]]:
    """Unflatten ``prefix.0.role``, ``prefix.0.tool_calls.1.name`` … into a list of nested dicts.

    ``wrapper`` is a path segment to drop after the index (OpenInference's ``N.message.role``).
    """
    items: dict[int, dict[str, Any]] = {}
    nested = False
    start = len(prefix)
    for key, value in attrs.items():
        if not key.startswith(prefix):
            continue
        index, _, path = key[start:].partition(".")
        if not path or not _is_index(index):
            continue
        if wrapper and path.startswith(wrapper):
            path = path[len(wrapper) :]
        node = items.setdefault(int(index), {})
        if "." in path:
            nested = True
            _set_nested(node, path.split("."), value)
        else:
            node[path] = value
    if nested:
        return [_lists(items[i]) for i in sorted(items)]
    return [items[i] for i in sorted(items)]


def _is_index(text: str) -> bool:
    """A flattened list index: ASCII digits only (``"²".isdigit()`` is true), and not absurdly long."""
    return text.isascii() and text.isdecimal() and len(text) <= 6


def _set_nested(node: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value


def _lists(node: Any) -> Any:
    """Dicts keyed 0, 1, 2 … (from flattened indexes) become lists."""
    if not isinstance(node, dict):
        return node
    converted = {k: _lists(v) for k, v in node.items()}
    if converted and all(_is_index(k) for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def normalise_message(message: Any) -> dict[str, Any]:
    """One chat message as ``{"role", "content", …}``; OTel ``parts`` are joined into ``content``.

    A message that needs completing is copied first: it may be the span's own attribute value.
    """
    if not isinstance(message, dict):
        return {"role": None, "content": as_str(message)}
    parts = message.get("parts")
    if not isinstance(parts, list) or "content" in message:
        return message
    message = dict(message)
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, dict):
            kind = part.get("type")
            if kind == "text" and part.get("content") is not None:
                texts.append(str(part["content"]))
            elif kind == "tool_call":
                calls.append(part)
    message["content"] = "".join(texts) if texts else None
    if calls:
        message.setdefault("tool_calls", calls)
    return message


def messages(value: Any) -> list[dict[str, Any]] | None:
    """A JSON-encoded (or already decoded) list of messages, normalised; ``None`` when absent."""
    value = json_value(value)
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return [{"role": None, "content": str(value)}]
    return [normalise_message(m) for m in value]


def system_text(msgs: list[dict[str, Any]] | None) -> str | None:
    """The content of the system (or developer) messages, joined."""
    if not msgs:
        return None
    texts = [str(m["content"]) for m in msgs if m.get("role") in ("system", "developer") and m.get("content")]
    return "\n".join(texts) or None


def prefixed(attrs: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    """``{suffix: value}`` for every key under ``prefix`` (e.g. request parameters); ``None`` if none."""
    found = {key[len(prefix) :]: value for key, value in attrs.items() if key.startswith(prefix)}
    return found or None
