"""The service's own rebalancing events: a policy found a world off its target.

The policy runner publishes them to the allocation topic, keyed by portfolio like every
allocation change, so they are consumed, held or planned, published, recorded and recovered
after a crash by the same path. The event names its target, not quantities: the engine measures
the world again when it plans, on the snapshots it plans with.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from ._types import SUM_TOLERANCE, EpochMs, Finite, Message, Name, Ratio, SchemaVersion

TriggerKind = Literal["band", "calendar", "hybrid", "regime", "command"]
"""What triggered a correction: a live policy's kind, or an operator's ``rebalance``."""


class AllocationTarget(Message):
    """Keep the world at its allocation: scale all its positions by allocation / weight,
    where the weight is its positions' value (``gross``: sum of |qty x mark| per key, or
    ``net``) over the portfolio's total equity."""

    kind: Literal["allocation"]
    measure: Literal["gross", "net"] = "gross"


class AssetWeight(Message):
    """One asset's target: a fraction of the world's equity base (long only)."""

    venue: Name | None
    symbol: Name
    weight: Ratio


class WeightsTarget(Message):
    """Bring each asset of the world to ``weight x base / mark`` (the target-weight planner);
    held assets without a weight go to zero.

    ``base``: ``allocation`` (the world's allocation x total equity) or ``holdings`` (the
    net value of what the world holds now: reweight without resizing). ``strategy_id`` holds
    the assets the world does not hold yet.
    """

    kind: Literal["weights"]
    weights: list[AssetWeight] = Field(min_length=1)
    base: Literal["allocation", "holdings"] = "allocation"
    strategy_id: Name = "policy"

    @model_validator(mode="after")
    def _check(self) -> WeightsTarget:
        seen: set[tuple[str | None, str]] = set()
        for i, w in enumerate(self.weights):
            key = (w.venue, w.symbol)
            if key in seen:
                raise ValueError(f"weights.{i}: {w.venue or ''}:{w.symbol} is named twice")
            seen.add(key)
        total = sum(w.weight for w in self.weights)
        if total > 1 + SUM_TOLERANCE:
            raise ValueError(f"weights: target weights add up to {total:.12g}, above 1")
        return self


PolicyTarget = Annotated[AllocationTarget | WeightsTarget, Field(discriminator="kind")]
"""What a policy brings its world back to."""

Label = Annotated[str, StringConstraints(min_length=1, max_length=400)]


class PolicyEstimate(Message):
    """How a risk-based rule computed the weights of its target: the method, its overlays and
    the mark samples it estimated from. For the audit trail: the target carries the weights."""

    method: Literal["kelly", "risk_parity", "equal"]
    overlays: list[Literal["vol_target", "drawdown_guard"]] = Field(default_factory=list)
    samples: int = Field(ge=0, description="Mark samples the estimate used.")
    sample_ms: int = Field(gt=0, description="Their spacing.")
    first_sample_at: EpochMs | None = None
    last_sample_at: EpochMs | None = None
    before_overlays: dict[Label, Finite] = Field(
        default_factory=dict, description="The method's weights before the overlays scaled them."
    )
    drawdown: Finite | None = Field(
        default=None, description="drawdown_guard: the holdings' drawdown from their peak."
    )
    exposure: Finite | None = Field(
        default=None, description="drawdown_guard: the share of the weights it kept."
    )


class PolicyRebalance(Message):
    """A policy's trigger for one world, and the target to plan it to.

    ``event_id`` is deterministic (``policy:{policy}:{world}:{bucket}``), so a restarted or
    second instance that triggers the same policy in the same bucket publishes the same id,
    which the engine recognises as applied. ``measured`` and ``targets`` are what the runner
    saw (asset label or ``world`` to weight), for the audit trail only, as is ``estimate``
    (how a risk-based rule computed the weights it names in ``target``).
    """

    type: Literal["policy_rebalance"]
    schema_version: SchemaVersion = 1
    event_id: Name
    portfolio_id: Name = "default"
    occurred_at: EpochMs
    world_id: Name
    policy: Name
    trigger: TriggerKind
    reason: Annotated[str, StringConstraints(max_length=1000)] = ""
    target: PolicyTarget
    measured: dict[Label, Finite] = Field(default_factory=dict)
    targets: dict[Label, Finite] = Field(default_factory=dict)
    estimate: PolicyEstimate | None = Field(
        default=None, description="Set when the rule's weights were estimated live."
    )


__all__ = [
    "AllocationTarget",
    "AssetWeight",
    "PolicyEstimate",
    "PolicyRebalance",
    "PolicyTarget",
    "TriggerKind",
    "WeightsTarget",
]
