"""The price stage: custom prices first, then the configured pricing providers, answered from memory.

Cost is sum of bucket * price over the disjoint token buckets, so cached and reasoning tokens are never
counted twice. An unknown model leaves ``cost_usd`` NULL with ``pricing_status = "unpriced"``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lumina_core.plugin_api import TOKEN_BUCKETS, PriceRule, PricingProvider

CACHE_SIZE = 10_000
CUSTOM_SOURCE = "custom"
PROMPT_BUCKETS = ("input", "cache_read", "cache_write")


@dataclass(frozen=True)
class CustomPriceRule:
    """One custom price, from ``lumina.toml`` (``id`` None) or the database."""

    model: str
    input: float
    output: float
    match: str = "exact"
    provider: str | None = None
    cache_read: float | None = None
    cache_write: float | None = None
    reasoning: float | None = None
    effective_from_unix_nano: int | None = None
    id: int | None = None
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def build(cls, **values: Any) -> CustomPriceRule:
        """Validate and compile; a regex must match the whole model name (it is anchored)."""
        match = values.get("match", "exact")
        if match not in ("exact", "regex"):
            raise ValueError("match must be 'exact' or 'regex'")
        pattern = re.compile(values["model"]) if match == "regex" else None
        if values.get("provider"):
            values["provider"] = values["provider"].lower()
        return cls(**values, pattern=pattern)

    def matches(self, provider: str | None, model: str) -> bool:
        if self.provider is not None and self.provider != provider:
            return False
        if self.pattern is not None:
            return self.pattern.fullmatch(model) is not None
        return self.model == model

    def price_rule(self) -> PriceRule:
        name = f"custom#{self.id}" if self.id is not None else "custom (lumina.toml)"
        return PriceRule(
            source=CUSTOM_SOURCE,
            rule=f"{name}: {self.match} {self.model}" + (f" ({self.provider})" if self.provider else ""),
            input=self.input,
            output=self.output,
            cache_read=self.cache_read,
            cache_write=self.cache_write,
            reasoning=self.reasoning,
        )


def price_call(rule: PriceRule, tokens: dict[str, int | None]) -> tuple[PriceRule, float | None]:
    """The prices that apply to one call (its tier) and its cost in USD: the sum of bucket * price per
    1M tokens. The cost is ``None`` when no bucket was reported."""
    known = {bucket: count for bucket, count in tokens.items() if count is not None}
    applied = rule.for_prompt(sum(known.get(b, 0) for b in PROMPT_BUCKETS))
    if not known:
        return applied, None
    return applied, sum(count * applied.per_mtok(bucket) for bucket, count in known.items()) / 1_000_000


@dataclass(frozen=True)
class _CustomRules:
    """One immutable set of custom prices with its own lookup cache, swapped whole on reload."""

    rules: tuple[CustomPriceRule, ...]
    by_model: dict[tuple[str | None, str], list[CustomPriceRule]] = field(default_factory=dict)


class PricingChain:
    """Custom prices first, then each provider in order; the first that knows a model prices it."""

    def __init__(self, providers: Sequence[tuple[str, PricingProvider]], custom: Iterable[CustomPriceRule] = ()):
        self.providers = list(providers)
        self.set_custom(custom)

    def set_custom(self, custom: Iterable[CustomPriceRule]) -> None:
        """Replace the custom prices. The worker thread may be pricing meanwhile: it keeps reading
        the set it started with, because the whole set is replaced in one assignment."""
        # Newest effective date first; at equal dates an exact rule beats a pattern, a newer id an older.
        ordered = sorted(
            custom,
            key=lambda r: (r.effective_from_unix_nano or 0, r.match == "exact", r.id or 0),
            reverse=True,
        )
        self._custom = _CustomRules(tuple(ordered))

    def lookup(self, provider: str | None, model: str, at_unix_nano: int) -> PriceRule | None:
        return self.custom_rule(provider, model, at_unix_nano) or self.provider_rule(provider, model, at_unix_nano)

    def custom_rule(self, provider: str | None, model: str, at_unix_nano: int) -> PriceRule | None:
        state = self._custom
        key = (provider, model)
        candidates = state.by_model.get(key)
        if candidates is None:
            if len(state.by_model) >= CACHE_SIZE:  # model names come from clients: stay bounded
                state.by_model.clear()
            candidates = state.by_model[key] = [r for r in state.rules if r.matches(provider, model)]
        for rule in candidates:
            if rule.effective_from_unix_nano is None or rule.effective_from_unix_nano <= at_unix_nano:
                return rule.price_rule()
        return None

    def provider_rule(self, provider: str | None, model: str, at_unix_nano: int) -> PriceRule | None:
        at = datetime.fromtimestamp(at_unix_nano / 1e9, tz=UTC)
        for _, pricing_provider in self.providers:
            found = pricing_provider.lookup(provider, model, at)
            if found is not None:
                return found
        return None


def row_tokens(row: dict[str, Any]) -> dict[str, int | None]:
    return {bucket: row[f"{bucket}_tokens"] for bucket in TOKEN_BUCKETS}


class PriceStage:
    """Sets ``cost_usd``, ``cost_source``, ``pricing_status`` and ``pricing_rule`` on LLM span rows."""

    def __init__(self, chain: PricingChain, on_unpriced: Callable[[str | None, str | None], None] = lambda p, m: None):
        self.chain = chain
        self.on_unpriced = on_unpriced

    def apply(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            if row["is_llm"]:
                row.update(self.price(row))

    def price(self, row: dict[str, Any]) -> dict[str, Any]:
        """The pricing columns for one LLM span row (a span-supplied cost is kept)."""
        if row["cost_source"] == "span":
            return {
                "cost_usd": row["cost_usd"],
                "cost_source": "span",
                "pricing_status": "priced",
                "pricing_rule": "reported by the span",
            }
        rule = self.find_rule(row["provider"], row["model"], row["request_model"], row["start_time_unix_nano"])
        if rule is None:
            self.on_unpriced(row["provider"], row["model"])
            return {"cost_usd": None, "cost_source": None, "pricing_status": "unpriced", "pricing_rule": None}
        applied, cost = price_call(rule, row_tokens(row))
        return {
            "cost_usd": cost,
            "cost_source": applied.source,
            "pricing_status": "priced" if cost is not None else "no_usage",
            "pricing_rule": applied.rule,
        }

    def find_rule(
        self, provider: str | None, model: str | None, request_model: str | None, at_unix_nano: int
    ) -> PriceRule | None:
        """A custom price for the response or the request model (an Azure deployment name, say) wins;
        then the providers' price for the response model, then for the request model."""
        names = [name for name in (model, request_model) if name]
        for find in (self.chain.custom_rule, self.chain.provider_rule):
            for name in names:
                rule = find(provider, name, at_unix_nano)
                if rule is not None:
                    return rule
        return None
