"""When a world's changes wait, how later changes join them, and when they may go.

A world's change waits while an operator has paused or halted it (or its portfolio), while
its last plan is in flight (planning again would plan from positions still moving) or while
its snapshots are stale. Changes that arrive meanwhile
coalesce into one held change, planned once when the world is free: by convergence (every
affected strategy reports the plan), by the settle timeout, or by fresh snapshots.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..messages import PolicyRebalance
from ..messages.allocation import AllocationEvent
from ..state.allocations import (
    HeldChange,
    HoldReason,
    InFlight,
    PortfolioState,
    WorldState,
)
from .admission import Requested, Waiting
from .effects import Basis, PlanRequest, Sources, Trigger
from .options import EventOptions
from .work import Json


class Holding:
    """Decides whether a world holds its changes now, and which held changes may go."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def reached(self, in_flight: InFlight | None, world_id: str) -> bool:
        """Whether every affected strategy's snapshot reports the plan as converged."""
        if in_flight is None:
            return True
        for strategy_id in in_flight.strategies:
            snap = self.sources.snapshots.get(world_id, strategy_id)
            if snap is None or snap.converged_plan_id != in_flight.plan_id:
                return False
        return True

    def waiting(self, ws: WorldState, now_ms: int) -> bool:
        """Whether the world's plan in flight is neither reached nor past the settle timeout."""
        flight = ws.in_flight
        if flight is None or self.reached(flight, ws.world_id):
            return False
        return now_ms - flight.planned_at < self.sources.options.plan_settle_timeout_ms

    def stale(self, world_id: str, now_ms: int) -> bool:
        """Whether a snapshot of the world is older than ``max_snapshot_age_ms``."""
        max_age = self.sources.options.max_snapshot_age_ms
        if max_age is None:
            return False
        oldest = self.sources.snapshots.oldest_as_of(world_id)
        return oldest is not None and now_ms - oldest > max_age

    def suspended(self, ws: WorldState) -> HoldReason | None:
        """Whether an operator paused or halted the world or its portfolio."""
        mode = self.sources.state.trading_mode(ws)
        if mode == "paused":
            return HoldReason.PAUSED
        if mode == "halted":
            return HoldReason.HALTED
        return None

    def reason(self, ws: WorldState, now_ms: int) -> HoldReason | None:
        """Why a change to the world must wait now, if it must. A world that already holds
        changes keeps holding (and keeps its reason): a later change joins them, so changes
        are planned in the order they came."""
        if ws.held is not None:
            return ws.held.reason
        suspended = self.suspended(ws)
        if suspended is not None:
            return suspended
        if self.waiting(ws, now_ms):
            return HoldReason.PLAN_IN_FLIGHT
        if self.stale(ws.world_id, now_ms):
            return HoldReason.STALE_SNAPSHOTS
        return None

    def ready(
        self, now_ms: int, portfolios: Iterable[str] | None = None
    ) -> dict[str, list[WorldState]]:
        """Per portfolio (of ``portfolios``, if given), the worlds whose held changes may go
        now: not paused or halted, their plan reached or timed out and their snapshots
        fresh. A portfolio with a plan being written waits for it: the new plan must start
        from its state."""
        state = self.sources.state
        owned = None if portfolios is None else set(portfolios)
        ready: dict[str, list[WorldState]] = {}
        for (portfolio_id, _), ws in sorted(state.worlds.items()):
            if ws.held is None or (owned is not None and portfolio_id not in owned):
                continue
            if ws.proposal is not None:  # the approver decides when it goes
                continue
            if portfolio_id in state.pending:
                continue
            if self.suspended(ws) is not None:
                continue
            if self.waiting(ws, now_ms) or self.stale(ws.world_id, now_ms):
                continue
            ready.setdefault(portfolio_id, []).append(ws)
        return ready


@dataclass(frozen=True)
class Arrival:
    """An allocation event reaching the worlds it moves."""

    event: AllocationEvent
    equity: float | None
    """The total equity the event gives (``None``: it gives none)."""
    now_ms: int


