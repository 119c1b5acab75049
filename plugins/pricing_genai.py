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
}


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


def price_rule(provider_id: str, model_id: str, model_price: Any) -> PriceRule:
    values = {bucket: getattr(model_price, key) for bucket, key in _BUCKET_KEYS.items()}
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
            tiers=tiers,
        )

    tiers = tuple(
        (start, make({b: _tier_price(p, start) for b, p in values.items()}, f"{rule} (>{start:,} prompt tokens)"))
        for start in thresholds
    )
    return make({b: _base(p) for b, p in values.items()}, rule, tiers)


class GenAIPricesProvider:
    """Prices from genai-prices. Dated snapshots, aliases and ``provider/model`` names resolve as the
    package resolves them; a model it does not know is left unpriced."""

    def __init__(self) -> None:
        self.snapshot = data_snapshot.get_snapshot()

    def lookup(self, provider: str | None, model: str, at: datetime) -> PriceRule | None:
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
            if info.prices is None:
                return None
            return price_rule(found_provider.id, info.id, info.get_prices(at))
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
