"""The built-in samplers: ``head`` keeps a fixed share of traces by trace id; ``conditional`` keeps every
important trace (an error, a cost or duration over a threshold, given models, services, span names or
attribute values) and a share of the routine ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from lumina_core import ComponentConfig, ComponentFactory, hookimpl, trace_ratio


class HeadSamplerConfig(ComponentConfig):
    ratio: float = Field(ge=0, le=1, description="share of traces kept, e.g. 0.1")


class HeadSampler:
    stage: Literal["head"] = "head"

    def __init__(self, config: HeadSamplerConfig) -> None:
        self.ratio = config.ratio

    def keep(self, trace_id: str, spans: Sequence[dict[str, Any]]) -> bool:
        return trace_ratio(trace_id) < self.ratio


class ConditionalSamplerConfig(ComponentConfig):
    ratio: float = Field(0.1, ge=0, le=1, description="share of routine traces kept")
    keep_errors: bool = Field(True, description="keep every trace with an error span")
    min_cost_usd: float | None = Field(None, ge=0, description="keep traces costing at least this")
    min_duration_ms: float | None = Field(None, ge=0, description="keep traces lasting at least this")
    models: list[str] = Field(default_factory=list, description="keep traces calling any of these models")
    services: list[str] = Field(default_factory=list, description="keep traces of these services")
    span_names: list[str] = Field(default_factory=list, description="keep traces with a span of these names")
    attributes: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="keep traces with a span whose attribute has this value"
    )


class ConditionalSampler:
    stage: Literal["tail"] = "tail"

    def __init__(self, config: ConditionalSamplerConfig) -> None:
        self.config = config

    def important(self, spans: Sequence[dict[str, Any]]) -> bool:
        c = self.config
        if c.keep_errors and any(s["status"] == "error" for s in spans):
            return True
        if c.min_cost_usd is not None and sum(s["cost_usd"] or 0 for s in spans) >= c.min_cost_usd:
            return True
        if c.min_duration_ms is not None and spans:
            start = min(s["start_time_unix_nano"] for s in spans)
            end = max(s["end_time_unix_nano"] for s in spans)
            if (end - start) / 1e6 >= c.min_duration_ms:
                return True
        for s in spans:
            if s["model"] in c.models or s["service_name"] in c.services or s["name"] in c.span_names:
                return True
            if any(s["attributes"].get(key) == value for key, value in c.attributes.items()):
                return True
        return False

    def keep(self, trace_id: str, spans: Sequence[dict[str, Any]]) -> bool:
        return self.important(spans) or trace_ratio(trace_id) < self.config.ratio


@hookimpl
def lumina_register_samplers() -> list[ComponentFactory]:
    return [
        ComponentFactory(
            type="head",
            create=lambda ctx, config: HeadSampler(config),
            config_model=HeadSamplerConfig,
            description="Keeps a fixed share of traces, decided on the trace id (the same in every process).",
        ),
        ComponentFactory(
            type="conditional",
            create=lambda ctx, config: ConditionalSampler(config),
            config_model=ConditionalSamplerConfig,
            description="Keeps every error, expensive, slow or named trace and a share of the routine ones, "
            "judged on the whole trace once it is quiet.",
        ),
    ]
