"""How the dashboard writes numbers and times (Jinja filters): short, aligned, never "None"."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any, TypeGuard

DASH = "\u2013"  # an en dash: "not reported"


def _number(value: Any) -> TypeGuard[float]:
    """False for None and for what a template has not got (Jinja's Undefined): shown as a dash."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def cost(value: float | None) -> str:
    """USD with enough digits to tell small calls apart: $12.35, $0.0123, $0.000042."""
    if not _number(value):
        return DASH
    if value == 0:
        return "$0"
    if abs(value) >= 100:
        return f"${value:,.0f}"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    if abs(value) >= 0.0001:
        return f"${value:.4f}".rstrip("0")
    if abs(value) < 1e-7:
        return "<$0.0000001" if value > 0 else "-<$0.0000001"
    digits = 1 - math.floor(math.log10(abs(value)))  # two significant digits, never 5.7e-06
    return f"${value:.{digits}f}".rstrip("0")


def count(value: float | None) -> str:
    """1,234 below ten thousand, then 12.3k, 4.56M."""
    if not _number(value):
        return DASH
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}" if size != 1e4 else f"{value / 1e3:.1f}k"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


tokens = count


def ms(value: float | None) -> str:
    """Milliseconds as a person reads a duration: 850 ms, 1.25 s, 3.1 min."""
    if not _number(value):
        return DASH
    if value < 1:
        return f"{value:.2f} ms"
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 60_000:
        return f"{value / 1000:.2f} s"
    return f"{value / 60_000:.1f} min"


def pct(value: float | None) -> str:
    return (
        DASH if not _number(value) else f"{value * 100:.1f}%" if value < 0.995 or value == 1 else f"{value * 100:.2f}%"
    )


def when(unix_nano: int | None) -> str:
    """A UTC time to the second (the dashboard shows UTC throughout)."""
    if not _number(unix_nano):
        return DASH
    return datetime.fromtimestamp(unix_nano / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")


def ago(unix_nano: int | None, now_ns: Any = None) -> str:
    if not _number(unix_nano):
        return DASH
    seconds = ((now_ns or time.time_ns()) - unix_nano) / 1e9
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now" if seconds < 5 else f"{seconds:.0f} s ago"
