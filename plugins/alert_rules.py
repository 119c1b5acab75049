"""The built-in alert rule kinds: cost spike, quality drop, error rate, latency p95, budget, call cost.

Each kind is a pure judgement of one scope's current window against its baseline windows; the engine in
core does the sums, the state machine and the delivery.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Literal

from pydantic import Field, model_validator

from lumina_core import AlertThresholds, AlertVerdict, ComponentFactory, WindowStats, hookimpl


def _too_few(count: int, needed: int, what: str = "calls") -> AlertVerdict | None:
    if count < needed:
        return AlertVerdict(None, summary=f"{count} {what}, fewer than the {needed} needed to judge")
    return None


def _baseline(values: list[float], average: str, alpha: float) -> float:
    """The mean of the baseline windows, or their exponentially weighted mean (the newest weighs most)."""
    if average == "mean":
        return statistics.fmean(values)
    smoothed = values[0]
    for value in values[1:]:
        smoothed = alpha * value + (1 - alpha) * smoothed
    return smoothed


class CostSpikeConfig(AlertThresholds):
    measure: Literal["cost", "cost_per_call"] = Field("cost", description="the window's total, or per call")
    above_pct: float | None = Field(100, ge=0, description="fire this many percent above the baseline")
    z_score: float | None = Field(None, gt=0, description="fire this many standard deviations above the baseline")
    average: Literal["mean", "ewma"] = Field("mean", description="baseline: mean of the windows, or their EWMA")
    ewma_alpha: float = Field(0.3, gt=0, le=1, description="weight of the newest window in the EWMA")
    min_baseline_windows: int = Field(3, ge=1, description="baseline windows with calls needed to judge")
    min_cost_usd: float = Field(0, ge=0, description="never fire below this cost")

    @model_validator(mode="after")
    def _one_threshold(self) -> CostSpikeConfig:
        if self.above_pct is None and self.z_score is None:
            raise ValueError("give above_pct, z_score or both")
        return self


class CostSpike:
    """Cost (or cost per call) above its rolling baseline, by a percentage and/or a z-score (both must hold)."""

    measures: frozenset[str] = frozenset()

    def __init__(self, config: CostSpikeConfig) -> None:
        self.config = config

    def metric(self, stats: WindowStats) -> float | None:
        if self.config.measure == "cost":
            return stats.cost_usd if stats.calls else None
        return stats.cost_per_call

    def judge(self, current: WindowStats, history: Sequence[WindowStats]) -> AlertVerdict:
        c = self.config
        if few := _too_few(current.calls, c.min_samples):
            return few
        past = [v for v in map(self.metric, history) if v is not None]
        if few := _too_few(len(past), c.min_baseline_windows, "baseline windows with calls"):
            return few
        value = self.metric(current) or 0.0
        base = _baseline(past, c.average, c.ewma_alpha)
        spread = statistics.pstdev(past)
        limits = []
        if c.above_pct is not None:
            limits.append(base * (1 + c.above_pct / 100))
        if c.z_score is not None:
            limits.append(base + c.z_score * spread)
        threshold = max(limits)
        firing = value > threshold and value >= c.min_cost_usd
        what = "cost" if c.measure == "cost" else "cost per call"
        ratio = f"{value / base:.1f} times " if base > 0 else ""
        summary = f"{what} ${value:.4f} is {ratio}the baseline ${base:.4f} (threshold ${threshold:.4f})"
        return AlertVerdict(firing, value, threshold, base, summary)


class QualityDropConfig(AlertThresholds):
    measure: Literal["score", "changed_rate"] = Field(
        "score", description="mean detector score, or the share of responses that changed"
    )
    min_score: float | None = Field(0.8, ge=0, le=1, description="fire when the mean score is under this")
    max_changed_rate: float = Field(0.2, ge=0, le=1, description="fire when more responses than this changed")
    drop_pct: float | None = Field(
        None, gt=0, le=100, description="also fire when the score is this many percent under the baseline's"
    )


class QualityDrop:
    """Responses drifting from their prompts' baselines: a low mean score, or many changed responses."""

    measures: frozenset[str] = frozenset({"quality"})

    def __init__(self, config: QualityDropConfig) -> None:
        self.config = config

    def metric(self, stats: WindowStats) -> float | None:
        return stats.quality_score if self.config.measure == "score" else stats.changed_rate

    def judge(self, current: WindowStats, history: Sequence[WindowStats]) -> AlertVerdict:
        c = self.config
        if few := _too_few(current.quality_checked, c.min_samples, "compared responses"):
            return few
        value = self.metric(current)
        assert value is not None  # responses were compared
        if c.measure == "changed_rate":
            firing = value > c.max_changed_rate
            summary = f"{value:.0%} of responses changed (threshold {c.max_changed_rate:.0%})"
            return AlertVerdict(firing, value, c.max_changed_rate, None, summary)
        past = [v for v in map(self.metric, history) if v is not None]
        base = statistics.fmean(past) if past else None
        limits = [] if c.min_score is None else [c.min_score]
        if c.drop_pct is not None and base is not None:
            limits.append(base * (1 - c.drop_pct / 100))
        if not limits:
            return AlertVerdict(None, value, None, base, "no baseline score yet to compare with")
        threshold = max(limits)
        summary = f"mean quality score {value:.3f} (threshold {threshold:.3f})"
        return AlertVerdict(value < threshold, value, threshold, base, summary)


