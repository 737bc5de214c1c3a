"""The service's decisions for each allocation change, pure and synchronous.

Given an event, the snapshot table and the allocation state, the engine says what to do:
dead-letter it, skip it (already applied), hold it (a plan in flight for its world, or stale
snapshots), or plan it. It also finds held work that may go now. It performs no I/O: the edges
(``consumers``) carry out a ``Work`` in the order that keeps every plan safe across crashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
import orjson
from pydantic import ValidationError

from .errors import InputError, describe
from .messages import (
    AllocationTarget,
    PolicyRebalance,
    StrategyWeightsUpdated,
    WorldAllocationsChanged,
)
from .messages._types import SUM_TOLERANCE
from .messages.allocation import AllocationEvent
from .planner import (
    MultiWorldProportionalRebalancer,
    Plan,
    PlannerOptions,
    PlanningContext,
    PlanningError,
    PositionTable,
    Rebalancer,
    TargetWeightRebalancer,
    WorldChange,
    WorldTargets,
)
from .planner.bounds import check_plan
from .planner.netting import TRADE
from .planner.plan import intents_from_record, options_record
from .policies.measure import holdings, label
from .state.allocations import (
    POLICY_TRIGGERS_KEPT,
    AllocationState,
    HeldChange,
    HeldReason,
    InFlight,
    PendingPlan,
    PortfolioState,
    Record,
    WorldState,
    encode,
    pending_key,
    portfolio_key,
    world_key,
)
from .state.snapshots import SnapshotTable

Json = dict[str, Any]
M = TypeVar("M", WorldState, PortfolioState)


@dataclass(frozen=True)
class EngineOptions:
    """The service settings the engine needs."""

    planner: PlannerOptions = field(default_factory=PlannerOptions)
    plan_settle_timeout_ms: int = 600_000
    max_snapshot_age_ms: int | None = None


@dataclass(frozen=True)
class Requested:
    """One world's part of an allocation change."""

    world_id: str
    alloc_after: float | None
    alloc_before: float | None = None
    strategy_after: Mapping[str, float] | None = None
    strategy_before: Mapping[str, float] | None = None


@dataclass(frozen=True)
class EventOptions:
    """What an allocation event asks of its own plan (SPEC 2.2), kept with a held change so
    it applies whenever the change is planned."""

    min_trade_notional: float | None = None
    lot_size_by_symbol: Mapping[str, float] | None = None

    @classmethod
    def of(cls, event: AllocationEvent | None) -> EventOptions:
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
        overrides: Json = {}
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


@dataclass
class Work:
    """What the edges must do, in this order: write ``pending`` to the changelog, publish
    ``intents``, publish ``records`` (plan and held records), write ``state`` to the changelog
    (which clears ``pending``), then commit the event's offset."""

    plan: Plan | None = None
    intents_from: Json | None = None
    """The plan record whose intents are to be published (see ``intents``)."""
    records: list[Json] = field(default_factory=list)
    pending: Record | None = None
    state: list[Record] = field(default_factory=list)
    held_worlds: list[str] = field(default_factory=list)
    planned_worlds: list[str] = field(default_factory=list)
    before_mismatches: int = 0
    duplicate: bool = False
    superseded: bool = False
    """A policy event measured before its world's latest plan: recorded as applied, dropped."""
    dropped: str | None = None
    """Why a held policy correction could not be planned on release (it is dropped)."""
    refused: str | None = None
    """Why held changes could not be planned on release (they stay held, tried again)."""

    @property
    def has_intents(self) -> bool:
        return self.intents_from is not None and bool(self.intents_from["intent_ids"])

    @cached_property
    def intents(self) -> list[Json]:
        """The intents of ``intents_from``, made when first asked for: the service asks
        while the write-ahead is in flight."""
        return [] if self.intents_from is None else intents_from_record(self.intents_from)


def _sha(data: Any) -> str:
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


