"""What shapes the engine's plans: the service's settings, and what each event asks of its
own plan."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..messages import WorldAllocationsChanged
from ..messages.allocation import AllocationEvent
from ..planner import PlannerOptions
from ..policies.gate import CorrectionGate
from ..state.allocations import HeldChange
from .choice import PlannerChoice


@dataclass(frozen=True)
class ApprovalRules:
    """Which plans need approval by configuration, how long a proposal waits, and where
    four-eyes applies. Commands override the configuration per portfolio and world (kept in
    the state)."""

    portfolios: frozenset[str] = frozenset()
    worlds: frozenset[tuple[str, str]] = frozenset()
    ttl_ms: int = 300_000
    four_eyes: frozenset[str] = frozenset()

    def configured(self, portfolio_id: str, world_id: str) -> bool:
        return portfolio_id in self.portfolios or (portfolio_id, world_id) in self.worlds


@dataclass(frozen=True)
class PaceRule:
    """How one world's large moves are paced: a move above ``max_step_share`` of the world
    goes in ``steps`` front-loaded steps (``ratio``: geometric, else linear)."""

    max_step_share: float
    steps: int = 3
    ratio: float | None = None


@dataclass(frozen=True)
class PacingRules:
    """Which rule paces each world: a world's own, else its portfolio's, else the default
    (``None`` at any level: not paced). Empty, nothing is paced."""

    default: PaceRule | None = None
    portfolios: Mapping[str, PaceRule | None] = field(default_factory=dict)
    worlds: Mapping[tuple[str, str], PaceRule | None] = field(default_factory=dict)

    def rule(self, portfolio_id: str, world_id: str) -> PaceRule | None:
        if (portfolio_id, world_id) in self.worlds:
            return self.worlds[(portfolio_id, world_id)]
        if portfolio_id in self.portfolios:
            return self.portfolios[portfolio_id]
        return self.default


@dataclass(frozen=True)
class EngineOptions:
    """The service settings the engine needs."""

    planner: PlannerOptions = field(default_factory=PlannerOptions)
    plan_settle_timeout_ms: int = 600_000
    """How long a plan in flight holds its world's next changes before they go anyway: an
    execution node that never reports convergence must not hold a world for ever."""
    max_snapshot_age_ms: int | None = None
    """Snapshots older than this hold their world's changes (``None``: never)."""
    approval: ApprovalRules = field(default_factory=ApprovalRules)
    pacing: PacingRules = field(default_factory=PacingRules)
    max_slice_notional: float | None = None
    """Intents above this notional are published as slices (``None``: never)."""
    planners: PlannerChoice = field(default_factory=PlannerChoice)
    """The planner chosen per portfolio or world (the engine's own planner elsewhere)."""
    cost_gates: Mapping[str, CorrectionGate] = field(default_factory=dict)
    """Per policy (rule name), the cost gate its corrections pass; a policy without one is
    not gated (the default), and neither is an operator's rebalance nor an allocation
    change."""


@dataclass(frozen=True)
class EventOptions:
    """What an allocation event asks of its own plan (SPEC 2.2), kept with a held change so
    it applies whenever the change is planned."""

    min_trade_notional: float | None = None
    lot_size_by_symbol: Mapping[str, float] | None = None

    @classmethod
    def of(cls, event: AllocationEvent | None) -> EventOptions:
        """The options ``event`` asks for (only a world move can ask any)."""
        if not isinstance(event, WorldAllocationsChanged):
            return cls()
        return cls(event.min_trade_notional, event.lot_size_by_symbol)

    @classmethod
    def of_held(cls, held: Iterable[HeldChange]) -> EventOptions:
        """The options of held changes, merged in order: later events win."""
        out = cls()
        for h in held:
            out = out.then(cls(h.min_trade_notional, h.lot_size_by_symbol))
        return out

    def then(self, later: EventOptions) -> EventOptions:
        """These options with a later event's over them (lot sizes merge per symbol)."""
        lots = dict(self.lot_size_by_symbol or {})
        lots.update(later.lot_size_by_symbol or {})
        notional = (
            later.min_trade_notional
            if later.min_trade_notional is not None
            else self.min_trade_notional
        )
        return EventOptions(notional, lots or None)

    def applied_to(self, options: PlannerOptions) -> PlannerOptions:
        """The service's planner options with these over them (validated again: an event's
        lot sizes meet the same bounds as the configured ones)."""
        overrides: dict[str, Any] = {}
        if self.min_trade_notional is not None:
            overrides["min_trade_notional"] = self.min_trade_notional
        if self.lot_size_by_symbol is not None:
            overrides["lot_size_by_symbol"] = {
                **options.lot_size_by_symbol,
                **self.lot_size_by_symbol,
            }
        if not overrides:
            return options
        return PlannerOptions.model_validate({**options.model_dump(), **overrides})
