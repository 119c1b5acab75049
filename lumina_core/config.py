"""Settings: ``lumina.toml``, then ``LUMINA_*`` environment overrides, then ``${env:…}``/``${file:…}``.

Every problem in a file is collected and reported at once, each with its key path.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lumina_core.plugin_api import ConfigError

ENV_PREFIX = "LUMINA_"
MAX_UNIX_NANO = 2**63 - 1
ENV_ALIASES = {"LUMINA_DATABASE_URL": ("storage", "url")}
ENV_NOT_SETTINGS = {"LUMINA_CONFIG"}
_INDIRECTION = re.compile(r"\$\{(env|file):([^}]+)\}")
_SECRET_KEY = re.compile(
    r"(secret|password|passwd|token|api_key|apikey|credentials?|routing_key|webhook_url)$", re.IGNORECASE
)
REDACTED = "***"

DEFAULT_EXTRACTORS = [
    "lumina",
    "otel_genai",
    "openinference",
    "openllmetry",
    "openlit",
    "otel_genai_deprecated",
]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


Role = Literal["intake", "worker", "api"]


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535, description="dashboard, API and OTLP/HTTP")
    otlp_http_port: int | None = Field(4318, ge=0, le=65535, description="OTLP/HTTP only; null disables")
    otlp_grpc_port: int | None = Field(4317, ge=0, le=65535, description="OTLP/gRPC; null disables")
    max_request_bytes: int = Field(16 * 1024 * 1024, gt=0, description="largest request body, as sent")
    max_decompressed_bytes: int = Field(64 * 1024 * 1024, gt=0, description="largest body after gunzip")
    insecure: bool = Field(False, description="serve on a non-loopback address without API keys")
    roles: list[Literal["all", "intake", "worker", "api"]] = Field(
        default_factory=lambda: ["all"],  # type: ignore[arg-type]
        min_length=1,
        description="what this process runs: intake (OTLP), worker (pipeline and background jobs), api "
        "(REST API and dashboard), or all of them",
    )

    def runs(self, role: Role) -> bool:
        return "all" in self.roles or role in self.roles


class StorageSettings(Section):
    url: str | None = Field(None, description="SQLAlchemy async URL; default: SQLite under data_dir")
    sqlite_synchronous: Literal["full", "normal"] = "full"
    query_cache_entries: int = Field(512, ge=0, description="query results cached per process; 0 disables")
    sum_hours_after_seconds: float = Field(
        30, ge=0, description="an hour of spans is summed for analytics once it has not changed for this long"
    )


class QueueSettings(BaseModel):
    """``type`` picks the backend; every other key is that backend's own config."""

    model_config = ConfigDict(extra="allow")
    type: str = "memory"

    def backend_config(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class PipelineSettings(Section):
    extractors: list[str] = Field(default_factory=lambda: list(DEFAULT_EXTRACTORS))
    batch_max_spans: int = Field(5000, gt=0, description="most spans committed in one transaction")


class CustomPriceSettings(Section):
    """A custom price in ``[[pricing.custom]]``: USD per 1,000,000 tokens of each bucket."""

    model: str = Field(description="exact model name, or with match = 'regex' a pattern for the whole name")
    match: Literal["exact", "regex"] = "exact"
    provider: str | None = None
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(None, ge=0, description="default: the input price")
    cache_write: float | None = Field(None, ge=0, description="default: the input price")
    reasoning: float | None = Field(None, ge=0, description="default: the output price")
    effective_from: datetime | date | None = None

    @model_validator(mode="after")
    def _check(self) -> CustomPriceSettings:
        if self.effective_from is not None and not 0 <= self.effective_from_unix_nano() <= MAX_UNIX_NANO:  # type: ignore[operator]
            raise ValueError("effective_from must be between 1970 and 2262")
        if self.match == "regex":
            try:
                re.compile(self.model)
            except re.error as exc:
                raise ValueError(f"model is not a valid regular expression: {exc}") from None
        return self

    def effective_from_unix_nano(self) -> int | None:
        return to_unix_nano(self.effective_from) if self.effective_from is not None else None

    def as_values(self) -> dict[str, Any]:
        """The price as stored and matched: ``effective_from`` in Unix nanoseconds."""
        return {
            **self.model_dump(exclude={"effective_from"}),
            "effective_from_unix_nano": self.effective_from_unix_nano(),
        }


class PricingSettings(Section):
    providers: list[str] = Field(
        default_factory=lambda: ["genai_prices"], description="pricing providers asked after custom prices, in order"
    )
    custom: list[CustomPriceSettings] = Field(default_factory=list)
    refresh_seconds: float = Field(30, gt=0, description="how often custom prices are re-read from the database")


class QualityRules(Section):
    """What quality checks a service's LLM calls get; unset fields fall back to ``[quality]``."""

    detectors: list[str] | None = Field(None, description="detector types to run: [] for none")
    degraded_below: float | None = Field(
        None, ge=0, le=1, description="a score under this marks the span degraded (default: never)"
    )


class QualitySettings(Section):
    detectors: list[str] = Field(
        default_factory=list,
        description="detector types run on every service's LLM calls, e.g. ['exact_match']; none by default",
    )
    degraded_below: float | None = Field(
        None, ge=0, le=1, description="a score under this marks the span degraded (default: never)"
    )
    baseline_size: int = Field(
        1, ge=1, le=100, description="the first N responses of a prompt become its baseline (unless one is pinned)"
    )
    services: dict[str, QualityRules] = Field(default_factory=dict, description="per-service overrides")

    def for_service(self, service: str) -> tuple[list[str], float | None]:
        """The detectors and degraded threshold of ``service`` (its override, else the defaults)."""
        rules = self.services.get(service)
        detectors = rules.detectors if rules and rules.detectors is not None else self.detectors
        threshold = rules.degraded_below if rules and rules.degraded_below is not None else self.degraded_below
        return detectors, threshold


RULE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
SCOPE_DIMENSIONS = ("service", "model", "span_name", "user_id")
"""What an alert rule can group and filter by, besides ``attribute:<key>`` (a span or resource attribute)."""


def _check_dimension(name: str) -> str:
    if name not in SCOPE_DIMENSIONS and not (name.startswith("attribute:") and len(name) > len("attribute:")):
        raise ValueError(f"{name!r}: group by one of {', '.join(SCOPE_DIMENSIONS)} or attribute:<key>")
    return name


class RuleWhere(Section):
    """Which LLM calls a rule looks at; every given field must match."""

    service: str | None = None
    model: str | None = None
    span_name: str | None = None
    user_id: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict, description="span or resource attribute values")

    def conditions(self) -> dict[str, str]:
        """The filter as ``dimension -> value`` (attributes as ``attribute:<key>``)."""
        out = {d: getattr(self, d) for d in SCOPE_DIMENSIONS if getattr(self, d) is not None}
        out.update({f"attribute:{k}": v for k, v in self.attributes.items()})
        return out


