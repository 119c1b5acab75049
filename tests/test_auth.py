"""Projects and API keys: scopes, project isolation on intake and on every read, revocation at once,
and the refusal to serve without keys off loopback."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from click.testing import CliRunner
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from lumina_core.app import Lumina
from lumina_core.cli import main as cli
from lumina_core.plugin_api import ConfigError
from lumina_core.server import Endpoints
from tests.conftest import make_settings
from tests.support.otlp import raw_request

PROTOBUF = {"content-type": "application/x-protobuf"}


def llm_trace(service: str) -> tuple[ExportTraceServiceRequest, str]:
    trace_id = os.urandom(16)
    span = {
        "trace_id": trace_id,
        "name": "chat",
        "attributes": {
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 10,
            "user.id": "u-1",
        },
    }
    return raw_request([span], service=service), trace_id.hex()


def ingest(server: Endpoints, key: str | None, service: str, **headers: str) -> tuple[httpx.Response, str]:
    request, trace_id = llm_trace(service)
    auth = {"authorization": f"Bearer {key}"} if key else {}
    response = httpx.post(
        server.otlp_http_url, content=request.SerializeToString(), headers={**PROTOBUF, **auth, **headers}
    )
    return response, trace_id


def cli_key(database_url: str, project: str, *scopes: str) -> str:
    args = ["keys", "create", "--project", project, *(a for s in scopes for a in ("--scope", s))]
    result = CliRunner().invoke(cli, args, env={"LUMINA_DATABASE_URL": database_url, "LUMINA_CONFIG": None})
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


class Client:
    def __init__(self, server: Endpoints, key: str | None) -> None:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=server.http_url, headers=headers, timeout=30)

    def get(self, path: str, **params: object) -> httpx.Response:
        return self.http.get(path, params=params)


@pytest.fixture
def tenants(lumina_factory: Callable[..., Endpoints], database_url: str) -> dict:
    """A server with projects a and b; each has ingest, read and admin keys (made via API and CLI)."""
    server = lumina_factory(database_url)
    open_api = Client(server, None)
    first = open_api.http.post("/api/v1/keys", params={"project": "a"}, json={"name": "boot", "scopes": ["admin"]})
    assert first.status_code == 201, first.text
    admin_a = first.json()["key"]
    assert open_api.get("/api/v1/traces").status_code == 401  # the first key closed the open mode
    keys = {"a": {"admin": admin_a}, "b": {"admin": cli_key(database_url, "b", "admin")}}
    for project in ("a", "b"):
        admin = Client(server, keys[project]["admin"])
        for scope in ("ingest", "read"):
            made = admin.http.post("/api/v1/keys", json={"name": scope, "scopes": [scope]})
            assert made.status_code == 201 and made.json()["project_id"] == project, made.text
            keys[project][scope] = made.json()["key"]
    return {"server": server, "keys": keys, "database_url": database_url}


def test_projects_never_see_each_other(tenants: dict) -> None:
    server, keys = tenants["server"], tenants["keys"]
    response, trace_a = ingest(server, keys["a"]["ingest"], "svc-a")
    assert response.status_code == 200, response.text
    response, trace_b = ingest(server, keys["b"]["ingest"], "svc-b")
    assert response.status_code == 200, response.text
    read_a, read_b = Client(server, keys["a"]["read"]), Client(server, keys["b"]["read"])

    assert [t["trace_id"] for t in read_a.get("/api/v1/traces").json()["data"]] == [trace_a]
    assert [t["trace_id"] for t in read_b.get("/api/v1/traces").json()["data"]] == [trace_b]
    assert read_b.get(f"/api/v1/traces/{trace_a}").status_code == 404
    span_a = read_a.get("/api/v1/spans").json()["data"][0]
    assert read_b.get(f"/api/v1/spans/{trace_a}/{span_a['span_id']}").status_code == 404
    assert read_b.get("/api/v1/spans", q="chat").json()["data"][0]["trace_id"] == trace_b
    for path in ("/api/v1/traces", "/api/v1/spans", "/api/v1/analytics", "/api/v1/models", "/api/v1/services"):
        assert read_b.get(path, project="a").status_code == 403, path
    totals_b = read_b.get("/api/v1/analytics", start=0).json()["data"]
    assert [row["requests"] for row in totals_b] == [1]
    assert [s["service_name"] for s in read_b.get("/api/v1/services").json()["data"]] == ["svc-b"]
    assert [p["id"] for p in read_b.get("/api/v1/projects").json()["data"]] == ["b"]

    # a key of b cannot file spans under a
    response, _ = ingest(server, keys["b"]["ingest"], "sneaky", **{"x-lumina-project": "a"})
    assert response.status_code == 403
    assert len(read_a.get("/api/v1/traces").json()["data"]) == 1
    # admin keys manage their own project's keys only
    b_keys = Client(server, keys["b"]["admin"]).get("/api/v1/keys").json()["data"]
    assert {k["project_id"] for k in b_keys} == {"b"} and all("key" not in k for k in b_keys)
    a_key_id = Client(server, keys["a"]["admin"]).get("/api/v1/keys").json()["data"][0]["id"]
    assert Client(server, keys["b"]["admin"]).http.delete(f"/api/v1/keys/{a_key_id}").status_code == 404


def test_scopes(tenants: dict) -> None:
    server, keys = tenants["server"], tenants["keys"]
    response, _ = ingest(server, keys["a"]["read"], "svc")
    assert response.status_code == 403 and "ingest" in response.text
    assert Client(server, keys["a"]["ingest"]).get("/api/v1/traces").status_code == 403
    assert Client(server, keys["a"]["read"]).get("/api/v1/keys").status_code == 403
    denied = Client(server, keys["a"]["read"]).http.post("/api/v1/pricing/custom", json={"model": "m"})
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "forbidden"
    missing = Client(server, None).get("/api/v1/traces")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["code"] == "unauthenticated"
    assert Client(server, "lum_not-a-real-key").get("/api/v1/traces").status_code == 401
    response, _ = ingest(server, None, "svc")
    assert response.status_code == 401
    # operator pages stay open for probes
    assert Client(server, None).get("/-/ready").status_code == 200


def test_revoked_keys_stop_at_once(tenants: dict) -> None:
    server, keys, url = tenants["server"], tenants["keys"], tenants["database_url"]
    admin = Client(server, keys["a"]["admin"])
    made = admin.http.post("/api/v1/keys", json={"scopes": ["ingest", "read"]}).json()
    assert ingest(server, made["key"], "svc")[0].status_code == 200
    assert admin.http.delete(f"/api/v1/keys/{made['id']}").status_code == 204
    assert ingest(server, made["key"], "svc")[0].status_code == 401
    assert Client(server, made["key"]).get("/api/v1/traces").status_code == 401

    # revoked from another process (the CLI): the very next request is refused
    reader = Client(server, keys["a"]["read"])
    assert reader.get("/api/v1/traces").status_code == 200
    read_id = next(k["id"] for k in admin.get("/api/v1/keys").json()["data"] if k["name"] == "read")
    env = {"LUMINA_DATABASE_URL": url, "LUMINA_CONFIG": None}
    result = CliRunner().invoke(cli, ["keys", "revoke", str(read_id)], env=env)
    assert result.exit_code == 0, result.output
    assert reader.get("/api/v1/traces").status_code == 401
    listed = CliRunner().invoke(cli, ["keys", "list", "--project", "a", "--json"], env=env)
    assert '"revoked_unix_nano": null' in listed.output and keys["a"]["read"] not in listed.output


def exporter_provider(exporter) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "sdk-with-key"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def test_sdk_exporters_send_keys_over_http_and_grpc(lumina_factory: Callable[..., Endpoints], tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    server = lumina_factory(url)
    ingest_key = cli_key(url, "sdk", "ingest")
    read_key = cli_key(url, "sdk", "read")
    for exporter in (
        HttpExporter(endpoint=server.otlp_http_url, headers={"authorization": f"Bearer {ingest_key}"}),
        GrpcExporter(endpoint=server.grpc_target, insecure=True, headers={"x-lumina-api-key": ingest_key}),
    ):
        provider = exporter_provider(exporter)
        provider.get_tracer("t").start_span("keyed").end()
        provider.shutdown()
    names = [t["name"] for t in Client(server, read_key).get("/api/v1/traces").json()["data"]]
    assert names == ["keyed", "keyed"]

    # a read key over gRPC is refused with PERMISSION_DENIED, no key with UNAUTHENTICATED
    request, _ = llm_trace("grpc")
    with grpc.insecure_channel(server.grpc_target) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        for metadata, code in (
            ((("authorization", f"Bearer {read_key}"),), grpc.StatusCode.PERMISSION_DENIED),
            ((), grpc.StatusCode.UNAUTHENTICATED),
        ):
            with pytest.raises(grpc.RpcError) as error:
                export(request.SerializeToString(), metadata=metadata, timeout=10)
            assert error.value.code() == code


def test_open_mode_files_spans_under_the_named_project(sqlite_server: Endpoints) -> None:
    response, trace_id = ingest(sqlite_server, None, "svc", **{"x-lumina-project": "team-x"})
    assert response.status_code == 200
    api = Client(sqlite_server, None)
    assert api.get("/api/v1/traces").json()["data"] == []
    assert [t["trace_id"] for t in api.get("/api/v1/traces", project="team-x").json()["data"]] == [trace_id]
    assert "team-x" in [p["id"] for p in api.get("/api/v1/projects").json()["data"]]
    assert api.get("/api/v1/traces", project="Bad Name!").status_code == 400
    assert ingest(sqlite_server, None, "svc", **{"x-lumina-project": "Bad Name!"})[0].status_code == 400


def start_and_stop(tmp_path: Path, **overrides: object) -> None:
    settings = make_settings(tmp_path, **{"server.otlp_grpc_port": None, **overrides})

    async def run() -> None:
        lumina = Lumina(settings)
        try:
            await lumina.start()
        finally:
            await lumina.stop()

    asyncio.run(run())


def test_refuses_to_serve_off_loopback_without_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="without API keys"):
        start_and_stop(tmp_path, **{"server.host": "0.0.0.0"})
    start_and_stop(tmp_path, **{"server.host": "0.0.0.0", "server.insecure": True})
    start_and_stop(tmp_path, **{"server.host": "127.0.0.1"})
    cli_key(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'lumina.db'}", "default", "admin")
    start_and_stop(tmp_path, **{"server.host": "0.0.0.0"})
