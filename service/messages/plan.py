"""The plan record: the whole plan, dropped keys included, for audit and dashboards.

Its top level mirrors QMTL's multi-world response (``per_world`` with ``scale_world``,
``scale_by_strategy`` and ``deltas``; ``global_deltas``), so existing readers keep working.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._types import EpochMs, Message, Name, NonNegative, Price, Quantity, SchemaVersion
from .intent import Leg, StrategyDelta
from .policy import PolicyRebalance

DropReason = Literal[
    "below_min_notional",
    "rounded_to_zero",
    "missing_mark",
    "held",
    "unchanged",
    "cost_exceeds_benefit",
]
WeightsSource = Literal["request", "current", "snapshots", "none"]


class PlannedLeg(Message):
    """One intent of a traded key (two for a flattened flip)."""

    intent_id: Name
    leg: Leg
    current_qty: Quantity
    target_qty: Quantity
    delta_qty: Quantity
    reduce_only: bool
    depends_on: Name | None = None
    slice_index: int | None = Field(
        default=None, ge=0, description="This slice's place (from 0), when the leg is sliced."
    )
    slice_count: int | None = Field(
        default=None, ge=2, description="How many slices the leg was cut into."
    )


class KeyDelta(Message):
    """A traded ``(venue, symbol)`` key: what it holds, where it goes, and how."""

    venue: Name | None
    symbol: Name
    delta_qty: Quantity = Field(description="Netted, rounded: what gets executed.")
    current_qty: Quantity
    target_qty: Quantity
    delta_qty_unrounded: Quantity
    mark: Price
    notional: NonNegative
    reduce_only: bool
    flip: bool
    legs: list[PlannedLeg] = Field(
        description="The intents published for this key; empty in the view that is not "
        "executed (global_deltas in per_world mode, per_world in shared_account mode)."
    )
    strategy_breakdown: list[StrategyDelta]


class DroppedKey(Message):
    """A key that gets no intent, and why."""

    venue: Name | None
    symbol: Name
    reason: DropReason = Field(
        description="held: the key would open or grow a position of a world in the "
        "reduce-only trading state; its unrounded delta is what was asked. "
        "cost_exceeds_benefit: the cost_aware planner found its trading cost above its "
        "share of the tracking error it removes."
    )
    current_qty: Quantity
    delta_qty_unrounded: Quantity
    mark: Price | None
    notional: NonNegative | None


class WorldPlan(Message):
    """One world's part of the plan: its scale factors, traded keys and dropped keys."""

    world_id: Name
    alloc_before: float | None
    alloc_after: float | None
    scale_world: float
    scale_by_strategy: dict[Name, float]
    strategy_alloc_before: dict[Name, float]
    strategy_alloc_after: dict[Name, float]
    weights_source: WeightsSource = Field(
        description="Where the strategies' before weights came from (SPEC 3.1)."
    )
    deltas: list[KeyDelta]
    dropped: list[DroppedKey]


class PlanOptions(Message):
    """The planner settings the plan was computed with."""

    planner: str
    scale_rule: Literal["strategy", "bounded"]
    flip_policy: Literal["flatten_then_open", "direct_flip"]
    execution_mode: Literal["per_world", "shared_account"]
    min_trade_notional: NonNegative
    qty_decimals: int
    min_notional_by_venue: dict[Name, NonNegative] | None = Field(
        default=None, description="Per venue, the minimum notional of an intent (when set)."
    )


class PlanTiming(Message):
    """When and how fast the plan was made; absent from offline (deterministic) output."""

    planned_at: EpochMs
    plan_ms: NonNegative


class Approval(Message):
    """A plan's approval (approval mode): who asked, until when, and the decision."""

    requested_by: Name | None = Field(
        description="The token whose command, or the policy ('policy:<name>'), that asked "
        "for the plan; null for an allocation event."
    )
    deadline: EpochMs = Field(description="The proposal expires unless approved before.")
    decided_by: Name | None = None
    decided_at: EpochMs | None = None
    reason: str | None = Field(
        default=None, description="The approver's reason, or why the proposal expired."
    )


class CommandOrigin(Message):
    """The operator's command a plan carries out (flatten, rebalance): who, when and why."""

    command_id: Name
    action: Name
    world_id: Name | None
    requested_by: Name
    reason: str
    requested_at: EpochMs


class CostGateFigures(Message):
    """A policy correction's cost gate: both sides of its decision (docs/live-policies.md).

    Shares are of ``equity`` (the portfolio's total equity for an allocation target, the
    target's base for weights). The benefit is the annualized tracking error the correction
    removes; it goes when ``cost_share <= max_cost_to_benefit x benefit_share``."""

    equity: NonNegative
    cost: NonNegative = Field(description="Fees, half spread and fixed costs, in money.")
    cost_share: NonNegative = Field(description="cost / equity.")
    benefit_share: NonNegative = Field(
        description="Expected benefit: tracking_error_before - tracking_error_after."
    )
    tracking_error_before: NonNegative
    tracking_error_after: NonNegative
    max_cost_to_benefit: NonNegative
    go: bool = Field(description="Whether the correction was carried out.")


PlanStatus = Literal[
    "planned", "held", "proposed", "approved", "rejected", "expired", "skipped_by_cost_gate"
]
"""``planned``: published. ``held``: its worlds wait. ``proposed``: awaits approval (no
intents). ``approved``: the proposal published as proposed (its intents). ``rejected``,
``expired``: a proposal that was not published. ``skipped_by_cost_gate``: a policy
correction whose cost exceeded its share of the benefit (``cost_gate``); what it would have
traded is in ``per_world``, without intents."""


class PlanRecord(Message):
    """Everything one allocation change produced; ``intent_ids`` lists what was published."""

    schema_version: SchemaVersion = 1
    plan_id: Name
    event_id: Name
    portfolio_id: Name
    occurred_at: EpochMs
    created_at: EpochMs = Field(description="When the intents were created.")
    expires_at: EpochMs = Field(description="When the intents expire.")
    status: PlanStatus = "planned"
    held_reason: str | None = Field(
        default=None,
        description="Why worlds wait (a held record: 'paused: worlds a, b'), or, in a planned "
        "record, which reduce-only worlds had keys held ('reduce_only: worlds a'; those keys "
        "are dropped with reason held).",
    )
    total_equity: NonNegative
    options: PlanOptions
    per_world: dict[Name, WorldPlan]
    global_deltas: list[KeyDelta]
    global_dropped: list[DroppedKey]
    coalesced_event_ids: list[Name] = Field(
        description="Every allocation change this plan carries out (several when changes "
        "were held and coalesced)."
    )
    intent_ids: list[Name]
    timing: PlanTiming | None = None
    policy: PolicyRebalance | None = Field(
        default=None,
        description="The policy event that caused this plan, when a policy of the service "
        "triggered it (absent for external allocation changes).",
    )
    approval: Approval | None = Field(
        default=None, description="Present on a plan that needed approval."
    )
    command: CommandOrigin | None = Field(
        default=None, description="The operator's command the plan carries out, if one."
    )
    cost_gate: CostGateFigures | None = Field(
        default=None,
        description="The cost gate's figures, on a policy correction whose rule has a gate.",
    )