class AlertRuleSettings(Section):
    """One alert rule: a kind, the window it judges, its scopes, and its thresholds."""

    name: str = Field(pattern=RULE_NAME)
    kind: str = Field(description="rule kind: cost_spike, quality_drop, error_rate, latency_p95, budget, call_cost …")
    enabled: bool = True
    description: str = ""
    projects: list[str] = Field(default_factory=list, description="projects it watches; none: every project")
    window: int | Literal["day", "month"] = Field(
        300, description="seconds of calls judged at once, ending now; or the UTC calendar day or month so far"
    )
    baseline: Literal["previous", "daily", "none"] = Field(
        "previous",
        description="compared with: the windows just before, the same window on previous days, or nothing",
    )
    baseline_windows: int = Field(6, ge=1, le=60, description="how many baseline windows")
    group_by: list[str] = Field(default_factory=lambda: ["service"], description="one alert per value of these")
    where: RuleWhere = Field(default_factory=RuleWhere)
    sinks: list[str] | None = Field(None, description="alert sinks to notify; default: alerts.sinks")
    params: dict[str, Any] = Field(default_factory=dict, description="the kind's thresholds")
    services: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description='thresholds for one service ("svc") or service and model ("svc/model")'
    )

    @model_validator(mode="after")
    def _check(self) -> AlertRuleSettings:
        for name in self.group_by:
            _check_dimension(name)
        if len(set(self.group_by)) != len(self.group_by):
            raise ValueError("group_by names a dimension twice")
        if isinstance(self.window, int) and not 10 <= self.window <= 31 * 86400:
            raise ValueError("window must be between 10 seconds and 31 days")
        if isinstance(self.window, str) and self.baseline == "daily":
            raise ValueError("a calendar window (day, month) cannot have a daily baseline")
        return self

    def window_range(self, now_ns: int) -> tuple[int, int]:
        """The window ending at ``now_ns``, as Unix nanoseconds ``(start, end)``."""
        if isinstance(self.window, int):
            return now_ns - self.window * 1_000_000_000, now_ns
        now = datetime.fromtimestamp(now_ns / 1e9, UTC)
        first = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.window == "month":
            first = first.replace(day=1)
        return to_unix_nano(first), now_ns


class AlertDeliverySettings(Section):
    timeout_seconds: float = Field(10, gt=0, description="a sink that takes longer has failed")
    max_attempts: int = Field(20, ge=1, description="sends of one notification before it is given up")
    backoff_seconds: float = Field(2, gt=0, description="wait after the first failure; doubles each time")
    max_backoff_seconds: float = Field(600, gt=0)