def coalesce(
    held: HeldChange | None, req: Requested, arrival: Arrival, reason: HoldReason
) -> HeldChange:
    """A world's held change with ``req`` joined to it (or ``req`` alone, waiting for
    ``reason``): the newest world allocation wins, strategy weights merge, later events'
    options win. A waiting policy correction gives way: the world's target moves, and the
    correction was measured against the old one."""
    event = arrival.event
    if held is None:
        return _held_anew(req, arrival, reason)
    if held.policy is not None:
        fresh = _held_anew(req, arrival, reason)
        return fresh.model_copy(
            update={"event_ids": [*held.event_ids, event.event_id], "since": held.since}
        )
    if held.pacing is not None:
        return _supersede_steps(held, req, arrival)
    merged = dict(held.strategy_after or {})
    merged.update(req.strategy_after or {})
    options = EventOptions.of_held([held]).then(EventOptions.of(event))
    update: Json = {
        "event_ids": [*held.event_ids, event.event_id],
        "alloc_after": req.alloc_after if req.alloc_after is not None else held.alloc_after,
        "strategy_after": merged or None,
        "total_equity": arrival.equity if arrival.equity is not None else held.total_equity,
        "occurred_at": event.occurred_at,
        "min_trade_notional": options.min_trade_notional,
        "lot_size_by_symbol": dict(options.lot_size_by_symbol or {}) or None,
    }
    return held.model_copy(update=update)


def _supersede_steps(held: HeldChange, req: Requested, arrival: Arrival) -> HeldChange:
    """A newer change for a world in the middle of a paced move: the steps not yet planned
    are dropped, and the world goes from where its last planned step left it to the newer
    change's allocation (a change that names none, strategy weights only, keeps the paced
    move's end), paced again if that is large, with the options of both (the newer's win). It
    still waits for the step in flight."""
    final = held.pacing.final(held) if held.pacing is not None else None
    alloc = req.alloc_after
    merged: dict[str, float] = {}
    if final is not None:
        alloc = alloc if alloc is not None else final.alloc_after
        merged.update(final.strategy_after or {})
    merged.update(req.strategy_after or {})
    fresh = _held_anew(
        replace(req, alloc_after=alloc, strategy_after=merged or None), arrival, held.reason
    )
    options = EventOptions.of_held([held]).then(EventOptions.of(arrival.event))
    return fresh.model_copy(
        update={
            "since": held.since,
            "min_trade_notional": options.min_trade_notional,
            "lot_size_by_symbol": dict(options.lot_size_by_symbol or {}) or None,
        }
    )


def _held_anew(req: Requested, arrival: Arrival, reason: HoldReason) -> HeldChange:
    event = arrival.event
    waiting = Waiting(
        event_ids=[event.event_id],
        reason=reason,
        since=arrival.now_ms,
        total_equity=arrival.equity,
        occurred_at=event.occurred_at,
        asked=EventOptions.of(event),
    )
    return req.waiting(waiting)


def hold_policy(
    held: HeldChange | None, event: PolicyRebalance, reason: HoldReason, now_ms: int
) -> HeldChange:
    """A policy event joins the world's held work: it waits alone, replaces an older policy
    event (the newer one measured later), or gives way to a waiting external change (which
    moves the target anyway)."""
    if held is None:
        return HeldChange(
            event_ids=[event.event_id],
            reason=reason,
            since=now_ms,
            occurred_at=event.occurred_at,
            policy=event,
        )
    update: Json = {"event_ids": [*held.event_ids, event.event_id]}
    if held.policy is not None:
        update.update(policy=event, occurred_at=event.occurred_at)
    return held.model_copy(update=update)


def release_request(
    portfolio: PortfolioState, states: list[WorldState], now_ms: int
) -> PlanRequest:
    """One plan for a portfolio's held external changes that may go: each world to its latest
    held allocation, on the latest equity given, with the held events' options merged in the
    order they occurred. The events were applied when held: the portfolio is as it is."""
    held = [(ws.world_id, ws.held) for ws in states if ws.held is not None]
    changes = [h for _, h in held]
    event_ids = [e for h in changes for e in h.event_ids]
    equity = next(
        (h.total_equity for h in reversed(changes) if h.total_equity is not None),
        portfolio.total_equity or 0.0,
    )
    asker = next((h.requested_by for h in reversed(changes) if h.requested_by), None)
    trigger = Trigger(
        portfolio_id=portfolio.portfolio_id,
        event=None,
        event_ids=tuple(dict.fromkeys(event_ids)),
        occurred_at=max(h.occurred_at for h in changes),
        total_equity=equity,
        now_ms=now_ms,
        requested_by=asker,
    )
    requested = [
        Requested(w, h.alloc_after, h.alloc_before, h.strategy_after, h.strategy_before, h.pacing)
        for w, h in held
    ]
    asked = EventOptions.of_held(sorted(changes, key=lambda h: h.occurred_at))
    return PlanRequest(trigger, requested, asked, Basis(portfolio), paceable=True)
