"""The ``lumina`` command: a thin face over the same functions the server uses."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncEngine

from lumina_core.auth import DEFAULT_PROJECT, SCOPES, check_project_id, check_scopes, new_key
from lumina_core.components import build_components, configured_instances
from lumina_core.config import Settings, default_config_path, load_settings, read_settings, redacted
from lumina_core.plugin_api import ConfigError
from lumina_core.plugins import PluginHost
from lumina_core.retention import SweepRunning
from lumina_core.storage.projects import create_key, list_keys, revoke_key

T = TypeVar("T")


def _settings(config: Path | None, overrides: dict | None = None) -> Settings:
    try:
        return load_settings(config or default_config_path(), overrides=overrides)
    except ConfigError as exc:
        _print_config_errors(exc)
        sys.exit(2)


def _print_config_errors(exc: ConfigError) -> None:
    click.echo(f"configuration has {len(exc.errors)} error(s):", err=True)
    for path, message in exc.errors:
        click.echo(f"  {path}: {message}", err=True)


config_option = click.option(
    "--config",
    "-c",
    type=click.Path(path_type=Path),
    help="lumina.toml to use (default: $LUMINA_CONFIG or ./lumina.toml)",
)


@click.group()
@click.version_option(package_name="lumina")
def main() -> None:
    """Lumina: self-hosted observability for LLM applications."""


@main.command()
@config_option
@click.option("--host", help="address to bind (default 127.0.0.1)")
@click.option("--port", type=int, help="dashboard, API and OTLP/HTTP port (default 8000)")
@click.option("--insecure", is_flag=True, default=None, help="allow serving a non-loopback address without API keys")
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice(["all", "intake", "worker", "api"]),
    help="what this process runs (repeatable; default: server.roles, which defaults to all)",
)
@click.option("--log-level", default="info", show_default=True)
def serve(
    config: Path | None,
    host: str | None,
    port: int | None,
    insecure: bool | None,
    roles: tuple[str, ...],
    log_level: str,
) -> None:
    """Run Lumina: OTLP intake (gRPC 4317, HTTP 4318), worker, API and dashboard, in one process by default.

    With a shared queue (NATS) and PostgreSQL, --role intake|worker|api runs one part; start any number of
    each, on any machines."""
    from lumina_core.app import Lumina
    from lumina_core.server import LuminaServer

    options = {
        "server.host": host,
        "server.port": port,
        "server.insecure": insecure,
        "server.roles": list(roles) or None,
    }
    overrides = {k: v for k, v in options.items() if v is not None}
    settings = _settings(config, overrides)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        lumina = Lumina(settings)
    except ConfigError as exc:
        _print_config_errors(exc)
        sys.exit(2)
    server = LuminaServer(lumina, log_level=log_level)
    ep = server.endpoints
    otlp = f"; OTLP/HTTP on {ep.otlp_http_url}" if settings.server.runs("intake") else ""
    click.echo(f"Lumina ({', '.join(settings.server.roles)}) on {ep.http_url}{otlp}")
    server.run()
    if not server.started:
        sys.exit(3)


@main.command()
@config_option
@click.option(
    "--since", required=True, help="reprice spans that started at or after this date (YYYY-MM-DD or ISO time)"
)
@click.option("--model", help="only spans of this model")
def reprice(config: Path | None, since: str, model: str | None) -> None:
    """Recompute stored costs with the current prices; trace rollups follow."""
    from lumina_core.config import to_unix_nano
    from lumina_core.pricing import PriceStage
    from lumina_core.reprice import count_spans_to_reprice
    from lumina_core.reprice import reprice as run_reprice

    try:
        since_ns = to_unix_nano(datetime.fromisoformat(since.replace("Z", "+00:00")))
    except ValueError:
        raise click.BadParameter(f"{since!r} is not a date or ISO time", param_hint="--since") from None

    async def work(lumina: Any) -> None:
        await lumina.reload_custom_prices()
        total = await count_spans_to_reprice(lumina.engine, since_ns, model)
        with click.progressbar(length=total, label=f"Repricing {total} LLM spans", file=sys.stderr) as bar:
            result = await run_reprice(
                lumina.engine, PriceStage(lumina.pricing), lumina.writer, since_ns, model, progress=bar.update
            )
        click.echo(f"{result.spans} spans repriced, {result.changed} changed")

    _with_lumina(config, work)


@main.group()
def retention() -> None:
    """Retention: archive and delete spans older than their retention."""


@retention.command("run")
@config_option
@click.option("--dry-run", is_flag=True, help="count what would be deleted; change nothing")
def retention_run(config: Path | None, dry_run: bool) -> None:
    """Sweep now (the server sweeps every day at 00:00 UTC): archive, then delete, expired spans."""

    async def work(lumina: Any) -> dict[str, Any]:
        try:
            return {p: r.as_dict() for p, r in (await lumina.retention.sweep(dry_run=dry_run)).items()}
        except SweepRunning as exc:
            raise click.ClickException(str(exc)) from exc

    report = _with_lumina(config, work)
    verb = "would delete" if dry_run else "deleted"
    for project_id, done in report.items():
        line = f"{project_id}: {verb} {done['spans']} spans ({done['traces']} traces)"
        if done["archives"]:
            line += f", archived to {', '.join(done['archives'])}"
        click.echo(line)
        if done["error"]:
            click.echo(f"{project_id}: stopped: {done['error']}; what was not archived is kept", err=True)
    if not report:
        click.echo(f"nothing is older than its retention; {verb} nothing")
    if any(done["error"] for done in report.values()):
        sys.exit(1)


@main.command("import")
@config_option
@click.argument("archives", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def import_command(config: Path | None, archives: tuple[Path, ...]) -> None:
    """Load archived spans back (what `retention run` archived); importing twice changes nothing."""
    from lumina_core.components import all_archivers
    from lumina_core.retention import import_archive, read_archive

    async def work(lumina: Any) -> None:
        readers = all_archivers(lumina.settings, lumina.plugins)
        for path in archives:
            try:
                chunks = read_archive(readers, path)
            except ValueError as exc:
                raise click.ClickException(str(exc)) from None
            click.echo(f"{path}: {await import_archive(lumina.writer, chunks)} spans imported")

    _with_lumina(config, work)


@main.group()
def replay() -> None:
    """Replay captured LLM calls with new parameters and compare (sets, runs)."""


@replay.command("create")
@config_option
@click.argument("name")
@click.option("--project", default=DEFAULT_PROJECT, show_default=True)
@click.option("--service")
@click.option("--span-name")
@click.option("--model")
@click.option("--since", help="calls started at or after this time (ISO 8601)")
@click.option("--limit", type=int, default=200, show_default=True)
@click.option("--sample", is_flag=True, help="a random sample rather than the newest calls")
def replay_create(
    config: Path | None,
    name: str,
    project: str,
    service: str | None,
    span_name: str | None,
    model: str | None,
    since: str | None,
    limit: int,
    sample: bool,
) -> None:
    """Freeze LLM calls matching the filters as a replay set."""
    from lumina_core.config import to_unix_nano
    from lumina_core.replay.store import ReplaySelection, create_set

    start = to_unix_nano(datetime.fromisoformat(since.replace("Z", "+00:00"))) if since else None
    selection = ReplaySelection(
        service=service, span_name=span_name, model=model, start_ns=start, limit=limit, sample=sample
    )
    created = _run_on_database(config, lambda engine: create_set(engine, project, name, selection))
    click.echo(f"replay set {created['id']}: {created['item_count']} calls")


@replay.command("run")
@config_option
@click.argument("set_id", type=int)
@click.option("--project", default=DEFAULT_PROJECT, show_default=True)
@click.option("--model", help="replay with this model")
@click.option("--provider", help="… on this provider (an executor must serve it)")
@click.option("--temperature", type=float)
@click.option("--max-tokens", type=int)
@click.option("--top-p", type=float)
@click.option("--system-prompt")
@click.option("--find", help="replace this text in every prompt …")
@click.option("--replace", default="", help="… by this")
@click.option("--concurrency", type=int, default=5, show_default=True)
@click.option("--rpm", type=float, help="requests per minute (evenly paced: also the load-test rate)")
@click.option("--tpm", type=float, help="tokens per minute")
def replay_run(
    config: Path | None,
    set_id: int,
    project: str,
    model: str | None,
    provider: str | None,
    temperature: float | None,
    max_tokens: int | None,
    top_p: float | None,
    system_prompt: str | None,
    find: str | None,
    replace: str,
    concurrency: int,
    rpm: float | None,
    tpm: float | None,
) -> None:
    """Run a replay set here, with a progress bar; if it stops, `lumina replay resume RUN` goes on."""
    from lumina_core.replay import store

    overrides = store.ReplayOverrides(
        model=model,
        provider=provider,
        temperature=temperature,
        max_tokens=max_tokens,
        top_p=top_p,
        system_prompt=system_prompt,
        find=find,
        replace=replace,
    )
    limits = store.ReplayLimits(concurrency=concurrency, requests_per_minute=rpm, tokens_per_minute=tpm)

    async def work(lumina: Any) -> None:
        found = await store.get_set(lumina.engine, project, set_id)
        if found is None:
            raise click.ClickException(f"no replay set {set_id} in project {project}")
        run = await store.create_run(lumina.engine, project, found, overrides, limits, "cli")
        click.echo(f"replay run {run['id']}")
        await _run_replay(lumina, run)

    _with_lumina(config, work)


@replay.command("resume")
@config_option
@click.argument("run_id", type=int)
def replay_resume(config: Path | None, run_id: int) -> None:
    """Go on with a run that stopped: calls already answered are not sent again."""
    from lumina_core.replay import store

    async def work(lumina: Any) -> None:
        run = await store.get_run(lumina.engine, run_id)
        if run is None:
            raise click.ClickException(f"no replay run {run_id}")
        await _run_replay(lumina, run)

    _with_lumina(config, work)


async def _run_replay(lumina: Any, run: dict[str, Any]) -> None:
    from lumina_core.api.replay import run_detail

    with click.progressbar(
        length=run["item_count"], label=f"Replaying {run['item_count']} calls", file=sys.stderr
    ) as bar:
        state = await lumina.replay.run(run["id"], progress=bar.update)
    detail = await run_detail(lumina, run)
    click.echo(json.dumps({"run": run["id"], "state": state, **detail["summary"]}, indent=2))


@replay.command("cancel")
@config_option
@click.argument("run_id", type=int)
@click.option("--project", default=DEFAULT_PROJECT, show_default=True)
def replay_cancel(config: Path | None, run_id: int, project: str) -> None:
    """Stop a run: no new call is sent."""
    from lumina_core.replay.store import cancel_run

    if not _run_on_database(config, lambda engine: cancel_run(engine, project, run_id)):
        raise click.ClickException(f"replay run {run_id} is not queued or running in project {project}")
    click.echo(f"replay run {run_id} cancelled")


def _with_lumina(config: Path | None, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work`` with a Lumina built from the configuration (plugins, prices, rules, sinks) but not serving,
    on its database migrated to the current schema."""
    import asyncio

    from lumina_core.app import Lumina
    from lumina_core.storage.database import migrate

    try:
        lumina = Lumina(_settings(config))
    except ConfigError as exc:
        _print_config_errors(exc)
        sys.exit(2)

    async def run() -> T:
        try:
            await migrate(lumina.engine)
            return await work(lumina)
        finally:
            await lumina.engine.dispose()

    return asyncio.run(run())


