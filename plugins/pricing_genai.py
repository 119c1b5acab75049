"""Built-in pricing provider backed by the ``genai-prices`` package's offline data (no network)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from genai_prices import data_snapshot
from genai_prices.types import TieredPrices

from lumina_core import ComponentConfig, ComponentFactory, PriceRule, hookimpl

# Provider names as instrumentations report them → genai-prices provider ids.
PROVIDER_ALIASES = {
    "aws.bedrock": "aws",
    "bedrock": "aws",
    "gcp.vertex_ai": "google",
    "gcp.gemini": "google",
    "gcp.gen_ai": "google",
    "vertex_ai": "google",
    "az.ai.openai": "azure",
    "azure.ai.openai": "azure",
    "azure": "azure",
    "x_ai": "x-ai",
    "xai": "x-ai",
}
_BUCKET_KEYS = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "reasoning": "output_reasoning_mtok",
}
LOOKUP_CACHE_SIZE = 10_000


def _base(price: Any) -> float | None:
    if price is None:
        return None
    return float(price.base if isinstance(price, TieredPrices) else price)


def _tier_price(price: Any, threshold: int) -> float | None:
    if not isinstance(price, TieredPrices):
        return _base(price)
    applicable: Decimal = price.base
    for tier in price.tiers:
        if threshold >= tier.start:
            applicable = tier.price
    return float(applicable)


def price_rule(provider_id: str, model_id: str, model_price: Any) -> PriceRule | None:
    """Token prices as a rule; ``None`` for a model priced only in other units (audio hours, pages)."""
    values = {bucket: getattr(model_price, key) for bucket, key in _BUCKET_KEYS.items()}
    if values["input"] is None and values["output"] is None:
        return None
    thresholds = sorted(
        {tier.start for price in values.values() if isinstance(price, TieredPrices) for tier in price.tiers}
    )
    rule = f"genai-prices:{provider_id}/{model_id}"

    def make(prices: dict[str, float | None], name: str, tiers: tuple = ()) -> PriceRule:
        return PriceRule(
            source="genai-prices",
            rule=name,
            input=prices["input"] or 0.0,
            output=prices["output"] or 0.0,
            cache_read=prices["cache_read"],
            cache_write=prices["cache_write"],
            reasoning=prices["reasoning"],
            tiers=tiers,
        )

    tiers = tuple(
        (start, make({b: _tier_price(p, start) for b, p in values.items()}, f"{rule} (>{start:,} prompt tokens)"))
        for start in thresholds
    )
    return make({b: _base(p) for b, p in values.items()}, rule, tiers)


class GenAIPricesProvider:
    """Prices from genai-prices. Dated snapshots, aliases and ``provider/model`` names resolve as the
    package resolves them; a model it does not know is left unpriced.

    Which model a name means is cached; its prices are taken at each call's time, because some
    change with the date or even the time of day (DeepSeek's off-peak prices).
    """

    def __init__(self) -> None:
        self.snapshot = data_snapshot.get_snapshot()
        self._models: dict[tuple[str | None, str], tuple[str, Any] | None] = {}
        self._rules: dict[int, PriceRule | None] = {}  # by the identity of genai-prices' price object

    def lookup(self, provider: str | None, model: str, at: datetime) -> PriceRule | None:
        key = (provider, model)
        if key not in self._models:
            if len(self._models) >= LOOKUP_CACHE_SIZE:  # names come from clients: stay bounded
                self._models = {}
            self._models[key] = self._find(provider, model)
        found = self._models[key]
        if found is None:
            return None
        provider_id, info = found
        model_price = info.get_prices(at)
        rule_key = id(model_price)
        if rule_key not in self._rules:
            self._rules[rule_key] = price_rule(provider_id, info.id, model_price)
        return self._rules[rule_key]

    def _find(self, provider: str | None, model: str) -> tuple[str, Any] | None:
        if "/" in model and not model.startswith(("arn:", "projects/")):
            prefix, rest = model.split("/", 1)
            if self._provider_known(prefix):
                provider, model = prefix, rest
        provider_id = PROVIDER_ALIASES.get(provider or "", provider)
        for candidate in (provider_id, None) if provider_id else (None,):
            try:
                found_provider, info = self.snapshot.find_provider_model(model, None, candidate, None)
            except LookupError:
                continue
            return (found_provider.id, info) if info.prices is not None else None
        return None

    def _provider_known(self, name: str) -> bool:
        name = PROVIDER_ALIASES.get(name, name)
        return any(p.id == name for p in self.snapshot.providers)


@hookimpl
def lumina_register_pricing_providers() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="genai_prices",
            create=lambda ctx, config: GenAIPricesProvider(),
            config_model=ComponentConfig,
            description="Published list prices from the genai-prices package (offline data, updated weekly).",
        )
    ]
