"""A pricing provider reading a LiteLLM-format price file (USD per token) from a path in config."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from lumina_core import ComponentConfig, ComponentContext, ComponentFactory, PriceRule, hookimpl

PER_MILLION = 1_000_000


class PriceFileConfig(ComponentConfig):
    path: str = Field(description="the JSON price file")


def _per_mtok(entry: dict[str, Any], key: str) -> float | None:
    value = entry.get(key)
    return float(value) * PER_MILLION if isinstance(value, int | float) else None


class PriceFileProvider:
    def __init__(self, path: str) -> None:
        data = json.loads(Path(path).read_text())
        self.path = path
        self.rules: dict[str, tuple[str | None, PriceRule]] = {}
        for model, entry in data.items():
            if not isinstance(entry, dict) or model == "sample_spec":
                continue
            input_price, output_price = (
                _per_mtok(entry, "input_cost_per_token"),
                _per_mtok(entry, "output_cost_per_token"),
            )
            if input_price is None or output_price is None:
                continue
            provider = entry.get("litellm_provider")
            self.rules[model.lower()] = (
                provider.lower() if isinstance(provider, str) else None,
                PriceRule(
                    source="pricing_file",
                    rule=f"pricing_file:{model}",
                    input=input_price,
                    output=output_price,
                    cache_read=_per_mtok(entry, "cache_read_input_token_cost"),
                    cache_write=_per_mtok(entry, "cache_creation_input_token_cost"),
                    reasoning=_per_mtok(entry, "output_cost_per_reasoning_token"),
                ),
            )

    def lookup(self, provider: str | None, model: str, at: datetime) -> PriceRule | None:
        name = model.lower()
        candidates = [name, f"{provider}/{name}"] if provider else [name]
        if "/" in name:
            candidates.append(name.split("/", 1)[1])
        for candidate in candidates:
            found = self.rules.get(candidate)
            if found is not None:
                file_provider, rule = found
                if provider is None or file_provider is None or file_provider == provider or "/" in candidate:
                    return rule
        return None


def _create(ctx: ComponentContext, config: PriceFileConfig) -> PriceFileProvider:
    return PriceFileProvider(config.path)


@hookimpl
def lumina_register_pricing_providers() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="pricing_file",
            create=_create,
            config_model=PriceFileConfig,
            description="Prices from a LiteLLM-format JSON file.",
            stability="beta",
        )
    ]