def _run_on_database(config: Path | None, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run ``work`` against the configured database, migrated to the current schema."""
    import asyncio

    from lumina_core.storage.database import create_engine, migrate

    settings = _settings(config)

    async def run() -> T:
        engine = create_engine(settings.database_url)
        try:
            await migrate(engine)
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())


@main.group()
def keys() -> None:
    """Create, list and revoke API keys (a key belongs to one project and has scopes)."""


@keys.command("create")
@config_option
@click.option("--project", default=DEFAULT_PROJECT, show_default=True, help="project the key belongs to")
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(SCOPES), help="repeatable")
@click.option("--name", default="", help="what the key is for")
def keys_create(config: Path | None, project: str, scopes: tuple[str, ...], name: str) -> None:
    """Create a key and print it (it is shown only this once; Lumina keeps only its hash)."""
    try:
        check_project_id(project)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--project") from None
    key = new_key()
    row = _run_on_database(
        config, lambda engine: create_key(engine, project, name, check_scopes(scopes), key.key_hash, key.prefix)
    )
    click.echo(f"created key {row['id']} for project {project!r} with scopes {', '.join(row['scopes'])}:", err=True)
    click.echo(key.secret)


@keys.command("list")
@config_option
@click.option("--project", help="only this project's keys")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def keys_list(config: Path | None, project: str | None, as_json: bool) -> None:
    """List keys (never their secrets)."""
    rows = _run_on_database(config, lambda engine: list_keys(engine, project))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = "revoked" if row["revoked_unix_nano"] else "live"
        click.echo(
            f"{row['id']}  {row['project_id']}  {row['prefix']}…  {','.join(row['scopes'])}  {state}  {row['name']}"
        )


@keys.command("revoke")
@config_option
@click.argument("key_id", type=int)
def keys_revoke(config: Path | None, key_id: int) -> None:
    """Revoke key KEY_ID; it stops working at once, in every process."""
    if not _run_on_database(config, lambda engine: revoke_key(engine, key_id)):
        click.echo(f"no live key {key_id}", err=True)
        sys.exit(1)
    click.echo(f"key {key_id} revoked")


@main.group()
def quality() -> None:
    """Quality baselines."""


@quality.command("pin")
@config_option
@click.argument("trace_id")
@click.argument("span_id")
@click.option("--project", default="default", show_default=True)
def quality_pin(config: Path | None, trace_id: str, span_id: str, project: str) -> None:
    """Make a span's response the one baseline of its prompt; the current baselines retire."""
    from lumina_core.quality import NotPinnable, pin_span

    try:
        pinned = _run_on_database(config, lambda engine: pin_span(engine, project, trace_id.lower(), span_id.lower()))
    except NotPinnable as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"baseline {pinned['id']} pinned for prompt {pinned['fingerprint']}")