class RebalanceEngine:
    """Decides, per allocation change, between dead letter, hold and plan."""

    def __init__(
        self,
        state: AllocationState,
        snapshots: SnapshotTable,
        options: EngineOptions | None = None,
        planner: Rebalancer | None = None,
    ) -> None:
        self.state = state
        self.snapshots = snapshots
        self.options = options or EngineOptions()
        self.planner = planner or MultiWorldProportionalRebalancer()

    def prepare(self, table: PositionTable) -> None:
        """Let the planner compute ahead what plans on ``table`` will share (when it can)."""
        prepare = getattr(self.planner, "prepare", None)
        if prepare is not None:
            prepare(table, self.options.planner)

    # -- events -------------------------------------------------------------------------------

    def on_event(self, event: AllocationEvent | PolicyRebalance, now_ms: int) -> Work:
        """Decide what to do with one allocation change. Raises ``InputError`` when the event
        is invalid against the current state (the caller dead-letters it)."""
        if isinstance(event, PolicyRebalance):
            return self._on_policy(event, now_ms)
        portfolio_id = event.portfolio_id
        if self.state.was_applied(portfolio_id, event.event_id):
            return Work(duplicate=True)
        requested, equity = self._requested(event)
        work = Work()
        to_plan: list[Requested] = []
        worlds: dict[str, WorldState] = {}
        for req in requested:
            ws = self.state.world(portfolio_id, req.world_id)
            known = ws.alloc
            before = req.alloc_before
            if known is not None and before is not None and abs(known - before) > SUM_TOLERANCE:
                work.before_mismatches += 1
            if known is None and req.alloc_after is not None and req.alloc_before is None:
                raise InputError(
                    f"world_alloc_before.{req.world_id}: missing, and the service has no "
                    f"allocation for world {req.world_id!r} yet; the move cannot be scaled"
                )
            reason = self._hold_reason(ws, now_ms)
            if reason is None:
                to_plan.append(req)
                continue
            worlds[req.world_id] = _checked(
                ws.model_copy(
                    update={"held": self._coalesce(ws.held, req, event, equity, reason, now_ms)}
                )
            )
            work.held_worlds.append(req.world_id)
        portfolio = self.state.portfolio(portfolio_id)
        if equity is not None:
            portfolio = portfolio.model_copy(update={"total_equity": equity})
        portfolio = AllocationState.with_applied(portfolio, [event.event_id])
        if work.held_worlds:
            work.records.append(self._held_record(event, work.held_worlds, worlds, now_ms))
        if to_plan:
            self._plan(
                work,
                portfolio_id,
                to_plan,
                total_equity=equity if equity is not None else portfolio.total_equity or 0.0,
                event_ids=[event.event_id],
                occurred_at=event.occurred_at,
                now_ms=now_ms,
                worlds=worlds,
                event=event,
                portfolio=portfolio,
                asked=EventOptions.of(event),
            )
        else:
            work.state = [(world_key(portfolio_id, w), encode(s)) for w, s in worlds.items()]
            work.state.append((portfolio_key(portfolio_id), encode(portfolio)))
        return work

    def _requested(self, event: AllocationEvent) -> tuple[list[Requested], float | None]:
        if isinstance(event, WorldAllocationsChanged):
            self._check_world_sums(event)
            before = event.world_alloc_before or {}
            s_after = event.strategy_alloc_after_total or {}
            s_before = event.strategy_alloc_before_total or {}
            return [
                Requested(w, a, before.get(w), s_after.get(w), s_before.get(w))
                for w, a in sorted(event.world_alloc_after.items())
            ], event.total_equity
        assert isinstance(event, StrategyWeightsUpdated)
        ws = self.state.world(event.portfolio_id, event.world_id)
        limit = ws.held.alloc_after if ws.held and ws.held.alloc_after is not None else ws.alloc
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
        return [req], None

    def _check_world_sums(self, event: WorldAllocationsChanged) -> None:
        others = 0.0
        for ws in self.state.portfolio_worlds(event.portfolio_id):
            if ws.world_id in event.world_alloc_after:
                continue
            pending = ws.held.alloc_after if ws.held and ws.held.alloc_after is not None else None
            others += pending if pending is not None else (ws.alloc or 0.0)
        total = others + sum(event.world_alloc_after.values())
        if total > 1 + SUM_TOLERANCE:
            raise InputError(
                f"world_alloc_after: with the portfolio's other worlds, allocations would add "
                f"up to {total:.12g}, above 1"
            )

    # -- holding ------------------------------------------------------------------------------

    def reached(self, in_flight: InFlight | None, portfolio_id: str, world_id: str) -> bool:
        """Whether every affected strategy's snapshot reports the plan as converged."""
        if in_flight is None:
            return True
        for strategy_id in in_flight.strategies:
            snap = self.snapshots.get(world_id, strategy_id)
            if snap is None or snap.converged_plan_id != in_flight.plan_id:
                return False
        return True

    def _hold_reason(self, ws: WorldState, now_ms: int) -> HeldReason | None:
        if ws.held is not None:
            return ws.held.reason
        if self._waiting(ws, now_ms):
            return "plan_in_flight"
        if self._stale(ws.world_id, now_ms):
            return "stale_snapshots"
        return None

    def _waiting(self, ws: WorldState, now_ms: int) -> bool:
        """Whether the world's plan in flight is neither reached nor past the settle timeout."""
        flight = ws.in_flight
        if flight is None or self.reached(flight, ws.portfolio_id, ws.world_id):
            return False
        return now_ms - flight.planned_at < self.options.plan_settle_timeout_ms

    def _stale(self, world_id: str, now_ms: int) -> bool:
        max_age = self.options.max_snapshot_age_ms
        if max_age is None:
            return False
        oldest = self.snapshots.oldest_as_of(world_id)
        return oldest is not None and now_ms - oldest > max_age

    @staticmethod
    def _coalesce(
        held: HeldChange | None,
        req: Requested,
        event: AllocationEvent,
        equity: float | None,
        reason: HeldReason,
        now_ms: int,
    ) -> HeldChange:
        if held is not None and held.policy is not None:
            # the world's target moves: the waiting policy correction gives way to it
            fresh = RebalanceEngine._coalesce(None, req, event, equity, reason, now_ms)
            return fresh.model_copy(
                update={"event_ids": [*held.event_ids, event.event_id], "since": held.since}
            )
        asked = EventOptions.of(event)
        if held is None:
            return HeldChange(
                event_ids=[event.event_id],
                reason=reason,
                since=now_ms,
                alloc_after=req.alloc_after,
                strategy_after=dict(req.strategy_after) if req.strategy_after else None,
                alloc_before=req.alloc_before,
                strategy_before=dict(req.strategy_before) if req.strategy_before else None,
                total_equity=equity,
                occurred_at=event.occurred_at,
                min_trade_notional=asked.min_trade_notional,
                lot_size_by_symbol=dict(asked.lot_size_by_symbol or {}) or None,
            )
        merged = dict(held.strategy_after or {})
        merged.update(req.strategy_after or {})
        options = EventOptions.of_held([held]).then(asked)
        return held.model_copy(
            update={
                "event_ids": [*held.event_ids, event.event_id],
                "alloc_after": req.alloc_after if req.alloc_after is not None else held.alloc_after,
                "strategy_after": merged or None,
                "total_equity": equity if equity is not None else held.total_equity,
                "occurred_at": event.occurred_at,
                "min_trade_notional": options.min_trade_notional,
                "lot_size_by_symbol": dict(options.lot_size_by_symbol or {}) or None,
            }
        )

    def releasable(self, now_ms: int, portfolios: Iterable[str] | None = None) -> list[Work]:
        """Plan the held work that may go now (plan reached or timed out, snapshots fresh),
        one plan per portfolio. ``portfolios`` limits this to the ones this instance owns."""
        owned = None if portfolios is None else set(portfolios)
        ready: dict[str, list[WorldState]] = {}
        for (portfolio_id, _), ws in sorted(self.state.worlds.items()):
            if ws.held is None or (owned is not None and portfolio_id not in owned):
                continue
            if portfolio_id in self.state.pending:
                continue
            flight = ws.in_flight
            waiting = flight is not None and not self.reached(flight, portfolio_id, ws.world_id)
            if (
                waiting
                and flight
                and now_ms - flight.planned_at < self.options.plan_settle_timeout_ms
            ):
                continue
            if self._stale(ws.world_id, now_ms):
                continue
            ready.setdefault(portfolio_id, []).append(ws)
        out = []
        for portfolio_id, candidates in ready.items():
            for ws in candidates:
                if ws.held is not None and ws.held.policy is not None:
                    out.append(self._release_policy(ws, ws.held.policy, ws.held.event_ids, now_ms))
            states = [ws for ws in candidates if ws.held is not None and ws.held.policy is None]
            if not states:
                continue
            work = Work()
            event_ids = [e for ws in states for e in (ws.held.event_ids if ws.held else [])]
            held = [ws.held for ws in states if ws.held]
            portfolio = self.state.portfolio(portfolio_id)
            equity = next(
                (h.total_equity for h in reversed(held) if h.total_equity is not None),
                portfolio.total_equity or 0.0,
            )
            requested = [
                Requested(
                    ws.world_id,
                    ws.held.alloc_after,
                    ws.held.alloc_before,
                    ws.held.strategy_after,
                    ws.held.strategy_before,
                )
                for ws in states
                if ws.held
            ]
            try:
                self._plan(
                    work,
                    portfolio_id,
                    requested,
                    total_equity=equity,
                    event_ids=list(dict.fromkeys(event_ids)),
                    occurred_at=max(h.occurred_at for h in held),
                    now_ms=now_ms,
                    worlds={},
                    event=None,
                    portfolio=portfolio,
                    asked=EventOptions.of_held(sorted(held, key=lambda h: h.occurred_at)),
                )
            except InputError as exc:
                # accepted changes stay held: the snapshots may make them plannable later
                out.append(Work(refused=f"portfolio {portfolio_id!r}: {exc}"))
                continue
            out.append(work)
        return out

    # -- planning -----------------------------------------------------------------------------

    def _plan(
        self,
        work: Work,
        portfolio_id: str,
        requested: list[Requested],
        *,
        total_equity: float,
        event_ids: list[str],
        occurred_at: int,
        now_ms: int,
        worlds: dict[str, WorldState],
        event: AllocationEvent | None,
        portfolio: PortfolioState,
        asked: EventOptions,
    ) -> None:
        changes = []
        for req in requested:
            ws = self.state.world(portfolio_id, req.world_id)
            before = ws.alloc if ws.alloc is not None else req.alloc_before
            after = req.alloc_after if req.alloc_after is not None else before
            strategy_before = ws.strategy_alloc or (
                dict(req.strategy_before) if req.strategy_before is not None else None
            )
            changes.append(
                WorldChange(
                    world_id=req.world_id,
                    alloc_before=before,
                    alloc_after=after,
                    strategy_before=strategy_before,
                    strategy_after=req.strategy_after,
                )
            )
        options = asked.applied_to(self.options.planner)
        planned = [c.world_id for c in changes]
        shared = options.execution_mode == "shared_account"
        positions = self.snapshots.positions(None if shared else planned)
        plan = _run_planner(
            self.planner,
            event=event,
            event_ids=event_ids,
            portfolio_id=portfolio_id,
            occurred_at=occurred_at,
            total_equity=total_equity,
            changes=changes,
            positions=positions,
            options=options,
            now_ms=now_ms,
        )
        self._commit(work, plan, portfolio_id, worlds, portfolio, event_ids, now_ms)

    def _commit(
        self,
        work: Work,
        plan: Plan,
        portfolio_id: str,
        worlds: dict[str, WorldState],
        portfolio: PortfolioState,
        event_ids: list[str],
        now_ms: int,
        *,
        policy: PolicyRebalance | None = None,
    ) -> None:
        """Fill ``work`` with a plan's intents, record, write-ahead and new state.

        A planned world's state is taken from ``worlds`` if there, else from the state. An
        external change sets the world's allocations to the plan's; a policy's correction
        leaves them as they are (the positions moved, not the targets).
        """
        record = plan.wire
        if policy is not None:
            record["policy"] = policy.model_dump(mode="json")
        shared = plan.context.options.execution_mode == "shared_account"
        new_worlds = dict(worlds)
        affected_by_world = affected_strategies(plan)
        for scale in plan.worlds:
            ws = worlds.get(scale.world_id) or self.state.world(portfolio_id, scale.world_id)
            world_plan = record["per_world"][scale.world_id]
            affected = affected_by_world.get(scale.world_id, [])
            has_intents = any(d["legs"] for d in world_plan["deltas"]) or (
                shared and bool(record["global_deltas"])
            )
            update: Json = {
                "in_flight": InFlight(
                    plan_id=plan.plan_id,
                    event_ids=event_ids,
                    strategies=affected,
                    planned_at=now_ms,
                )
                if has_intents
                else None,
                "held": None,
            }
            if policy is None:
                update["alloc"] = scale.alloc_after
                update["strategy_alloc"] = {
                    s: w for s, w in scale.strategy_after.items() if w > 0 or s in ws.strategy_alloc
                }
            new_worlds[scale.world_id] = _checked(ws.model_copy(update=update))
        portfolio = _checked(portfolio)
        state = [(world_key(portfolio_id, w), encode(s)) for w, s in new_worlds.items()]
        state.append((portfolio_key(portfolio_id), encode(portfolio)))
        # the write-ahead, serialised directly: the record is large and already plain data
        pending = orjson.dumps(
            {
                "portfolio_id": portfolio_id,
                "record": record,
                "worlds": [w.model_dump(mode="json") for w in new_worlds.values()],
                "portfolio": portfolio.model_dump(mode="json"),
            }
        )
        work.plan = plan
        work.intents_from = record
        work.records.append(record)
        work.pending = (pending_key(portfolio_id), pending)
        work.state = [*state, (pending_key(portfolio_id), None)]
        work.planned_worlds = [scale.world_id for scale in plan.worlds]

    def _held_record(
        self,
        event: AllocationEvent | PolicyRebalance,
        held: list[str],
        worlds: dict[str, WorldState],
        now_ms: int,
    ) -> Json:
        """A plan record saying which worlds of ``event`` wait, why, and with what."""
        options = self.options.planner
        changes = {w: worlds[w].held for w in held}
        reasons = sorted({h.reason for h in changes.values() if h is not None})
        coalesced = [e for h in changes.values() if h is not None for e in h.event_ids]
        record: Json = {
            "schema_version": 1,
            "plan_id": "held-" + _sha(["held", event.portfolio_id, event.event_id, held]),
            "event_id": event.event_id,
            "portfolio_id": event.portfolio_id,
            "occurred_at": event.occurred_at,
            "created_at": now_ms,
            "expires_at": now_ms,
            "status": "held",
            "held_reason": f"{', '.join(reasons)}: worlds {', '.join(held)}",
            "total_equity": getattr(event, "total_equity", None) or 0.0,
            "options": options_record(getattr(self.planner, "name", "planner"), options),
            "per_world": {},
            "global_deltas": [],
            "global_dropped": [],
            "coalesced_event_ids": list(dict.fromkeys(coalesced)),
            "intent_ids": [],
            "timing": None,
        }
        if isinstance(event, PolicyRebalance):
            record["policy"] = event.model_dump(mode="json")
        return record

    # -- policies -----------------------------------------------------------------------------

    def busy(self, ws: WorldState, now_ms: int) -> bool:
        """Whether a world has work under way (a held change, a plan neither reached nor timed
        out, a plan being written): a policy leaves it alone until then."""
        return (
            ws.held is not None
            or self._waiting(ws, now_ms)
            or ws.portfolio_id in self.state.pending
        )

    def _on_policy(self, event: PolicyRebalance, now_ms: int) -> Work:
        """A policy's correction: dropped if measured before the world's latest plan, else
        held or planned like any change, and remembered for the policy's limits."""
        portfolio_id, world_id = event.portfolio_id, event.world_id
        if self.state.was_applied(portfolio_id, event.event_id):
            return Work(duplicate=True)
        portfolio = AllocationState.with_applied(
            self.state.portfolio(portfolio_id), [event.event_id]
        )
        ws = self.state.world(portfolio_id, world_id)
        flight = ws.in_flight
        if flight is not None and flight.planned_at >= event.occurred_at:
            # the world was planned after the runner measured it: what it saw has moved
            return Work(state=[(portfolio_key(portfolio_id), encode(portfolio))], superseded=True)
        self._check_policy(event, ws, portfolio)
        triggers = [*ws.policy_triggers, event.occurred_at][-POLICY_TRIGGERS_KEPT:]
        ws = ws.model_copy(update={"policy_triggers": triggers})
        work = Work()
        reason = self._hold_reason(ws, now_ms)
        if reason is not None:
            ws = ws.model_copy(update={"held": _hold_policy(ws.held, event, reason, now_ms)})
            work.held_worlds.append(world_id)
            work.records.append(self._held_record(event, [world_id], {world_id: ws}, now_ms))
            work.state = [
                (world_key(portfolio_id, world_id), encode(ws)),
                (portfolio_key(portfolio_id), encode(portfolio)),
            ]
            return work
        self._plan_policy(work, event, ws, portfolio, [event.event_id], now_ms)
        return work

    @staticmethod
    def _check_policy(event: PolicyRebalance, ws: WorldState, portfolio: PortfolioState) -> None:
        """Refuse a policy event the state cannot carry out (it is dead-lettered)."""
        target = event.target
        if isinstance(target, AllocationTarget) or target.base == "allocation":
            if ws.alloc is None:
                raise InputError(
                    f"world_id: the service has no allocation for world {event.world_id!r}; "
                    f"policy {event.policy!r} has no target to bring it to"
                )
            if not portfolio.total_equity:
                raise InputError(
                    f"portfolio_id: portfolio {event.portfolio_id!r} has no known total equity "
                    f"(set by world_allocations_changed); policy {event.policy!r} cannot "
                    "weigh its worlds"
                )

    def _release_policy(
        self, ws: WorldState, event: PolicyRebalance, event_ids: list[str], now_ms: int
    ) -> Work:
        """Plan a held policy correction now, measured now; drop it if it cannot be."""
        work = Work()
        portfolio = self.state.portfolio(ws.portfolio_id)
        try:
            self._check_policy(event, ws, portfolio)
            self._plan_policy(work, event, ws, portfolio, event_ids, now_ms)
        except InputError as exc:
            freed = ws.model_copy(update={"held": None})
            return Work(
                state=[(world_key(ws.portfolio_id, ws.world_id), encode(freed))], dropped=str(exc)
            )
        return work

    def _plan_policy(
        self,
        work: Work,
        event: PolicyRebalance,
        ws: WorldState,
        portfolio: PortfolioState,
        event_ids: list[str],
        now_ms: int,
    ) -> None:
        """Measure the world on the current snapshots and plan it back to the target.

        ``allocation``: the proportional planner from the measured weight to the allocation,
        so every position scales by allocation / weight. ``weights``: the target-weight
        planner, each asset to ``weight x base / mark``.
        """
        world_id, portfolio_id = ws.world_id, ws.portfolio_id
        options = self.options.planner
        shared = options.execution_mode == "shared_account"
        positions = self.snapshots.positions(None if shared else [world_id])
        held = holdings(positions, world_id)
        if held.missing_marks:
            missing = ", ".join(label(k) for k in held.missing_marks)
            raise InputError(f"world {world_id!r}: no mark for {missing}; cannot measure it")
        equity = portfolio.total_equity or 0.0
        target = event.target
        planner: Rebalancer
        if isinstance(target, AllocationTarget):
            assert ws.alloc is not None  # _check_policy
            weight = held.value(target.measure) / equity
            if not weight > 0:
                raise InputError(
                    f"world {world_id!r}: its {target.measure} value is {weight * equity:.12g}; "
                    "there is nothing to scale to its allocation"
                )
            change = WorldChange(world_id, alloc_before=weight, alloc_after=ws.alloc)
            planner = self.planner
        else:
            base = (ws.alloc or 0.0) * equity if target.base == "allocation" else held.value("net")
            if not base > 0:
                raise InputError(
                    f"world {world_id!r}: its {target.base} base is {base:.12g}; "
                    "target weights need a positive base"
                )
            marks = held.marks()
            keys = [(w.venue, w.symbol) for w in target.weights]
            unpriced = [label(k) for k in keys if k not in marks]
            if unpriced:
                raise InputError(
                    f"world {world_id!r}: no mark for target asset(s) {', '.join(unpriced)} "
                    "(a snapshot position of quantity 0 with a mark gives one)"
                )
            targets = WorldTargets(
                weights={(w.venue, w.symbol): w.weight for w in target.weights},
                equity=base,
                marks={k: marks[k] for k in keys},
                strategy_id=target.strategy_id,
            )
            change = WorldChange(world_id, alloc_before=ws.alloc, alloc_after=ws.alloc)
            try:
                planner = TargetWeightRebalancer({world_id: targets})
            except PlanningError as exc:
                raise InputError(str(exc)) from None
        plan = _run_planner(
            planner,
            event=event,
            event_ids=event_ids,
            portfolio_id=portfolio_id,
            occurred_at=event.occurred_at,
            total_equity=equity,
            changes=[change],
            positions=positions,
            options=options,
            now_ms=now_ms,
        )
        self._commit(
            work, plan, portfolio_id, {world_id: ws}, portfolio, event_ids, now_ms, policy=event
        )

    # -- recovery -----------------------------------------------------------------------------

    @staticmethod
    def resume(pending: PendingPlan) -> Work:
        """Finish a plan that was being published when the service stopped: the same record,
        the same intents (rebuilt from the record, byte for byte), the same state."""
        record = pending.record
        portfolio_id = pending.portfolio_id
        state: list[Record] = [
            (world_key(portfolio_id, ws.world_id), encode(ws)) for ws in pending.worlds
        ]
        state.append((portfolio_key(portfolio_id), encode(pending.portfolio)))
        state.append((pending_key(portfolio_id), None))
        return Work(intents_from=record, records=[record], state=state)