class ProjectRetention(Section):
    days: int | None = Field(None, ge=0, description="this project's retention; default: retention.days")
    services: dict[str, int] = Field(default_factory=dict, description="days per service, within this project")


class RetentionSettings(Section):
    """How long spans are kept. The most specific setting wins: the project's service, the project, the
    service (any project), then ``days``. 0 keeps spans for ever."""

    days: int = Field(7, ge=0, description="days spans are kept; 0 = for ever")
    services: dict[str, int] = Field(default_factory=dict, description="days per service, in every project")
    projects: dict[str, ProjectRetention] = Field(default_factory=dict)
    enabled: bool = Field(True, description="sweep every day at 00:00 UTC (lumina retention run sweeps now)")
    archiver: str | None = Field(
        None, description="archive spans before deleting them: an archiver type, e.g. 'jsonl' (default: none)"
    )
    batch_spans: int = Field(5000, gt=0, description="at most this many spans archived and deleted per transaction")
    transaction_seconds: float = Field(
        0.2, gt=0, description="batches shrink or grow so that each delete transaction takes about this long"
    )
    pause_seconds: float = Field(
        0.05, ge=0, description="least rest between batches; the sweep rests at least as long as it wrote"
    )

    def days_for(self, project_id: str, service: str | None = None) -> int:
        """The retention of a project's service, or (``service=None``) of the project's other services."""
        project = self.projects.get(project_id)
        if project is not None and service in project.services:
            return project.services[service]
        if project is not None and project.days is not None:
            return project.days
        return self.services.get(service, self.days) if service is not None else self.days


class SamplingSettings(Section):
    samplers: list[str] = Field(
        default_factory=list, description="samplers that run, e.g. ['head'] or ['conditional']; none keeps all"
    )
    decision_wait_seconds: float = Field(
        30, gt=0, description="tail samplers judge a trace once no span of it arrived for this long"
    )


class LimitSettings(Section):
    daily_traces: int = Field(
        50_000, ge=0, description="traces a project may send per UTC day; more are refused; 0 = no limit"
    )
    projects: dict[str, int] = Field(default_factory=dict, description="daily_traces per project")

    def daily_traces_for(self, project_id: str) -> int:
        return self.projects.get(project_id, self.daily_traces)


class AlertSettings(Section):
    enabled: bool = Field(True, description="evaluate alert rules in this process")
    interval_seconds: float = Field(30, gt=0, description="how often rules are evaluated")
    sinks: list[str] = Field(default_factory=lambda: ["log"], description="sinks every rule notifies by default")
    dashboard_url: str | None = Field(None, description="public URL of the dashboard, for links in alerts")
    defaults: dict[str, Any] = Field(default_factory=dict, description="thresholds for every rule")
    services: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description='thresholds for one service ("svc") or service and model ("svc/model")'
    )
    rules: list[AlertRuleSettings] = Field(default_factory=list)
    delivery: AlertDeliverySettings = Field(default_factory=AlertDeliverySettings)

    @model_validator(mode="after")
    def _unique(self) -> AlertSettings:
        names = [rule.name for rule in self.rules]
        if len(set(names)) != len(names):
            raise ValueError("two alert rules have the same name")
        return self


class PluginSettings(Section):
    block: list[str] = Field(default_factory=list, description="plugin names not to load")
    entry_points: bool = Field(True, description="discover plugins from the 'lumina' entry-point group")
    allow: list[str] | None = Field(
        None, description="the only entry-point plugins that may load (by entry-point name); default: all"
    )
    require: list[str] = Field(
        default_factory=list, description="plugins that must load: start-up fails if one is missing or raises"
    )


class Settings(Section):
    data_dir: str = "./lumina-data"
    server: ServerSettings = Field(default_factory=ServerSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    pricing: PricingSettings = Field(default_factory=PricingSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    plugins: PluginSettings = Field(default_factory=PluginSettings)
    extractors: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="config tables of extractor instances, keyed type or type/name"
    )
    pricing_providers: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="config tables of pricing provider instances, keyed type or type/name"
    )
    detectors: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="config tables of quality detectors, keyed by type"
    )
    alert_sinks: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="config tables of alert sinks, keyed type or type/name"
    )
    archivers: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="config tables of archivers, keyed type or type/name"
    )
    samplers: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="config tables of samplers, keyed by type"
    )
    replay_executors: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="config tables of replay executors, keyed type or type/name"
    )

    @property
    def database_url(self) -> str:
        if self.storage.url:
            return self.storage.url
        return f"sqlite+aiosqlite:///{Path(self.data_dir) / 'lumina.db'}"