@main.group()
def alerts() -> None:
    """Alert rules and alerts: test a rule, list, acknowledge and resolve alerts."""


@alerts.command("test")
@config_option
@click.argument("rule")
@click.option("--project", default=DEFAULT_PROJECT, show_default=True)
@click.option("--at", "at", help="evaluate as at this ISO time (default: now)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def alerts_test(config: Path | None, rule: str, project: str, at: str | None, as_json: bool) -> None:
    """Evaluate RULE now and print what it would send; changes nothing, sends nothing."""
    from lumina_core.config import to_unix_nano

    try:
        at_ns = to_unix_nano(datetime.fromisoformat(at.replace("Z", "+00:00"))) if at else None
    except ValueError:
        raise click.BadParameter(f"{at!r} is not an ISO time", param_hint="--at") from None

    async def work(lumina: Any) -> list[Any]:
        await lumina.alerts.load_rules()
        if not any(r.name == rule for r in lumina.alerts.rules_of(project)):
            raise click.ClickException(f"no alert rule {rule!r} in project {project!r}")
        return list(await lumina.alerts.evaluate(at_ns, rule=rule, project_id=project, dry_run=True))

    decisions = _with_lumina(config, work)
    if as_json:
        click.echo(json.dumps([d.to_dict() for d in decisions], indent=2))
        return
    if not decisions:
        click.echo(f"{rule}: no calls in its window, nothing to judge")
    for d in decisions:
        scope = ", ".join(f"{k}={v}" for k, v in d.scope.items()) or "all"
        state = {True: "FIRING", False: "ok", None: "no verdict"}[d.verdict.firing]
        click.echo(f"{rule} ({scope}): {state} - {d.verdict.summary}; would {d.action}")
        if d.alert is not None:
            click.echo(f"  would send to {', '.join(d.sinks) or 'no sink'}: {json.dumps(d.alert.to_dict())}")


@alerts.command("list")
@config_option
@click.option("--project", default=DEFAULT_PROJECT, show_default=True)
@click.option("--state", type=click.Choice(["open", "firing", "acknowledged", "resolved"]))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def alerts_list(config: Path | None, project: str, state: str | None, as_json: bool) -> None:
    """List alerts, newest first."""
    from lumina_core.alerting.store import list_alerts

    rows = _run_on_database(config, lambda engine: list_alerts(engine, project, state))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        scope = ",".join(f"{k}={v}" for k, v in row["scope"].items())
        click.echo(f"{row['id']}  {row['state']:<12}  {row['severity']:<8}  {row['rule']}  {scope}  {row['summary']}")


def _act_on_alert(config: Path | None, project: str, alert_id: int, verb: str) -> None:
    async def work(lumina: Any) -> Any:
        act = lumina.alerts.acknowledge if verb == "acknowledged" else lumina.alerts.resolve
        alert = await act(project, alert_id, "cli")
        if alert is not None and verb == "resolved":
            await lumina.outbox.deliver_due()  # no server may be running to send the news
        return alert

    if _with_lumina(config, work) is None:
        click.echo(f"no open alert {alert_id} in project {project!r}", err=True)
        sys.exit(1)
    click.echo(f"alert {alert_id} {verb}")


@alerts.command("ack")
@config_option
@click.argument("alert_id", type=int)
@click.option("--project", default=DEFAULT_PROJECT, show_default=True)
def alerts_ack(config: Path | None, alert_id: int, project: str) -> None:
    """Acknowledge open alert ALERT_ID: it stays open but is not re-notified."""
    _act_on_alert(config, project, alert_id, "acknowledged")


@alerts.command("resolve")
@config_option
@click.argument("alert_id", type=int)
@click.option("--project", default=DEFAULT_PROJECT, show_default=True)
def alerts_resolve(config: Path | None, alert_id: int, project: str) -> None:
    """Resolve open alert ALERT_ID by hand; its sinks are told."""
    _act_on_alert(config, project, alert_id, "resolved")


@main.group()
def plugin() -> None:
    """Write Lumina plugins."""


@plugin.command("new")
@click.argument("name")
@click.option("--kind", required=True, type=click.Choice(["alert-sink", "pricing", "extractor", "detector"]))
@click.option("--dir", "parent", type=click.Path(path_type=Path, file_okay=False), default=".", show_default=True)
def plugin_new(name: str, kind: str, parent: Path) -> None:
    """Create the package lumina-NAME: a KIND component, its entry point, tests running Lumina's contract
    suite, and a README; ready to `pip install -e '.[test]' && pytest` and to publish."""
    from lumina_core.scaffold import new_plugin

    try:
        folder = new_plugin(name, kind, parent)
    except (ValueError, FileExistsError) as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    click.echo(f"created {folder}: cd {folder} && pip install -e '.[test]' && pytest")


@main.group()
def config() -> None:
    """Check or show the configuration."""


@config.command("check")
@click.argument("file", type=click.Path(path_type=Path), required=False)
def config_check(file: Path | None) -> None:
    """Validate FILE (default: the active config) and print every error at once."""
    settings, errors = read_settings(file or default_config_path())
    try:
        build_components(settings, PluginHost.configured(settings.plugins), create=False)
    except ConfigError as exc:
        errors.extend(exc.errors)
    if errors:
        _print_config_errors(ConfigError(errors))
        sys.exit(1)
    click.echo(f"{file or default_config_path() or 'embedded defaults'}: OK")


@config.command("show")
@config_option
def config_show(config: Path | None) -> None:
    """Print the effective configuration as JSON, secrets redacted."""
    click.echo(json.dumps(redacted(_settings(config)), indent=2))


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def plugins(config: Path | None, as_json: bool) -> None:
    """List loaded plugins, their versions and the component types they register."""
    settings = _settings(config)
    try:
        infos = PluginHost.configured(settings.plugins).describe(configured_instances(settings))
    except ConfigError as exc:
        _print_config_errors(exc)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps([info.as_dict() for info in infos], indent=2))
        return
    for info in infos:
        types = ", ".join(f"{kind}: {', '.join(names)}" for kind, names in info.types.items()) or "-"
        line = f"{info.name}  ({info.distribution or '?'} {info.version or ''})  {types}"
        if info.error:
            line += f"  FAILED: {info.error}"
        elif info.instances:
            line += f"  used by {', '.join(info.instances)}"
        click.echo(line)


if __name__ == "__main__":
    main()
