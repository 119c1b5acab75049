"""The built wheel installs ``lumina_core``, ``lumina_plugins`` and ``lumina_web`` (never top-level
``plugins``/``web``) and serves from a fresh virtual environment."""

from __future__ import annotations

import os
import subprocess
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.support.net import free_port
from tests.support.otlp import raw_request
from tests.support.venv import fresh_venv, site_packages

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_maps_plugins_and_web_to_lumina_packages(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"lumina_core", "lumina_plugins", "lumina_web"}
    for folder, name in (("lumina_core", "lumina_core"), ("plugins", "lumina_plugins"), ("web", "lumina_web")):
        for init in (ROOT / folder).rglob("__init__.py"):
            packaged = f"{name}/{init.relative_to(ROOT / folder).as_posix()}"
            assert packaged in names, f"{packaged} is missing from the wheel (pyproject packages)"
    assert "lumina_web/templates/traces.html" in names
    for asset in (
        "static/lumina.css",
        "static/lumina.js",
        "static/vendor/uplot/uPlot.iife.min.js",
        "static/vendor/uplot/LICENSE",
        "templates/overview.html",
    ):
        assert f"lumina_web/{asset}" in names, asset
    assert "lumina_core/storage/migrations/versions/0001_spans_and_traces.py" in names
    assert "lumina_core/storage/migrations/script.py.mako" in names


@pytest.mark.slow
def test_wheel_installs_and_serves_in_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    venv = fresh_venv(tmp_path / "venv", wheel)
    python = venv / "bin" / "python"
    fresh_site = site_packages(python)
    located = subprocess.run(
        [python, "-c", "import lumina_core, lumina_plugins, lumina_web; print(lumina_plugins.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    assert located.startswith(fresh_site)

    port, otlp_port, grpc_port = free_port(), free_port(), free_port()
    (tmp_path / "lumina.toml").write_text(
        f'data_dir = "{tmp_path / "data"}"\n[server]\nport = {port}\notlp_http_port = {otlp_port}\n'
        f'otlp_grpc_port = {grpc_port}\n[quality]\ndetectors = ["exact_match"]\n'
    )
    # the test environment also holds editable contrib plugins, which the fresh venv cannot import
    env = {**os.environ, "LUMINA_CONFIG": str(tmp_path / "lumina.toml"), "LUMINA_PLUGINS__ENTRY_POINTS": "false"}
    server = subprocess.Popen([venv / "bin" / "lumina", "serve"], cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/-/ready").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("the installed lumina did not become ready")
        for page in ("/", "/traces", "/models", "/static/vendor/uplot/uPlot.iife.min.js"):
            assert httpx.get(f"http://127.0.0.1:{port}{page}").status_code == 200, page
        plugins = httpx.get(f"http://127.0.0.1:{port}/-/plugins").json()["plugins"]
        assert {"lumina_plugins.memory_queue", "lumina_plugins.extractors.otel_genai"} <= {p["name"] for p in plugins}
        # without lumina-semantic, quality monitoring runs with exact match alone
        detectors = [t for p in plugins for t in p["types"].get("detector", [])]
        assert detectors == ["exact_match"]
        answer = {"gen_ai.output.messages": '[{"role": "assistant", "content": "Paris"}]'}
        for _ in range(2):
            body = raw_request([{"name": "chat", "attributes": {"gen_ai.request.model": "gpt-4o", **answer}}])
            exported = httpx.post(
                f"http://127.0.0.1:{otlp_port}/v1/traces",
                content=body.SerializeToString(),
                headers={"content-type": "application/x-protobuf"},
            )
            assert exported.status_code == 200
        deadline = time.monotonic() + 30
        verdicts: list[str] = []
        while len(verdicts) < 2 and time.monotonic() < deadline:
            results = httpx.get(f"http://127.0.0.1:{port}/api/v1/quality/results").json()["data"]
            verdicts = sorted(f"{r['detector']}:{r['verdict']}" for r in results)
            time.sleep(0.1)
        assert verdicts == ["exact_match:baseline", "exact_match:match"]
    finally:
        server.terminate()
        server.wait(30)