def to_unix_nano(value: datetime | date) -> int:
    """A date means its midnight UTC; a datetime without a zone is taken as UTC."""
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp()) * 1_000_000_000 + value.microsecond * 1_000


def default_config_path(env: Mapping[str, str] = os.environ) -> Path | None:
    """``$LUMINA_CONFIG``, else ``./lumina.toml`` when it exists, else none (embedded defaults)."""
    if env.get("LUMINA_CONFIG"):
        return Path(env["LUMINA_CONFIG"])
    local = Path("lumina.toml")
    return local if local.exists() else None


def load_settings(
    path: Path | None = None,
    env: Mapping[str, str] = os.environ,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read settings; raise :class:`ConfigError` listing every problem with its key path."""
    settings, errors = read_settings(path, env, overrides)
    if errors:
        raise ConfigError(errors)
    return settings


def read_settings(
    path: Path | None = None,
    env: Mapping[str, str] = os.environ,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Settings, list[tuple[str, str]]]:
    """Settings and every problem found. Where a section is invalid its defaults stand in, so that
    later checks (component configs) can still run and report their own errors in the same pass."""
    errors: list[tuple[str, str]] = []
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            return Settings(), [(str(path), "file not found")]
        except tomllib.TOMLDecodeError as exc:
            return Settings(), [(str(path), f"not valid TOML: {exc}")]
    _apply_env_overrides(raw, env, errors)
    for dotted, value in (overrides or {}).items():
        _set_path(raw, dotted.split("."), value)
    raw = _resolve_indirections(raw, env, errors, ())
    try:
        settings = Settings.model_validate(raw)
        return settings, errors + _role_errors(settings)
    except ValidationError as exc:
        errors.extend((".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors())
    valid_sections = {}
    for name in Settings.model_fields:
        if name in raw:
            try:
                Settings.model_validate({name: raw[name]})
            except ValidationError:
                continue
            valid_sections[name] = raw[name]
    return Settings.model_validate(valid_sections), errors


def _role_errors(settings: Settings) -> list[tuple[str, str]]:
    """The in-process queue hands batches from intake to the worker of the same process."""
    server = settings.server
    if settings.queue.type == "memory" and server.runs("intake") and not server.runs("worker"):
        message = (
            "an intake process without the worker role needs a queue shared between processes "
            '([queue] type = "nats"); the in-process queue only reaches a worker in the same process'
        )
        return [("server.roles", message)]
    return []


def _apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str], errors: list[tuple[str, str]]) -> None:
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_SETTINGS:
            continue
        if name in ENV_ALIASES:
            keys = list(ENV_ALIASES[name])
        else:
            keys = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
            if keys[0] not in Settings.model_fields:
                errors.append((name, f"unknown setting {'.'.join(keys)!r}"))
                continue
        _set_path(raw, keys, _parse_env_value(value))


def _parse_env_value(value: str) -> Any:
    """``["a","b"]`` and ``{…}`` are read as TOML; anything else stays a string, which the settings
    model converts where the field wants a number or a boolean (so a numeric password stays text)."""
    if value.strip()[:1] in ("[", "{"):
        try:
            return tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            return value
    return value


def _set_path(raw: dict[str, Any], keys: list[str], value: Any) -> None:
    node = raw
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value


def _resolve_indirections(value: Any, env: Mapping[str, str], errors: list[tuple[str, str]], path: tuple) -> Any:
    if isinstance(value, dict):
        return {k: _resolve_indirections(v, env, errors, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_indirections(v, env, errors, (*path, i)) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        source, ref = match.group(1), match.group(2).strip()
        if source == "env":
            if ref not in env:
                errors.append((".".join(map(str, path)), f"environment variable {ref} is not set"))
                return ""
            return env[ref]
        try:
            return Path(ref).read_text().strip()
        except OSError as exc:
            errors.append((".".join(map(str, path)), f"cannot read {ref}: {exc.strerror or exc}"))
            return ""

    return _INDIRECTION.sub(replace, value)


def secret_values(settings: Settings) -> list[str]:
    """Every secret-looking value in the settings (API keys, passwords …), to keep them out of stored text."""
    found: list[str] = []

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and value and _SECRET_KEY.search(key):
            found.append(value)

    walk(settings.model_dump(mode="json"))
    return found


def redacted(settings: Settings) -> dict[str, Any]:
    """Settings as a dict for display, with secret-looking values replaced by ``***``."""

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: walk(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if _SECRET_KEY.search(key) and value:
            return REDACTED
        if isinstance(value, str) and "://" in value and "@" in value:
            return re.sub(r"://([^:/@]+):[^@]+@", r"://\1:***@", value)  # password inside a URL
        return value

    return walk(settings.model_dump(mode="json"))
