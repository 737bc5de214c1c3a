"""Whether an event, or a state the engine is about to write, is acceptable against the state.

Everything here refuses with ``InputError``, which the service dead-letters: a refusal comes
before anything of the event is published or written, so a refused event changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pydantic import ValidationError

from ..errors import InputError, describe
from ..messages import (
    AllocationTarget,
    PolicyRebalance,
    StrategyWeightsUpdated,
    WorldAllocationsChanged,
)
from ..messages._types import SUM_TOLERANCE
from ..messages.allocation import AllocationEvent
from ..state.allocations import (
    AllocationState,
    HeldChange,
    HoldReason,
    Pacing,
    PortfolioState,
    WorldState,
)
from .equity import Equity
from .options import EventOptions

M = TypeVar("M", WorldState, PortfolioState)


@dataclass(frozen=True)
class Requested:
    """One world's part of an allocation change."""

    world_id: str
    alloc_after: float | None
    alloc_before: float | None = None
    strategy_after: Mapping[str, float] | None = None
    strategy_before: Mapping[str, float] | None = None
    pacing: Pacing | None = None
    """Set when this move is a step of a paced move (planned as it is, never paced again)."""

    def waiting(self, basis: Waiting) -> HeldChange:
        """This move as a world's held change, waiting as ``basis`` says."""
        asked = basis.asked
        return HeldChange(
            event_ids=list(basis.event_ids),
            reason=basis.reason,
            since=basis.since,
            alloc_after=self.alloc_after,
            strategy_after=dict(self.strategy_after) if self.strategy_after else None,
            alloc_before=self.alloc_before,
            strategy_before=dict(self.strategy_before) if self.strategy_before else None,
            total_equity=basis.total_equity,
            occurred_at=basis.occurred_at,
            min_trade_notional=asked.min_trade_notional,
            lot_size_by_symbol=dict(asked.lot_size_by_symbol or {}) or None,
            requested_by=basis.requested_by,
            pacing=self.pacing,
        )


@dataclass(frozen=True)
class Waiting:
    """Why and since when a move waits, with what it carries out and asks of its plan."""

    event_ids: Sequence[str]
    reason: HoldReason
    since: int
    total_equity: float | None
    occurred_at: int
    asked: EventOptions
    requested_by: str | None = None


@dataclass(frozen=True)
class Admitted:
    """An allocation event accepted against the state: its worlds' parts, in world order."""

    requested: list[Requested]
    equity: float | None
    """The portfolio's total equity the event gives (``None``: it gives none)."""


def admit(state: AllocationState, event: AllocationEvent) -> Admitted:
    """Split ``event`` into its worlds' parts, refusing allocations that would add up to more
    than what they divide: the worlds' to more than 1 with the portfolio's other worlds, a
    world's strategies' to more than the world's (held allocations count as the new ones)."""
    if isinstance(event, WorldAllocationsChanged):
        _check_world_sums(state, event)
        before = event.world_alloc_before or {}
        s_after = event.strategy_alloc_after_total or {}
        s_before = event.strategy_alloc_before_total or {}
        return Admitted(
            [
                Requested(w, a, before.get(w), s_after.get(w), s_before.get(w))
                for w, a in sorted(event.world_alloc_after.items())
            ],
            event.total_equity,
        )
    assert isinstance(event, StrategyWeightsUpdated)
    ws = state.world(event.portfolio_id, event.world_id)
    final = ws.held.final_alloc() if ws.held else None
    limit = final if final is not None else ws.alloc
    total = sum(event.strategy_alloc_after_total.values())
    if limit is not None and total > limit + SUM_TOLERANCE:
        raise InputError(
            f"strategy_alloc_after_total: strategy weights add up to {total:.12g}, above "
            f"world {event.world_id!r}'s allocation {limit:.12g}"
        )
    req = Requested(
        event.world_id,
        None,
        None,
        event.strategy_alloc_after_total,
        event.strategy_alloc_before_total,
    )
    return Admitted([req], None)


def _check_world_sums(state: AllocationState, event: WorldAllocationsChanged) -> None:
    others = 0.0
    for ws in state.portfolio_worlds(event.portfolio_id):
        if ws.world_id in event.world_alloc_after:
            continue
        pending = ws.held.final_alloc() if ws.held else None
        others += pending if pending is not None else (ws.alloc or 0.0)
    total = others + sum(event.world_alloc_after.values())
    if total > 1 + SUM_TOLERANCE:
        raise InputError(
            f"world_alloc_after: with the portfolio's other worlds, allocations would add "
            f"up to {total:.12g}, above 1"
        )


def before_differs(ws: WorldState, req: Requested) -> bool:
    """Whether the event's before allocation for a world differs from the state's (the state
    wins: it is what the positions were planned to). A move of a world the service does not
    know yet needs the before, which is what it scales from."""
    known, before = ws.alloc, req.alloc_before
    if known is None and req.alloc_after is not None and before is None:
        raise InputError(
            f"world_alloc_before.{req.world_id}: missing, and the service has no "
            f"allocation for world {req.world_id!r} yet; the move cannot be scaled"
        )
    return known is not None and before is not None and abs(known - before) > SUM_TOLERANCE


def check_policy(event: PolicyRebalance, ws: WorldState, equity: Equity) -> None:
    """Refuse a policy event the state cannot carry out: an allocation target needs the
    world's allocation and a portfolio equity (measured, else the event's) to weigh the
    world against."""
    target = event.target
    if isinstance(target, AllocationTarget) or target.base == "allocation":
        if ws.alloc is None:
            raise InputError(
                f"world_id: the service has no allocation for world {event.world_id!r}; "
                f"policy {event.policy!r} has no target to bring it to"
            )
        if not equity.value > 0:
            raise InputError(
                f"portfolio_id: portfolio {event.portfolio_id!r} has no known equity "
                f"({equity.detail}); policy {event.policy!r} cannot weigh its worlds"
            )


def checked(state: M) -> M:
    """``state`` validated again: ``model_copy`` does not validate, and a state the changelog
    could not read back must be refused before anything of its plan is published."""
    try:
        return type(state).model_validate(state.model_dump())
    except ValidationError as exc:
        if isinstance(state, WorldState):
            where = f"world {state.world_id!r}"
        else:
            where = f"portfolio {state.portfolio_id!r}"
        hint = (
            " (strategy weights are fractions of total_equity: a weight above 1 derived from "
            "the snapshots means the strategies hold more than total_equity)"
            if any(e["loc"][:1] == ("strategy_alloc",) for e in exc.errors())
            else ""
        )
        raise InputError(
            f"{where}: the new state would be invalid{hint}: {describe(exc)}"
        ) from None
