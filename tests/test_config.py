"""Configuration: file, LUMINA_* overrides, ${env:}/${file:} indirection, and errors reported all at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lumina_core.cli import main
from lumina_core.config import load_settings, redacted
from lumina_core.plugin_api import ConfigError

FIXTURES = Path(__file__).parent / "fixtures" / "configs"


def test_no_file_means_embedded_defaults() -> None:
    settings = load_settings(None, env={})
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8000)
    assert (settings.server.otlp_http_port, settings.server.otlp_grpc_port) == (4318, 4317)
    assert settings.database_url == "sqlite+aiosqlite:///lumina-data/lumina.db"
    assert settings.queue.type == "memory"
    assert settings.pipeline.extractors[0] == "lumina"


def test_file_values_env_overrides_and_indirection(tmp_path: Path) -> None:
    env = {"TEST_LUMINA_DB": "sqlite+aiosqlite:////tmp/x.db", "LUMINA_SERVER__PORT": "9200"}
    settings = load_settings(FIXTURES / "valid.toml", env=env)
    assert settings.server.port == 9200  # the environment wins over the file
    assert settings.database_url == "sqlite+aiosqlite:////tmp/x.db"
    assert settings.queue.backend_config() == {"max_pending_spans": 5000}
    assert settings.pipeline.extractors == ["lumina", "otel_genai"]

    secret = tmp_path / "db-url"
    secret.write_text("postgresql+asyncpg://lumina:hunter2@db:5432/lumina\n")
    config = tmp_path / "lumina.toml"
    config.write_text(f'[storage]\nurl = "${{file:{secret}}}"\n')
    settings = load_settings(config, env={"LUMINA_PIPELINE__EXTRACTORS": '["otel_genai"]'})
    assert settings.database_url == "postgresql+asyncpg://lumina:hunter2@db:5432/lumina"
    assert settings.pipeline.extractors == ["otel_genai"]
    assert "hunter2" not in json.dumps(redacted(settings))


def test_database_url_alias() -> None:
    url = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    assert load_settings(None, env={"LUMINA_DATABASE_URL": url}).database_url == url


def test_every_error_is_reported_at_once_with_its_key_path(tmp_path: Path) -> None:
    config = tmp_path / "lumina.toml"
    config.write_text('[storage]\nurl = "${env:MISSING_DB_URL}"\n[server]\nport = "x"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(config, env={"LUMINA_NO_SUCH_THING": "1"})
    paths = [path for path, _ in err.value.errors]
    assert paths == ["LUMINA_NO_SUCH_THING", "storage.url", "server.port"]


def test_config_check_lists_file_and_component_errors() -> None:
    result = CliRunner().invoke(main, ["config", "check", str(FIXTURES / "invalid_many.toml")])
    assert result.exit_code == 1
    output = result.output
    for expected in (
        "5 error(s)",
        "server.port:",
        "server.otlp_grpc_port:",
        "server.colour:",
    ):
        assert expected in output, output


def test_config_check_validates_component_configs(tmp_path: Path) -> None:
    config = tmp_path / "lumina.toml"
    config.write_text(
        '[queue]\ntype = "memory"\nmax_pending_spans = -5\ncolour = 1\n'
        '[pipeline]\nextractors = ["otel_genai", "no_such_extractor"]\n'
    )
    result = CliRunner().invoke(main, ["config", "check", str(config)])
    assert result.exit_code == 1
    assert "3 error(s)" in result.output
    assert "queue.max_pending_spans:" in result.output
    assert "queue.colour:" in result.output
    assert "extractors.no_such_extractor: unknown extractor type 'no_such_extractor'; known:" in result.output
    assert "otel_genai" in result.output


def test_config_check_validates_alert_rules_and_sinks(tmp_path: Path) -> None:
    config = tmp_path / "lumina.toml"
    config.write_text(
        '[alerts]\nsinks = ["webhook/oncall"]\n'
        "[alerts.defaults]\nmin_samples = -1\n"
        '[[alerts.rules]]\nname = "spend"\nkind = "budget"\nsinks = ["nowhere"]\n'
        '[[alerts.rules]]\nname = "spike"\nkind = "cost_spike"\nservices.checkout = { above_pct = "lots" }\n'
        '[[alerts.rules]]\nname = "odd"\nkind = "no_such_kind"\n'
        '[alert_sinks."webhook/oncall"]\nheaders = { X = "1" }\n'
    )
    result = CliRunner().invoke(main, ["config", "check", str(config)])
    assert result.exit_code == 1
    for problem in (
        "alert_sinks.webhook/oncall.url: Field required",
        "alert_sinks.nowhere: unknown alert_sink type 'nowhere'",
        "alerts.rules.0.params.limit_usd: Field required",  # a budget needs its limit
        "alerts.rules.0.params.min_samples:",  # the defaults cascade into every rule
        "alerts.rules.1.services.checkout.above_pct:",
        "alerts.rules.2.kind: unknown alert rule kind 'no_such_kind'",
    ):
        assert problem in result.output, result.output


def test_config_check_accepts_a_good_file(tmp_path: Path) -> None:
    config = tmp_path / "lumina.toml"
    config.write_text("[server]\nport = 9000\n[queue]\nmax_pending_spans = 1000\n")
    result = CliRunner().invoke(main, ["config", "check", str(config)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output


def test_config_show_redacts_secrets(tmp_path: Path) -> None:
    config = tmp_path / "lumina.toml"
    config.write_text(
        '[storage]\nurl = "postgresql+asyncpg://lumina:s3cret@db/lumina"\n'
        '[alert_sinks."slack/team"]\nwebhook_url = "https://hooks.slack.com/services/s3cret"\n'
    )
    result = CliRunner().invoke(main, ["config", "show", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output
    assert "lumina:***@db" in result.output
