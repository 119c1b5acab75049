"""The plugin host: explicit built-ins, entry-point discovery, loud failures, and what operators see."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from types import ModuleType

import httpx
import pluggy
import pytest
from click.testing import CliRunner

from lumina_core import ComponentConfig, ComponentFactory, LLMFields, SpanRecord, hookimpl
from lumina_core.cli import main
from lumina_core.components import build_components, configured_instances
from lumina_core.config import load_settings
from lumina_core.plugin_api import ConfigError
from lumina_core.plugins import PluginHost, builtin_plugins
from tests.support.otlp import raw_request

builtin_plugins_before = builtin_plugins


def plugin_module(name: str, **hooks) -> ModuleType:
    module = ModuleType(name)
    for hook_name, function in hooks.items():
        setattr(module, hook_name, hookimpl(function))
    return module


def extractor_factory(type_name: str) -> ComponentFactory:
    return ComponentFactory(
        type=type_name, create=lambda ctx, config: object(), config_model=ComponentConfig, description="test"
    )


def test_builtins_are_registered_explicitly_and_described() -> None:
    host = PluginHost(entry_points=False)
    types = {kind: sorted(by_type) for kind, by_type in host.factories.items()}
    assert types == {
        "extractor": ["lumina", "openinference", "openlit", "openllmetry", "otel_genai", "otel_genai_deprecated"],
        "queue_backend": ["memory"],
        "pricing_provider": ["genai_prices"],
        "detector": ["exact_match"],
        "alert_rule": ["budget", "call_cost", "cost_spike", "error_rate", "latency_p95", "quality_drop"],
        "alert_sink": ["log", "webhook"],
        "archiver": ["jsonl"],
        "sampler": ["conditional", "head"],
        "replay_executor": ["openai"],
    }
    described = {info.name: info for info in host.describe()}
    memory = described["lumina_plugins.memory_queue"]
    assert memory.types == {"queue_backend": ["memory"]}
    assert memory.hooks == ["lumina_register_queue_backends"]
    assert memory.distribution == "lumina"


def test_two_plugins_registering_one_type_name_fail_at_startup() -> None:
    first = plugin_module("first", lumina_register_extractors=lambda: [extractor_factory("same")])
    second = plugin_module("second", lumina_register_extractors=lambda: [extractor_factory("same")])
    with pytest.raises(ConfigError, match="registered twice, by first and second"):
        PluginHost([first, second], entry_points=False)


def test_a_misspelled_hook_fails_loudly() -> None:
    typo = plugin_module("typo", lumina_register_extractor=lambda: [])
    with pytest.raises(pluggy.PluginValidationError, match="unknown hook"):
        PluginHost([typo], entry_points=False)


def test_unknown_component_type_lists_the_known_ones() -> None:
    settings = load_settings(None, env={}, overrides={"queue.type": "kafka"})
    with pytest.raises(ConfigError) as err:
        build_components(settings, PluginHost(entry_points=False))
    assert err.value.errors == [("queue", "unknown queue_backend type 'kafka'; known: memory")]


def test_blocked_builtin_is_not_loaded() -> None:
    host = PluginHost(block=["lumina_plugins.extractors.openlit"], entry_points=False)
    assert "openlit" not in host.factories["extractor"]
    assert len(builtin_plugins()) == len(host.describe()) + 1


FAKE_PLUGIN = textwrap.dedent(
    """
    from lumina_core import ComponentConfig, ComponentFactory, LLMFields, hookimpl

    class ShoutConfig(ComponentConfig):
        provider: str = "shout"

    class ShoutExtractor:
        def __init__(self, provider):
            self.provider = provider

        def extract(self, span):
            if "shout.model" not in span.attributes:
                return None
            return LLMFields(provider=self.provider, response_model=span.attributes["shout.model"].upper())

    @hookimpl
    def lumina_register_extractors():
        return [ComponentFactory(type="shout", create=lambda ctx, config: ShoutExtractor(config.provider),
                                 config_model=ShoutConfig, description="Upper-cases models.")]
    """
)


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A third-party distribution with a ``lumina`` entry point, installed on sys.path."""
    (tmp_path / "lumina_shout.py").write_text(FAKE_PLUGIN)
    dist_info = tmp_path / "lumina_shout-1.2.3.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: lumina-shout\nVersion: 1.2.3\n")
    (dist_info / "entry_points.txt").write_text("[lumina]\nshout = lumina_shout\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "lumina_shout"
    sys.modules.pop("lumina_shout", None)


def span_with(attributes: dict) -> SpanRecord:
    return SpanRecord(
        "a" * 32, "b" * 16, None, "op", "client", 1, 2, "unset", None, "svc", None, attributes, {}, [], []
    )


def test_entry_point_plugins_are_discovered_but_inert_until_configured(installed_plugin: str) -> None:
    host = PluginHost()
    info = {i.name: i for i in host.describe()}["shout"]
    assert (info.distribution, info.version, info.types) == ("lumina-shout", "1.2.3", {"extractor": ["shout"]})

    default = build_components(load_settings(None, env={}), host)
    assert not any(type(e).__name__ == "ShoutExtractor" for e in default.extractors)

    settings = load_settings(
        None, env={}, overrides={"pipeline.extractors": ["shout/loud"], "extractors": {"shout/loud": {"provider": "p"}}}
    )
    (extractor,) = build_components(settings, host).extractors
    fields = extractor.extract(span_with({"shout.model": "abc"}))
    assert fields == LLMFields(provider="p", response_model="ABC")


def test_plugins_are_listed_by_cli_and_endpoint(sqlite_server, installed_plugin: str) -> None:
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "shout  (lumina-shout 1.2.3)  extractor: shout" in result.output
    assert "lumina_plugins.memory_queue  (lumina" in result.output
    listed = httpx.get(f"{sqlite_server.http_url}/-/plugins").json()["plugins"]
    names = {p["name"]: p for p in listed}
    assert names["lumina_plugins.memory_queue"]["types"] == {"queue_backend": ["memory"]}


def test_third_party_queue_backend_and_pricing_provider_run_the_pipeline(lumina_factory, monkeypatch) -> None:
    """A plugin's queue backend carries the spans and its pricing provider prices them."""
    from lumina_core import PriceRule
    from lumina_plugins.memory_queue import MemoryQueue, MemoryQueueConfig

    put_counts: list[int] = []

    class CountingQueue(MemoryQueue):
        async def put(self, batch):
            put_counts.append(len(batch.spans))
            await super().put(batch)

    class FixedPrices:
        def lookup(self, provider, model, at):
            return PriceRule(source="fixed", rule="fixed:all", input=1.0, output=2.0) if model == "x-1" else None

    plugin = plugin_module(
        "lumina_test_components",
        lumina_register_queue_backends=lambda: [
            ComponentFactory(
                type="counting",
                create=lambda ctx, config: CountingQueue(config),
                config_model=MemoryQueueConfig,
                description="test",
            )
        ],
        lumina_register_pricing_providers=lambda: [
            ComponentFactory(
                type="fixed", create=lambda ctx, config: FixedPrices(), config_model=ComponentConfig, description="test"
            )
        ],
    )
    monkeypatch.setattr("lumina_core.plugins.builtin_plugins", lambda: [*builtin_plugins_before(), plugin])
    server = lumina_factory(**{"queue.type": "counting", "pricing.providers": ["fixed"]})
    request = raw_request(
        [{"name": "c", "attributes": {"gen_ai.request.model": "x-1", "gen_ai.usage.input_tokens": 1_000_000}}]
    )
    response = httpx.post(
        server.otlp_http_url, content=request.SerializeToString(), headers={"content-type": "application/x-protobuf"}
    )
    assert response.status_code == 200
    assert put_counts == [1]
    (trace,) = httpx.get(f"{server.http_url}/api/v1/traces").json()["data"]
    assert trace["cost_usd"] == 1.0


def install_plugin(root: Path, name: str, source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A distribution ``lumina-<name>`` with entry point ``<name>`` (module ``lumina_<name>``) on sys.path."""
    module = f"lumina_{name}"
    (root / f"{module}.py").write_text(source)
    dist_info = root / f"lumina_{name}-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: lumina-{name}\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(f"[lumina]\n{name} = {module}\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, module, raising=False)


BROKEN_AT_IMPORT = "raise RuntimeError('needs a licence key')\n"
BROKEN_AT_REGISTRATION = textwrap.dedent(
    """
    from lumina_core import hookimpl

    @hookimpl
    def lumina_register_alert_sinks():
        raise ValueError("no sinks today")
    """
)


def test_a_plugin_that_fails_at_start_up_is_reported_and_left_out_unless_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, installed_plugin: str
) -> None:
    install_plugin(tmp_path, "licensed", BROKEN_AT_IMPORT, monkeypatch)
    install_plugin(tmp_path, "moody", BROKEN_AT_REGISTRATION, monkeypatch)
    host = PluginHost()
    failed = {f.name: f.error for f in host.failures}
    assert failed == {"licensed": "RuntimeError: needs a licence key", "moody": "ValueError: no sinks today"}
    infos = {i.name: i for i in host.describe()}
    assert (infos["licensed"].distribution, infos["licensed"].error) == ("lumina-licensed", failed["licensed"])
    assert "shout" in host.factories["extractor"]  # the others still load

    with pytest.raises(ConfigError, match=r"plugins\.licensed: required plugin failed to load: RuntimeError"):
        PluginHost(require=["licensed"])
    with pytest.raises(ConfigError, match=r"plugins\.moody: required plugin failed to load: ValueError"):
        PluginHost(require=["moody"])
    with pytest.raises(ConfigError, match="required plugin 'absent' is not installed"):
        PluginHost(require=["absent"])
    allowed = PluginHost(allow=["shout"])
    assert allowed.failures == [] and "shout" in allowed.factories["extractor"]
    assert (
        PluginHost(allow=[]).factories["extractor"].keys()
        == PluginHost(entry_points=False).factories["extractor"].keys()
    )

    result = CliRunner().invoke(main, ["plugins"], env={"LUMINA_PLUGINS__ALLOW": '["licensed"]'})
    assert "licensed  (lumina-licensed 0.1)  -  FAILED: RuntimeError: needs a licence key" in result.output


def test_plugins_show_stability_and_the_instances_that_use_them(installed_plugin: str) -> None:
    settings = load_settings(
        None,
        env={},
        overrides={
            "pipeline.extractors": ["otel_genai", "shout/loud"],
            "extractors": {"shout/loud": {"provider": "p"}},
            "alerts.sinks": ["log"],
            "alerts.rules": [{"name": "spend", "kind": "budget", "params": {"limit_usd": 5}}],
        },
    )
    infos = {i.name: i for i in PluginHost().describe(configured_instances(settings))}
    assert infos["shout"].instances == ["extractor:shout/loud"]
    assert infos["shout"].stability == {"extractor/shout": "stable"}
    assert infos["lumina_plugins.alert_rules"].instances == ["alert_rule:budget/spend"]
    assert infos["lumina_plugins.alert_sinks"].instances == ["alert_sink:log"]
