"""The plugin author's path end to end: `lumina plugin new` writes an alert-sink package; installed with
Lumina into a fresh virtual environment, its own tests pass, Lumina discovers it through its entry point,
and once enabled in lumina.toml it receives a real alert fired by real traffic."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from lumina_core.cli import main
from lumina_core.testing import http_receiver
from tests.support.net import free_port
from tests.support.venv import fresh_venv


def test_plugin_new_refuses_a_bad_name_or_an_existing_folder(tmp_path: Path) -> None:
    bad = CliRunner().invoke(main, ["plugin", "new", "Teams-1", "--kind", "alert-sink", "--dir", str(tmp_path)])
    assert bad.exit_code == 2 and "lowercase letters" in bad.output
    args = ["plugin", "new", "teams", "--kind", "pricing", "--dir", str(tmp_path)]
    assert CliRunner().invoke(main, args).exit_code == 0
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "already exists" in again.output


@pytest.mark.slow
def test_a_scaffolded_alert_sink_installs_passes_its_tests_and_receives_a_real_alert(
    wheel: Path, tmp_path: Path
) -> None:
    made = CliRunner().invoke(main, ["plugin", "new", "teams", "--kind", "alert-sink", "--dir", str(tmp_path)])
    assert made.exit_code == 0, made.output
    package = tmp_path / "lumina-teams"
    pyproject = (package / "pyproject.toml").read_text()
    assert 'keywords = ["lumina-plugin"]' in pyproject and 'teams = "lumina_teams"' in pyproject

    venv = fresh_venv(tmp_path / "venv", wheel)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, str(package)], check=True, timeout=300)

    tests = subprocess.run(
        [venv / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=package,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tests.returncode == 0, tests.stdout[-5000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and "skipped" not in tests.stdout

    with http_receiver() as receiver:
        port, otlp_port = free_port(), free_port()
        config = tmp_path / "lumina.toml"
        config.write_text(
            f'data_dir = "{tmp_path / "data"}"\n'
            f"[server]\nport = {port}\notlp_http_port = {otlp_port}\notlp_grpc_port = {free_port()}\n"
            # the test environment's editable plugins are visible but not importable here: allow only ours
            '[plugins]\nallow = ["teams"]\nrequire = ["teams"]\n'
            '[alerts]\nsinks = ["teams/ops"]\n[alerts.delivery]\nbackoff_seconds = 0.1\n'
            f'[alert_sinks."teams/ops"]\nurl = "{receiver.url}"\n'
            '[[alerts.rules]]\nname = "daily-budget"\nkind = "budget"\nwindow = "day"\n'
            "[alerts.rules.params]\nlimit_usd = 0.01\n"
        )
        env = {**os.environ, "LUMINA_CONFIG": str(config)}
        listed = subprocess.run(
            [venv / "bin" / "lumina", "plugins", "--json"], env=env, capture_output=True, text=True, check=True
        )
        (ours,) = [p for p in json.loads(listed.stdout) if p["name"] == "teams"]
        assert (ours["distribution"], ours["types"], ours["instances"]) == (
            "lumina-teams",
            {"alert_sink": ["teams"]},
            ["alert_sink:teams/ops"],
        )

        server = subprocess.Popen([venv / "bin" / "lumina", "serve", "--log-level", "warning"], env=env, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/-/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and server.poll() is None, "the installed lumina did not start"
                time.sleep(0.2)
            provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
            exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{otlp_port}/v1/traces")
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            for _ in range(3):
                with provider.get_tracer("kit").start_as_current_span("chat gpt-4o") as span:
                    span.set_attributes(
                        {
                            "gen_ai.provider.name": "openai",
                            "gen_ai.request.model": "gpt-4o",
                            "gen_ai.usage.input_tokens": 10_000,
                            "gen_ai.usage.output_tokens": 500,
                        }
                    )
            provider.shutdown()
            assert httpx.post(f"http://127.0.0.1:{port}/api/v1/alerts/evaluate").status_code == 200
            (received,) = receiver.wait_for(1)
            alert = received.json()["alert"]
            assert (alert["rule"], alert["event"], alert["scope"]) == (
                "daily-budget",
                "firing",
                {"service": "checkout"},
            )
        finally:
            server.terminate()
            server.wait(30)
