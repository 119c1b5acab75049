"""The OpenAPI document describes the API as it behaves: schemathesis generates requests from it (valid
and invalid) and checks that nothing answers 500 and every response matches its declared schema."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lumina_core.server import Endpoints
from tests.conftest import make_settings, postgres_database, running_lumina
from tests.test_query_api import make_calls, request_for

ADMIN_HEADERS: dict[str, str] = {}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def api_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    """A server with some data and an admin key (schemathesis sends it, so the server stays in key mode)."""
    tmp_path: Path = tmp_path_factory.mktemp("openapi")
    if request.param == "sqlite":
        with running_lumina(make_settings(tmp_path)) as (_, server):
            yield from _seeded(server)
    else:
        with postgres_database() as url, running_lumina(make_settings(tmp_path, url)) as (_, server):
            yield from _seeded(server)


def _seeded(server: Endpoints) -> Iterator[Endpoints]:
    made = httpx.post(f"{server.http_url}/api/v1/keys", json={"name": "schemathesis", "scopes": ["admin"]})
    ADMIN_HEADERS["authorization"] = f"Bearer {made.json()['key']}"
    for call in make_calls(12):
        response = httpx.post(
            server.otlp_http_url,
            content=request_for(call).SerializeToString(),
            headers={"content-type": "application/x-protobuf", **ADMIN_HEADERS},
        )
        assert response.status_code == 200
    yield server


def test_api_conforms_to_its_openapi_document(
    api_server: Endpoints, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Every check schemathesis has (server errors, status codes, content types, response schemas,
    rejection of invalid input, acceptance of valid input), over generated requests to every operation.

    On PostgreSQL the coverage phase (boundary values of every parameter: parsing and validation, the same
    code on either database) is left out; it took two thirds of the time. Fuzzing and the stateful phase
    still run there."""
    phases = "examples,coverage,fuzzing,stateful"
    if request.node.callspec.params["api_server"] == "postgres":
        phases = "examples,fuzzing,stateful"
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        "run",
        f"{api_server.http_url}/api/v1/openapi.json",
        "--phases",
        phases,
        "--checks",
        "all",
        "--max-examples",
        "20",
        "--seed",
        "1",
        "--header",
        f"Authorization: {ADMIN_HEADERS['authorization']}",
        # revoking keys at random would revoke the key the run authenticates with (see test_auth.py)
        "--exclude-path",
        "/api/v1/keys/{key_id}",
        "--request-timeout",
        "30",
        "--no-color",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    Path("/tmp/st-report.txt").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]


def test_document_is_openapi_3_1_with_every_route(sqlite_server: Endpoints) -> None:
    doc = httpx.get(f"{sqlite_server.http_url}/api/v1/openapi.json").json()
    assert doc["openapi"] == "3.1.0"
    paths = set(doc["paths"])
    for path in ("/api/v1/traces", "/api/v1/spans/{trace_id}/{span_id}", "/api/v1/analytics", "/api/v1/keys"):
        assert path in paths
    params = {p["name"] for p in doc["paths"]["/api/v1/traces"]["get"]["parameters"]}
    assert {"service", "model", "attribute", "q", "sort", "cursor", "min_cost", "project"} <= params
