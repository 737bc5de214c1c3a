"""From a plan to what carrying it out writes: the plan record, the write-ahead, the new state.

A plan's work is built whole before anything of it is published: the new world states are
validated first (``checked``), so a plan whose state the changelog could not read back is
refused, not half published. The write-ahead holds the record and the state to write, so a
restart finishes the plan as it was (``resume``) instead of planning again on positions that
may have moved.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import orjson

from ..errors import InputError
from ..messages import PolicyRebalance
from ..messages.allocation import AllocationEvent
from ..messages.command import OperatorCommand
from ..planner import (
    Plan,
    PlannerOptions,
    PlanningContext,
    PlanningError,
    PositionTable,
    Rebalancer,
    WorldChange,
)
from ..planner.bounds import check_plan
from ..planner.ids import hex_id
from ..planner.netting import TRADE
from ..planner.plan import options_record
from ..state.allocations import (
    STRICTNESS,
    AllocationState,
    HeldChange,
    HoldReason,
    InFlight,
    PendingPlan,
    PortfolioState,
    Record,
    WorldState,
    encode,
    pending_key,
    portfolio_key,
    proposal_key,
    world_key,
)
from ..state.snapshots import SnapshotTable
from .admission import Requested, Waiting, checked
from .approval import Approvals, proposal_entry
from .gating import skipped_record
from .options import EngineOptions, EventOptions
from .pacing import as_step, next_step, paced_steps, step_waiting
from .slicing import sliced_record
from .work import Held, Json, Outcome, Work


def _hashed_event(event: AllocationEvent | PolicyRebalance | OperatorCommand) -> Json:
    """The event as its plan's trigger bytes name it: fields added since plan ids were pinned
    (a policy event's ``estimate``) only when set, so an event without them keeps its id."""
    data: Json = event.model_dump(mode="json")
    if data.get("estimate", True) is None:
        del data["estimate"]
    return data


@dataclass(frozen=True)
class Sources:
    """What the engine decides from: the service's state, the latest snapshots, its settings
    and the planner of allocation changes. The engine reads them and never writes them: the
    edges apply a work's state once it is carried out."""

    state: AllocationState
    snapshots: SnapshotTable
    options: EngineOptions
    planner: Rebalancer

    def chosen(
        self, portfolio_id: str, world_ids: Sequence[str]
    ) -> tuple[Rebalancer, PlannerOptions]:
        """The planner of a plan of ``world_ids`` (``planners.choice``, else the engine's),
        and the planner options it plans with."""
        choice = self.options.planners.of(portfolio_id, world_ids)
        if choice is None:
            return self.planner, self.options.planner
        return choice.planner, choice.options(self.options.planner)


@dataclass(frozen=True)
class Trigger:
    """What a plan answers, hashed into its id: the event (``None`` for held changes planned
    on release), the events it carries out (coalesced ones too; the last names the plan), when
    the latest occurred, and the equity it divides."""

    portfolio_id: str
    event: AllocationEvent | PolicyRebalance | None
    event_ids: tuple[str, ...]
    occurred_at: int
    total_equity: float
    now_ms: int
    requested_by: str | None = None
    """The token whose command, or the policy, that asked for the plan (not hashed: who asks
    does not change the plan); four-eyes keeps it from approving the plan."""
    command: OperatorCommand | None = None
    """The operator's command that asked for the plan (flatten, rebalance): its record says
    who, when and why."""

    def context(
        self,
        changes: Sequence[WorldChange],
        positions: PositionTable,
        options: PlannerOptions,
        reduce_only: Collection[str] = (),
    ) -> PlanningContext:
        """What the planner plans ``changes`` on, the worlds of ``reduce_only`` publishing only
        what shrinks exposure. The trigger bytes cover the event, the events coalesced, the
        changes and the reduce-only worlds: the same input gives the same plan id."""
        trigger: Json = {
            "event": None if self.event is None else _hashed_event(self.event),
            "event_ids": list(self.event_ids),
            "changes": [vars(c) for c in changes],
        }
        if reduce_only:  # only then: a plan with no reduce-only world keeps the id it had
            trigger["reduce_only"] = sorted(reduce_only)
        return PlanningContext(
            event_id=self.event_ids[-1],
            portfolio_id=self.portfolio_id,
            occurred_at=self.occurred_at,
            total_equity=self.total_equity,
            changes=tuple(changes),
            positions=positions,
            options=options,
            trigger=orjson.dumps(trigger, option=orjson.OPT_SORT_KEYS),
            created_at=self.now_ms,
            coalesced_event_ids=self.event_ids,
            reduce_only_worlds=frozenset(reduce_only),
        )


@dataclass(frozen=True)
class Basis:
    """The state a plan is written over: the portfolio as the event leaves it, and the world
    states the event already changed (the worlds it holds). A planned world not among them is
    taken from the state."""

    portfolio: PortfolioState
    worlds: Mapping[str, WorldState] = field(default_factory=dict)


@dataclass(frozen=True)
class PlanRequest:
    """Allocation changes to plan: the worlds' moves and what their events ask of the plan."""

    trigger: Trigger
    requested: list[Requested]
    asked: EventOptions
    basis: Basis
    approvable: bool = True
    """Whether the plan is proposed rather than published where approval is required
    (a flatten, an emergency exit, never waits for an approver)."""
    paceable: bool = False
    """Whether a large move is paced (``[pacing]``): allocation changes are, an operator's
    command (a flatten, a rebalance) is carried out whole."""

    def held_changes(self) -> dict[str, HeldChange]:
        """The requested moves as held changes: what a proposal's worlds keep while they wait
        for the approver, and plan again if the proposal expires."""
        trigger, asked = self.trigger, self.asked
        waiting = Waiting(
            event_ids=trigger.event_ids,
            reason=HoldReason.AWAITING_APPROVAL,
            since=trigger.now_ms,
            total_equity=trigger.total_equity,
            occurred_at=trigger.occurred_at,
            asked=asked,
            requested_by=trigger.requested_by,
        )
        return {req.world_id: req.waiting(waiting) for req in self.requested}


class Effects:
    """Plans allocation changes and turns a plan, or a hold, into the work that carries it."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self.approvals = Approvals(sources)

    def plan(self, request: PlanRequest) -> Work:
        """Plan the requested moves from the state's allocations (an event's before only for
        a world the state does not know) on the current snapshots. Raises ``InputError`` when
        the planner refuses or the new state would be invalid."""
        state, trigger = self.sources.state, request.trigger
        changes = []
        following: dict[str, HeldChange] = {}
        waiting = step_waiting(
            trigger.event_ids,
            trigger.now_ms,
            trigger.total_equity,
            trigger.occurred_at,
            request.asked,
            trigger.requested_by,
        )
        for req in request.requested:
            ws = state.world(trigger.portfolio_id, req.world_id)
            before = ws.alloc if ws.alloc is not None else req.alloc_before
            strategy_before = ws.strategy_alloc or (
                dict(req.strategy_before) if req.strategy_before is not None else None
            )
            steps = None
            if request.paceable and req.pacing is None:
                rule = self.sources.options.pacing.rule(trigger.portfolio_id, req.world_id)
                steps = paced_steps(rule, before, strategy_before, req)
            step = req if steps is None else as_step(req, steps[0], None)
            then = next_step(req, steps, waiting)
            if then is not None:
                following[req.world_id] = then
            after = step.alloc_after if step.alloc_after is not None else before
            changes.append(
                WorldChange(
                    world_id=req.world_id,
                    alloc_before=before,
                    alloc_after=after,
                    strategy_before=strategy_before,
                    strategy_after=step.strategy_after,
                )
            )
        planned = [c.world_id for c in changes]
        planner, options = self.sources.chosen(trigger.portfolio_id, planned)
        options = request.asked.applied_to(options)
        shared = options.execution_mode == "shared_account"
        positions = self.sources.snapshots.positions(None if shared else planned)
        reduce_only = reduce_only_worlds(state, request.basis, planned)
        context = trigger.context(changes, positions, options, reduce_only)
        plan = run_planner(planner, context)
        proposal = request.held_changes() if request.approvable else None
        return self.commit(plan, trigger, request.basis, proposal, following)

    def commit(
        self,
        plan: Plan,
        trigger: Trigger,
        basis: Basis,
        proposal: Mapping[str, HeldChange] | None = None,
        following: Mapping[str, HeldChange] | None = None,
        cost_gate: Json | None = None,
    ) -> Work:
        """A plan's work: its intents, record, write-ahead and new state; or, where a planned
        world needs approval and ``proposal`` gives each planned world's change as it would
        wait, the work of proposing it. ``following``: per world, the next step of a paced
        move, which the world holds once this plan is out.

        An external change sets each planned world's allocations to the plan's (in
        reduce-only too: what the plan held is the growth, not the allocation); a policy's
        correction leaves them as they are (the positions moved, not the targets). A world
        with intents waits for them (``in_flight``) before its next plan.
        """
        portfolio_id = trigger.portfolio_id
        policy = trigger.event if isinstance(trigger.event, PolicyRebalance) else None
        record = plan.wire
        max_slice = self.sources.options.max_slice_notional
        if max_slice is not None:
            record = sliced_record(record, max_slice, plan.context.options)
        if policy is not None:
            record["policy"] = policy.model_dump(mode="json")
        if trigger.command is not None:
            record["command"] = command_record(trigger.command)
        if cost_gate is not None:
            record["cost_gate"] = cost_gate
        shared = plan.context.options.execution_mode == "shared_account"
        new_worlds = dict(basis.worlds)
        affected_by_world = affected_strategies(plan)
        for scale in plan.worlds:
            ws = basis.worlds.get(scale.world_id) or self.sources.state.world(
                portfolio_id, scale.world_id
            )
            world_plan = record["per_world"][scale.world_id]
            affected = affected_by_world.get(scale.world_id, [])
            has_intents = any(d["legs"] for d in world_plan["deltas"]) or (
                shared and bool(record["global_deltas"])
            )
            update: Json = {
                "in_flight": InFlight(
                    plan_id=plan.plan_id,
                    event_ids=list(trigger.event_ids),
                    strategies=affected,
                    planned_at=trigger.now_ms,
                )
                if has_intents
                else None,
                "held": (following or {}).get(scale.world_id),
                "proposal": None,
            }
            if policy is None:
                update["alloc"] = scale.alloc_after
                update["strategy_alloc"] = {
                    s: w for s, w in scale.strategy_after.items() if w > 0 or s in ws.strategy_alloc
                }
            new_worlds[scale.world_id] = checked(ws.model_copy(update=update))
        portfolio = checked(basis.portfolio)
        planned = [scale.world_id for scale in plan.worlds]
        if (
            proposal is not None
            and record["intent_ids"]  # nothing to trade, nothing to approve
            and any(
                self.approvals.required(portfolio, self.sources.state.world(portfolio_id, w))
                for w in planned
            )
        ):
            return self.approvals.propose(
                plan, record, new_worlds, portfolio, proposal, trigger.now_ms
            )
        work = publication(portfolio_id, record, new_worlds.values(), portfolio)
        return replace(work, plan=plan, planned_worlds=planned)

    def skip(self, plan: Plan, trigger: Trigger, basis: Basis, cost_gate: Json) -> Work:
        """A policy correction its cost gate skips: its record published (status
        ``skipped_by_cost_gate``, both figures, no intents) through the write-ahead, its
        world freed (nothing held, nothing in flight: the next drift asks again)."""
        assert isinstance(trigger.event, PolicyRebalance)
        record = skipped_record(plan.wire)
        record["policy"] = trigger.event.model_dump(mode="json")
        record["cost_gate"] = cost_gate
        worlds = [
            checked(
                (
                    basis.worlds.get(s.world_id)
                    or self.sources.state.world(trigger.portfolio_id, s.world_id)
                ).model_copy(update={"held": None, "proposal": None})
            )
            for s in plan.worlds
        ]
        work = publication(
            trigger.portfolio_id, record, worlds, checked(basis.portfolio), outcome=Outcome.SKIPPED
        )
        return replace(work, planned_worlds=[s.world_id for s in plan.worlds])

    def held(
        self,
        event: AllocationEvent | PolicyRebalance,
        changes: Mapping[str, HeldChange],
        now_ms: int,
    ) -> Held:
        """The worlds of ``event`` that wait (``changes``: each one's held change), and the
        held plan record saying which wait, why, and with what events."""
        worlds = list(changes)
        chosen, options = self.sources.chosen(event.portfolio_id, worlds)
        reasons = sorted({h.reason for h in changes.values()})
        coalesced = [e for h in changes.values() for e in h.event_ids]
        planner = getattr(chosen, "name", "planner")
        record: Json = {
            "schema_version": 1,
            "plan_id": "held-" + _sha(["held", event.portfolio_id, event.event_id, worlds]),
            "event_id": event.event_id,
            "portfolio_id": event.portfolio_id,
            "occurred_at": event.occurred_at,
            "created_at": now_ms,
            "expires_at": now_ms,
            "status": "held",
            "held_reason": f"{', '.join(reasons)}: worlds {', '.join(worlds)}",
            "total_equity": getattr(event, "total_equity", None) or 0.0,
            "options": options_record(planner, options),
            "per_world": {},
            "global_deltas": [],
            "global_dropped": [],
            "coalesced_event_ids": list(dict.fromkeys(coalesced)),
            "intent_ids": [],
            "timing": None,
        }
        if isinstance(event, PolicyRebalance):
            record["policy"] = event.model_dump(mode="json")
        return Held(worlds, reasons, record)


def publication(
    portfolio_id: str,
    record: Json,
    worlds: Iterable[WorldState],
    portfolio: PortfolioState,
    *,
    closes_proposal: bool = False,
    outcome: Outcome = Outcome.PLANNED,
) -> Work:
    """The work of publishing a plan record's intents: the write-ahead (record and state to
    write), the intents, the record, then the state (``closes_proposal``: the record is an
    approved proposal, which goes from the state with it)."""
    worlds = list(worlds)
    state: list[Record] = [(world_key(portfolio_id, ws.world_id), encode(ws)) for ws in worlds]
    state.append((portfolio_key(portfolio_id), encode(portfolio)))
    ahead: Json = {
        "portfolio_id": portfolio_id,
        "record": record,
        "worlds": [w.model_dump(mode="json") for w in worlds],
        "portfolio": portfolio.model_dump(mode="json"),
    }
    if closes_proposal:
        state.append((proposal_key(portfolio_id, record["plan_id"]), None))
        ahead["closes_proposal"] = True
    # the write-ahead, serialised directly: the record is large and already plain data
    pending = orjson.dumps(ahead)
    return Work(
        outcome,
        portfolio_id=portfolio_id,
        state=[*state, (pending_key(portfolio_id), None)],
        records=[record],
        intents_from=record,
        pending=(pending_key(portfolio_id), pending),
    )


def resume(pending: PendingPlan) -> Work:
    """Finish a plan that was being published (or proposed) when the service stopped: the
    same record, the same intents (rebuilt from the record, byte for byte), the same state."""
    record = pending.record
    portfolio_id = pending.portfolio_id
    state: list[Record] = [
        (world_key(portfolio_id, ws.world_id), encode(ws)) for ws in pending.worlds
    ]
    state.append((portfolio_key(portfolio_id), encode(pending.portfolio)))
    if pending.proposal is not None:
        state.append(proposal_entry(portfolio_id, record, pending.proposal))
    if pending.closes_proposal:
        state.append((proposal_key(portfolio_id, record["plan_id"]), None))
    state.append((pending_key(portfolio_id), None))
    return Work(
        Outcome.RESUMED,
        portfolio_id=portfolio_id,
        state=state,
        records=[record],
        intents_from=None if pending.proposal is not None else record,
    )


def command_record(command: OperatorCommand) -> Json:
    """Who asked for a plan by command, when and why (the plan record's ``command``)."""
    return command.model_dump(
        mode="json",
        include={"command_id", "action", "world_id", "requested_by", "reason", "requested_at"},
    )


def run_planner(planner: Rebalancer, context: PlanningContext) -> Plan:
    """Plan ``context`` and check the plan's bounds; a planner's refusal is the event's error
    (``InputError``): the event, not the service, cannot be planned."""
    try:
        return check_plan(planner.plan(context))
    except PlanningError as exc:
        raise InputError(str(exc)) from None


def reduce_only_worlds(state: AllocationState, basis: Basis, world_ids: Iterable[str]) -> list[str]:
    """The worlds of ``world_ids`` in ``reduce-only`` as the plan leaves them (the stricter of
    the world's mode and the portfolio's): their plan publishes only what shrinks exposure."""
    portfolio = basis.portfolio
    out = []
    for world_id in world_ids:
        ws = basis.worlds.get(world_id) or state.world(portfolio.portfolio_id, world_id)
        modes = (portfolio.trading.mode, ws.trading.mode)
        if max(modes, key=STRICTNESS.__getitem__) == "reduce-only":
            out.append(world_id)
    return out


def affected_strategies(plan: Plan) -> dict[str, list[str]]:
    """Per world, the strategies that a published key of the plan moves (sorted): the ones
    whose snapshots must report the plan before the world is planned again. The published
    keys are the worlds' own, or in a shared account the global view's (whose breakdown names
    each world's strategies): a key planned but not traded there (dropped, held by
    reduce-only, netted away between worlds) gets no intent, and its strategies would never
    report the plan."""
    shared = plan.context.options.execution_mode == "shared_account"
    view = plan.global_view if shared and plan.global_view is not None else plan.per_world
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


def _sha(data: Any) -> str:
    return hex_id(orjson.dumps(data, option=orjson.OPT_SORT_KEYS))