def _checked(state: M) -> M:
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


def _hold_policy(
    held: HeldChange | None, event: PolicyRebalance, reason: HeldReason, now_ms: int
) -> HeldChange:
    """A policy event joins the world's held work: it waits alone, replaces an older policy
    event, or gives way to a waiting external change (which moves the target anyway)."""
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


def _run_planner(
    planner: Rebalancer,
    *,
    event: AllocationEvent | PolicyRebalance | None,
    event_ids: list[str],
    portfolio_id: str,
    occurred_at: int,
    total_equity: float,
    changes: list[WorldChange],
    positions: PositionTable,
    options: PlannerOptions,
    now_ms: int,
) -> Plan:
    """Plan ``changes``; a planner's refusal is the event's error (``InputError``). The
    trigger, hashed into the plan id, is the event, the events coalesced and the changes."""
    trigger = {
        "event": None if event is None else event.model_dump(mode="json"),
        "event_ids": event_ids,
        "changes": [vars(c) for c in changes],
    }
    context = PlanningContext(
        event_id=event_ids[-1],
        portfolio_id=portfolio_id,
        occurred_at=occurred_at,
        total_equity=total_equity,
        changes=tuple(changes),
        positions=positions,
        options=options,
        trigger=orjson.dumps(trigger, option=orjson.OPT_SORT_KEYS),
        created_at=now_ms,
        coalesced_event_ids=tuple(event_ids),
    )
    try:
        return check_plan(planner.plan(context))
    except PlanningError as exc:
        raise InputError(str(exc)) from None


def affected_strategies(plan: Plan) -> dict[str, list[str]]:
    """Per world, the strategies that a traded key of the plan moves (sorted)."""
    view = plan.per_world
    traded = view.status == TRADE
    moving = (view.pair_delta != 0) & traded[view.pair_key]
    out: dict[str, set[str]] = {}
    strategies = plan.context.positions.strategies
    present = np.zeros(len(strategies), np.bool_)
    present[view.pair_strategy[moving]] = True  # a presence mask: no sort, unlike np.unique
    for code in np.flatnonzero(present).tolist():
        world_id, strategy_id = strategies[code]
        out.setdefault(world_id, set()).add(strategy_id)
    return {w: sorted(s) for w, s in out.items()}
