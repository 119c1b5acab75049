"""The price file provider reads LiteLLM's format and knows only what the file lists."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import lumina_pricing_file
import pytest
from lumina_pricing_file import PriceFileProvider

from lumina_core.testing.contracts import PricingProviderContract

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def write_prices(tmp_path: Path) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "sample_spec": {"input_cost_per_token": 0},
                "acme-large-2": {
                    "input_cost_per_token": 2e-06,
                    "output_cost_per_token": 8e-06,
                    "cache_read_input_token_cost": 5e-07,
                    "litellm_provider": "acme",
                },
                "openrouter/acme-small": {"input_cost_per_token": 1e-07, "output_cost_per_token": 2e-07},
                "no-prices": {"max_tokens": 10},
            }
        )
    )
    return path


def test_reads_per_token_prices_as_per_million(tmp_path: Path) -> None:
    provider = PriceFileProvider(str(write_prices(tmp_path)))
    rule = provider.lookup("acme", "acme-large-2", NOW)
    assert rule is not None
    assert (rule.input, rule.output, rule.cache_read, rule.cache_write) == (2.0, 8.0, 0.5, None)
    assert rule.source == "pricing_file"


def test_matches_with_and_without_provider_prefix(tmp_path: Path) -> None:
    provider = PriceFileProvider(str(write_prices(tmp_path)))
    assert provider.lookup(None, "ACME-large-2", NOW) is not None
    assert provider.lookup("openrouter", "acme-small", NOW) is not None
    assert provider.lookup(None, "openrouter/acme-small", NOW) is not None


def test_unknown_models_and_other_providers_are_not_priced(tmp_path: Path) -> None:
    provider = PriceFileProvider(str(write_prices(tmp_path)))
    assert provider.lookup("acme", "acme-large-3", NOW) is None
    assert provider.lookup("other", "acme-large-2", NOW) is None
    assert provider.lookup(None, "no-prices", NOW) is None


class TestPriceFileContract(PricingProviderContract):
    type_name = "pricing_file"

    @pytest.fixture
    def plugin(self) -> object:
        return lumina_pricing_file

    @pytest.fixture
    def provider(self, tmp_path: Path) -> PriceFileProvider:
        return PriceFileProvider(str(write_prices(tmp_path)))

    @pytest.fixture
    def known(self) -> tuple[str, str]:
        return "acme", "acme-large-2"
