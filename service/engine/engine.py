"""The engine's face: one event in, one ``Work`` out; held work out when it may go.

It composes the parts: ``admission`` refuses what the state cannot take, ``holding`` decides
what waits and what may go, ``effects`` turns plans and holds into work, ``policy`` handles
policy corrections. Nothing here performs I/O or writes the state: the edges carry out each
work and apply its state, so deciding is pure and a crash between decisions loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from ..errors import InputError
from ..messages import PolicyRebalance
from ..messages.allocation import AllocationEvent
from ..messages.command import OperatorCommand
from ..planner import MultiWorldProportionalRebalancer, PositionTable, Rebalancer
from ..state.allocations import (
    AllocationState,
    PendingPlan,
    Record,
    WorldState,
    encode,
    portfolio_key,
    world_key,
)
from ..state.policy_memory import PolicyMemory, policy_key
from ..state.snapshots import SnapshotTable
from . import notices
from .admission import Requested, admit, before_differs, checked
from .commands import Commands
from .effects import Basis, Effects, PlanRequest, Sources, Trigger, resume
from .equity import Equity
from .holding import Arrival, Holding, coalesce, release_request
from .options import EngineOptions, EventOptions
from .policy import PolicyCorrections
from .work import Outcome, Work


class RebalanceEngine:
    """Decides, per allocation change, between dead letter (``InputError``), hold and plan."""

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
        sources = Sources(state, snapshots, self.options, self.planner)
        self._holding = Holding(sources)
        self._effects = Effects(sources)
        self._policies = PolicyCorrections(sources, self._holding, self._effects)
        self._commands = Commands(sources, self._holding, self._effects, self._policies)

    def prepare(self, table: PositionTable) -> None:
        """Let the planner compute ahead what plans on ``table`` will share (when it can)."""
        prepare = getattr(self.planner, "prepare", None)
        if prepare is not None:
            prepare(table, self.options.planner)

    def equity(self, portfolio_id: str) -> Equity:
        """The equity policies weigh the portfolio's worlds against: measured from the
        snapshots, else the last allocation event's (``equity.portfolio_equity``)."""
        return self._policies.equity(portfolio_id)

    def busy(self, ws: WorldState, now_ms: int) -> bool:
        """Whether a world has work under way: a policy runner leaves it alone until then."""
        return self._policies.busy(ws, now_ms)

    def on_event(
        self, event: AllocationEvent | PolicyRebalance | OperatorCommand, now_ms: int
    ) -> Work:
        """Decide what to do with one allocation change. Raises ``InputError`` when the event
        is invalid against the current state (the caller dead-letters it)."""
        if isinstance(event, PolicyRebalance):
            return self._policies.on_event(event, now_ms)
        if isinstance(event, OperatorCommand):
            return self._commands.on_command(event, now_ms)
        portfolio_id = event.portfolio_id
        if self.state.was_applied(portfolio_id, event.event_id):
            return Work(Outcome.DUPLICATE)
        admitted = admit(self.state, event)
        arrival = Arrival(event, admitted.equity, now_ms)
        to_plan: list[Requested] = []
        held_states: dict[str, WorldState] = {}
        mismatches = 0
        for req in admitted.requested:
            ws = self.state.world(portfolio_id, req.world_id)
            mismatches += before_differs(ws, req)
            reason = self._holding.reason(ws, now_ms)
            if reason is None:
                to_plan.append(req)
                continue
            change = coalesce(ws.held, req, arrival, reason)
            held_states[req.world_id] = checked(ws.model_copy(update={"held": change}))
        portfolio = self.state.portfolio(portfolio_id)
        if admitted.equity is not None:
            portfolio = portfolio.model_copy(update={"total_equity": admitted.equity})
        portfolio = AllocationState.with_applied(portfolio, [event.event_id])
        changes = {w: s.held for w, s in held_states.items() if s.held is not None}
        held = self._effects.held(event, changes, now_ms) if changes else None
        if to_plan:
            equity = admitted.equity
            trigger = Trigger(
                portfolio_id=portfolio_id,
                event=event,
                event_ids=(event.event_id,),
                occurred_at=event.occurred_at,
                total_equity=equity if equity is not None else portfolio.total_equity or 0.0,
                now_ms=now_ms,
            )
            basis = Basis(portfolio, held_states)
            request = PlanRequest(trigger, to_plan, EventOptions.of(event), basis, paceable=True)
            work = self._effects.plan(request).with_held(held)
        else:
            assert held is not None  # an event moves at least one world
            state: list[Record] = [
                (world_key(portfolio_id, w), encode(s)) for w, s in held_states.items()
            ]
            state.append((portfolio_key(portfolio_id), encode(portfolio)))
            work = Work.holding(held, state)
        return replace(work, before_mismatches=mismatches)

    def released_work(self, now_ms: int, portfolios: Iterable[str] | None = None) -> list[Work]:
        """The work of the held changes that may go now (plan reached or timed out, snapshots
        fresh): each held policy correction planned alone, the rest of a portfolio's held
        changes in one plan. ``portfolios`` limits this to the ones this instance owns.

        Held changes that cannot be planned come back ``REFUSED`` and stay held (the
        snapshots may make them plannable later); a held policy correction that cannot be
        comes back ``DROPPED``."""
        out: list[Work] = self._effects.approvals.expired(now_ms, portfolios)
        for portfolio_id, ready in self._holding.ready(now_ms, portfolios).items():
            corrections = [ws for ws in ready if ws.held is not None and ws.held.policy is not None]
            out.extend(self._policies.release(ws, now_ms) for ws in corrections)
            external = [ws for ws in ready if ws.held is not None and ws.held.policy is None]
            if not external:
                continue
            request = release_request(self.state.portfolio(portfolio_id), external, now_ms)
            try:
                out.append(self._effects.plan(request))
            except InputError as exc:
                out.append(Work(Outcome.REFUSED, why=f"portfolio {portfolio_id!r}: {exc}"))
        return out

    def reached_work(self, now_ms: int, portfolios: Iterable[str] | None = None) -> list[Work]:
        """Per portfolio (of ``portfolios``, if given), the worlds whose plan in flight the
        positions have reached and that were not notified of it yet: their notifications, and
        their state remembering it. A world whose plan is written meanwhile waits."""
        owned = None if portfolios is None else set(portfolios)
        found: dict[str, list[WorldState]] = {}
        for (portfolio_id, world_id), ws in sorted(self.state.worlds.items()):
            flight = ws.in_flight
            if flight is None or ws.reached_notified == flight.plan_id:
                continue
            if (owned is not None and portfolio_id not in owned) or (
                portfolio_id in self.state.pending
            ):
                continue
            if self._holding.reached(flight, world_id):
                found.setdefault(portfolio_id, []).append(ws)
        out = []
        for portfolio_id, worlds in found.items():
            state: list[Record] = []
            notes = []
            for ws in worlds:
                assert ws.in_flight is not None
                notes.append(notices.reached(portfolio_id, ws.world_id, ws.in_flight, now_ms))
                done = ws.model_copy(update={"reached_notified": ws.in_flight.plan_id})
                state.append((world_key(portfolio_id, ws.world_id), encode(done)))
            out.append(
                Work(Outcome.REACHED, portfolio_id=portfolio_id, state=state, notifications=notes)
            )
        return out

    @staticmethod
    def remember(memories: Iterable[PolicyMemory]) -> list[Work]:
        """Per portfolio, the work that writes what its live policies looked at (the runner's
        ``Evaluation.memory``) to the changelog: state only, nothing published."""
        found: dict[str, list[Record]] = {}
        for memory in memories:
            record = (policy_key(memory.portfolio_id, memory.world_id), encode(memory))
            found.setdefault(memory.portfolio_id, []).append(record)
        return [
            Work(Outcome.REMEMBERED, portfolio_id=portfolio_id, state=state)
            for portfolio_id, state in found.items()
        ]

    @staticmethod
    def resume(pending: PendingPlan) -> Work:
        """Finish a plan that was being published when the service stopped: the same record,
        the same intents (rebuilt from the record, byte for byte), the same state."""
        return resume(pending)
