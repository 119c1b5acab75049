"""Every built-in component passes the contract suite of its kind (the suites plugin authors run), and every
registered type, built-in or from a contrib distribution, has such a suite somewhere."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from lumina_core import ComponentContext
from lumina_core.plugins import PluginHost
from lumina_core.testing import http_receiver
from lumina_core.testing.contracts import (
    AlertRuleContract,
    AlertSinkContract,
    ArchiverContract,
    DetectorContract,
    ExtractorContract,
    PricingProviderContract,
    QueueBackendContract,
    ReplayExecutorContract,
    SamplerContract,
    make_span,
)
from lumina_plugins import (
    alert_rules,
    alert_sinks,
    exact_match,
    jsonl_archiver,
    memory_queue,
    pricing_genai,
    replay_openai,
    samplers,
)
from lumina_plugins.extractors import lumina_overrides, openinference, openlit, openllmetry, otel_genai

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = {
    "alert_rule": "AlertRuleContract",
    "alert_sink": "AlertSinkContract",
    "archiver": "ArchiverContract",
    "detector": "DetectorContract",
    "extractor": "ExtractorContract",
    "pricing_provider": "PricingProviderContract",
    "queue_backend": "QueueBackendContract",
    "replay_executor": "ReplayExecutorContract",
    "sampler": "SamplerContract",
}


def build(kind: Any, type_name: str, config: dict[str, Any] | None = None) -> Any:
    factory = PluginHost(entry_points=False).factory(kind, type_name)
    return factory.create(ComponentContext("default", "/tmp"), factory.config_model.model_validate(config or {}))


class BuiltIn:
    module: ClassVar[object]
    kind: ClassVar[Any]
    type_name: ClassVar[str]

    @pytest.fixture
    def plugin(self) -> object:
        return self.module


# ---- extractors ----


class BuiltInExtractor(BuiltIn, ExtractorContract):
    attributes: ClassVar[dict[str, Any]]

    @pytest.fixture
    def extractor(self) -> Any:
        return build("extractor", self.type_name)

    @pytest.fixture
    def span(self) -> Any:
        return make_span(self.attributes)


class TestOtelGenaiExtractor(BuiltInExtractor):
    module, type_name = otel_genai, "otel_genai"
    attributes = {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 5}


class TestOtelGenaiDeprecatedExtractor(BuiltInExtractor):
    module, type_name = otel_genai, "otel_genai_deprecated"
    attributes = {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4", "gen_ai.usage.prompt_tokens": 80}


class TestOpenInferenceExtractor(BuiltInExtractor):
    module, type_name = openinference, "openinference"
    attributes = {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o", "llm.token_count.prompt": 120}


class TestOpenLLMetryExtractor(BuiltInExtractor):
    module, type_name = openllmetry, "openllmetry"
    attributes = {"gen_ai.system": "Anthropic", "llm.request.type": "chat", "gen_ai.request.model": "claude-3-opus"}


class TestOpenLitExtractor(BuiltInExtractor):
    module, type_name = openlit, "openlit"
    attributes = {"telemetry.sdk.name": "openlit", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.cost": 0.0007}


class TestLuminaOverridesExtractor(BuiltInExtractor):
    module, type_name = lumina_overrides, "lumina"
    attributes = {"lumina.model": "my-model", "lumina.cost_usd": 0.5}


# ---- the other kinds ----


class TestGenaiPricesProvider(BuiltIn, PricingProviderContract):
    module, type_name = pricing_genai, "genai_prices"

    @pytest.fixture
    def provider(self) -> Any:
        return build("pricing_provider", self.type_name)

    @pytest.fixture
    def known(self) -> tuple[str, str]:
        return "openai", "gpt-4o"


class TestExactMatchDetector(BuiltIn, DetectorContract):
    module, type_name = exact_match, "exact_match"

    @pytest.fixture
    def detector(self) -> Any:
        return build("detector", self.type_name)


class TestMemoryQueue(BuiltIn, QueueBackendContract):
    module, type_name = memory_queue, "memory"

    @pytest.fixture
    def queue(self) -> Any:
        return build("queue_backend", self.type_name)


class TestLogSink(BuiltIn, AlertSinkContract):
    module, type_name = alert_sinks, "log"

    @pytest.fixture
    def sink(self) -> Any:
        return build("alert_sink", self.type_name)

    test_a_failed_delivery_raises = None  # it writes to Lumina's own log: nothing can refuse it


class TestHeadSampler(BuiltIn, SamplerContract):
    module, type_name = samplers, "head"

    @pytest.fixture
    def sampler(self) -> Any:
        return build("sampler", self.type_name, {"ratio": 0.3})


class TestConditionalSampler(BuiltIn, SamplerContract):
    module, type_name = samplers, "conditional"

    @pytest.fixture
    def sampler(self) -> Any:
        return build("sampler", self.type_name, {"ratio": 0.3})


class TestOpenAIExecutor(BuiltIn, ReplayExecutorContract):
    module, type_name = replay_openai, "openai"

    @pytest.fixture
    def provider(self) -> str:
        return "openai"

    @pytest.fixture
    def executor(self, llm: Any, api_key: str) -> Any:
        return build("replay_executor", self.type_name, {"api_key": api_key, "base_url": llm.openai_base_url})


class TestJsonlArchiver(BuiltIn, ArchiverContract):
    module, type_name = jsonl_archiver, "jsonl"

    @pytest.fixture
    def archiver(self, tmp_path: Path) -> Any:
        return build("archiver", self.type_name, {"directory": str(tmp_path / "archive")})


class TestWebhookSink(BuiltIn, AlertSinkContract):
    module, type_name = alert_sinks, "webhook"

    @pytest.fixture
    def sink(self) -> Iterator[Any]:
        with http_receiver() as receiver:
            yield build("alert_sink", self.type_name, {"url": receiver.url, "secret": "s"})

    @pytest.fixture
    def failing_sink(self) -> Iterator[Any]:
        with http_receiver(fail_first=100) as receiver:
            yield build("alert_sink", self.type_name, {"url": receiver.url})


RULE_CONFIGS = {
    "cost_spike": {},
    "quality_drop": {},
    "error_rate": {},
    "latency_p95": {"max_ms": 1000},
    "budget": {"limit_usd": 1},
    "call_cost": {"max_usd": 0.01},
}


class BuiltInRule(BuiltIn, AlertRuleContract):
    module = alert_rules

    @pytest.fixture
    def rule_kind(self) -> Any:
        return build("alert_rule", self.type_name, {**RULE_CONFIGS[self.type_name], "min_samples": 1})


class TestCostSpikeRule(BuiltInRule):
    type_name = "cost_spike"


class TestQualityDropRule(BuiltInRule):
    type_name = "quality_drop"


class TestErrorRateRule(BuiltInRule):
    type_name = "error_rate"


class TestLatencyRule(BuiltInRule):
    type_name = "latency_p95"


class TestBudgetRule(BuiltInRule):
    type_name = "budget"


class TestCallCostRule(BuiltInRule):
    type_name = "call_cost"


# ---- the meta-test ----


def test_every_registered_type_runs_its_contract_suite() -> None:
    """Each type a built-in or installed contrib plugin registers has a test class deriving from its kind's
    contract (directly or through a base) that names it in ``type_name``."""
    sources = [p.read_text() for p in (*ROOT.glob("tests/test_*.py"), *ROOT.glob("contrib/*/tests/test_*.py"))]
    missing = []
    for kind, factories in PluginHost().factories.items():
        for type_name in factories:
            named = re.compile(rf'type_name\s*=\s*(?:[^\n]*,\s*)?"{re.escape(type_name)}"')
            if not any(named.search(text) and CONTRACTS[kind] in text for text in sources):
                missing.append(f"{kind}/{type_name}")
    assert missing == [], f"no contract suite runs for {', '.join(missing)}"