class ErrorRateConfig(AlertThresholds):
    max_rate: float = Field(0.05, ge=0, le=1, description="fire when more calls than this fail")


class ErrorRate:
    """The share of LLM calls that failed."""

    measures: frozenset[str] = frozenset()

    def __init__(self, config: ErrorRateConfig) -> None:
        self.config = config

    def metric(self, stats: WindowStats) -> float | None:
        return stats.error_rate

    def judge(self, current: WindowStats, history: Sequence[WindowStats]) -> AlertVerdict:
        if few := _too_few(current.calls, self.config.min_samples):
            return few
        rate, limit = current.error_rate or 0.0, self.config.max_rate
        summary = f"{current.errors} of {current.calls} calls failed ({rate:.1%}, threshold {limit:.1%})"
        return AlertVerdict(rate > limit, rate, limit, None, summary)


class LatencyConfig(AlertThresholds):
    max_ms: float | None = Field(None, gt=0, description="fire when the p95 latency is above this")
    above_pct: float | None = Field(None, ge=0, description="fire this many percent above the baseline p95")

    @model_validator(mode="after")
    def _one_threshold(self) -> LatencyConfig:
        if self.max_ms is None and self.above_pct is None:
            raise ValueError("give max_ms, above_pct or both")
        return self


class LatencyP95:
    """The 95th percentile of LLM call latency over a fixed limit or above its baseline (whichever is lower)."""

    measures: frozenset[str] = frozenset({"latency"})

    def __init__(self, config: LatencyConfig) -> None:
        self.config = config

    def metric(self, stats: WindowStats) -> float | None:
        return stats.latency_p95_ms

    def judge(self, current: WindowStats, history: Sequence[WindowStats]) -> AlertVerdict:
        c = self.config
        if few := _too_few(current.calls, c.min_samples):
            return few
        value = current.latency_p95_ms or 0.0
        past = [v for v in map(self.metric, history) if v is not None]
        base = statistics.fmean(past) if past else None
        limits = [] if c.max_ms is None else [c.max_ms]
        if c.above_pct is not None and base is not None:
            limits.append(base * (1 + c.above_pct / 100))
        if not limits:
            return AlertVerdict(None, value, None, None, "no baseline latency yet to compare with")
        threshold = min(limits)
        summary = f"p95 latency {value:.0f} ms (threshold {threshold:.0f} ms)"
        return AlertVerdict(value > threshold, value, threshold, base, summary)


class BudgetConfig(AlertThresholds):
    limit_usd: float = Field(gt=0, description="fire when the window's cost is above this")
    min_samples: int = Field(0, ge=0)


class Budget:
    """Plain spend over a limit, typically with ``window = "day"`` or ``"month"``."""

    measures: frozenset[str] = frozenset()

    def __init__(self, config: BudgetConfig) -> None:
        self.config = config

    def metric(self, stats: WindowStats) -> float | None:
        return stats.cost_usd

    def judge(self, current: WindowStats, history: Sequence[WindowStats]) -> AlertVerdict:
        if few := _too_few(current.calls, self.config.min_samples):
            return few
        cost, limit = current.cost_usd, self.config.limit_usd
        summary = f"spent ${cost:.2f} of a ${limit:.2f} budget ({cost / limit:.0%})"
        return AlertVerdict(cost > limit, cost, limit, None, summary)


class CallCostConfig(AlertThresholds):
    max_usd: float = Field(gt=0, description="fire as soon as one call costs more than this")
    min_samples: int = Field(1, ge=0)
    no_data: Literal["keep", "resolve"] = "resolve"


class CallCost:
    """A single call costing more than a limit: checked on every stored call, not only on the schedule."""

    measures: frozenset[str] = frozenset({"max_call_cost"})

    def __init__(self, config: CallCostConfig) -> None:
        self.config = config

    def metric(self, stats: WindowStats) -> float | None:
        return stats.max_call_cost_usd

    def exceeds(self, cost_usd: float | None, latency_ms: float) -> bool:
        return cost_usd is not None and cost_usd > self.config.max_usd

    def judge(self, current: WindowStats, history: Sequence[WindowStats]) -> AlertVerdict:
        if few := _too_few(current.calls, self.config.min_samples):
            return few
        value, limit = current.max_call_cost_usd or 0.0, self.config.max_usd
        return AlertVerdict(value > limit, value, limit, None, f"a call cost ${value:.4f} (limit ${limit:.4f})")


@hookimpl
def lumina_register_alert_rules() -> list[ComponentFactory]:
    return [
        ComponentFactory("cost_spike", lambda ctx, c: CostSpike(c), CostSpikeConfig, CostSpike.__doc__ or ""),
        ComponentFactory("quality_drop", lambda ctx, c: QualityDrop(c), QualityDropConfig, QualityDrop.__doc__ or ""),
        ComponentFactory("error_rate", lambda ctx, c: ErrorRate(c), ErrorRateConfig, ErrorRate.__doc__ or ""),
        ComponentFactory("latency_p95", lambda ctx, c: LatencyP95(c), LatencyConfig, LatencyP95.__doc__ or ""),
        ComponentFactory("budget", lambda ctx, c: Budget(c), BudgetConfig, Budget.__doc__ or ""),
        ComponentFactory("call_cost", lambda ctx, c: CallCost(c), CallCostConfig, CallCost.__doc__ or ""),
    ]
