"""Policy corrections: a policy runner saw a world drift from its target and asks the service
to bring it back.

A correction names its target, not quantities: the engine measures the world on the current
snapshots when it plans it, so a correction held behind a plan in flight is measured when it
is released, not when it was asked for. One measured before its world's latest plan is
dropped (what it saw has moved); one that cannot be measured on release is dropped too.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from ..messages import AllocationTarget, PolicyRebalance
from ..messages.command import OperatorCommand
from ..planner import (
    PlanningError,
    Rebalancer,
    TargetWeightRebalancer,
    WorldChange,
    WorldTargets,
)
from ..policies.cost_aware import CostAwareRebalancer
from ..policies.measure import holdings, label
from ..state.allocations import (
    POLICY_TRIGGERS_KEPT,
    AllocationState,
    HoldReason,
    PortfolioState,
    WorldState,
    encode,
    portfolio_key,
    world_key,
)
from .admission import check_policy
from .effects import Basis, Effects, Sources, Trigger, reduce_only_worlds, run_planner
from .equity import Equity, portfolio_equity
from .gating import decide
from .holding import Holding, hold_policy
from .work import Outcome, Work


@dataclass(frozen=True)
class Correction:
    """A policy event to plan for a world, with the state it is planned over and the events
    it carries out (the event itself, or the held events it was released with)."""

    event: PolicyRebalance
    world: WorldState
    portfolio: PortfolioState
    event_ids: tuple[str, ...]
    requested_by: str | None = None
    """Who asked: an operator's token (a rebalance command), else the policy itself."""
    command: OperatorCommand | None = None
    """The operator's command that asked for it (rebalance), if one did."""

    @property
    def asker(self) -> str:
        return self.requested_by or f"policy:{self.event.policy}"


class PolicyCorrections:
    """Admits, holds and plans policy events."""

    def __init__(self, sources: Sources, holding: Holding, effects: Effects) -> None:
        self.sources = sources
        self.holding = holding
        self.effects = effects

    def equity(self, portfolio_id: str) -> Equity:
        """What the portfolio's worlds are weighed against: its equity measured from the
        snapshots now, else the last allocation event's (``equity.portfolio_equity``)."""
        return portfolio_equity(self.sources.state, self.sources.snapshots, portfolio_id)

    def busy(self, ws: WorldState, now_ms: int) -> bool:
        """Whether a world has work under way (a held change, a plan neither reached nor timed
        out, a plan being written): a policy leaves it alone until then."""
        return (
            ws.held is not None
            or self.holding.waiting(ws, now_ms)
            or ws.portfolio_id in self.sources.state.pending
        )

    def on_event(self, event: PolicyRebalance, now_ms: int) -> Work:
        """A policy's correction: dropped if measured before the world's latest plan, else
        held or planned like any change, and remembered for the policy's limits."""
        state = self.sources.state
        portfolio_id, world_id = event.portfolio_id, event.world_id
        if state.was_applied(portfolio_id, event.event_id):
            return Work(Outcome.DUPLICATE)
        portfolio = AllocationState.with_applied(state.portfolio(portfolio_id), [event.event_id])
        ws = state.world(portfolio_id, world_id)
        flight = ws.in_flight
        if flight is not None and flight.planned_at >= event.occurred_at:
            # the world was planned after the runner measured it: what it saw has moved
            return Work(
                Outcome.SUPERSEDED,
                portfolio_id=portfolio_id,
                state=[(portfolio_key(portfolio_id), encode(portfolio))],
            )
        check_policy(event, ws, self.equity(portfolio_id))
        triggers = [*ws.policy_triggers, event.occurred_at][-POLICY_TRIGGERS_KEPT:]
        ws = ws.model_copy(update={"policy_triggers": triggers})
        reason = self.holding.reason(ws, now_ms)
        if reason is None:
            return self.plan(Correction(event, ws, portfolio, (event.event_id,)), now_ms)
        held = hold_policy(ws.held, event, reason, now_ms)
        ws = ws.model_copy(update={"held": held})
        return Work.holding(
            self.effects.held(event, {world_id: held}, now_ms),
            state=[
                (world_key(portfolio_id, world_id), encode(ws)),
                (portfolio_key(portfolio_id), encode(portfolio)),
            ],
        )

    def release(self, ws: WorldState, now_ms: int) -> Work:
        """Plan the world's held policy correction now, measured now; drop it if it cannot be
        (the world is freed: a later drift asks again)."""
        held = ws.held
        if held is None or held.policy is None:
            raise ValueError(f"world {ws.world_id!r} holds no policy correction")
        portfolio = self.sources.state.portfolio(ws.portfolio_id)
        try:
            check_policy(held.policy, ws, self.equity(ws.portfolio_id))
            correction = Correction(
                held.policy, ws, portfolio, tuple(held.event_ids), held.requested_by
            )
            return self.plan(correction, now_ms)
        except InputError as exc:
            freed = ws.model_copy(update={"held": None})
            return Work(
                Outcome.DROPPED,
                portfolio_id=ws.portfolio_id,
                state=[(world_key(ws.portfolio_id, ws.world_id), encode(freed))],
                why=str(exc),
            )

    def plan(self, correction: Correction, now_ms: int) -> Work:
        """Measure the world on the current snapshots and plan it back to the target.

        ``allocation``: the proportional planner from the measured weight to the allocation,
        so every position scales by allocation / weight. ``weights``: the target-weight
        planner, each asset to ``weight x base / mark``. Weights and bases are shares of the
        portfolio's measured equity (``equity.portfolio_equity``), which the plan divides.
        """
        event, ws, portfolio = correction.event, correction.world, correction.portfolio
        world_id = ws.world_id
        chosen, options = self.sources.chosen(ws.portfolio_id, [world_id])
        shared = options.execution_mode == "shared_account"
        positions = self.sources.snapshots.positions(None if shared else [world_id])
        held = holdings(positions, world_id)
        if held.missing_marks:
            missing = ", ".join(label(k) for k in held.missing_marks)
            raise InputError(f"world {world_id!r}: no mark for {missing}; cannot measure it")
        equity = self.equity(ws.portfolio_id).value  # check_policy: positive where needed
        target = event.target
        planner: Rebalancer
        if isinstance(target, AllocationTarget):
            assert ws.alloc is not None  # check_policy
            weight = held.value(target.measure) / equity
            if not weight > 0:
                raise InputError(
                    f"world {world_id!r}: its {target.measure} value is {weight * equity:.12g}; "
                    "there is nothing to scale to its allocation"
                )
            change = WorldChange(world_id, alloc_before=weight, alloc_after=ws.alloc)
            planner = chosen
            gate_equity = equity
        else:
            base = (ws.alloc or 0.0) * equity if target.base == "allocation" else held.value("net")
            if not base > 0:
                raise InputError(
                    f"world {world_id!r}: its {target.base} base is {base:.12g}; "
                    "target weights need a positive base"
                )
            gate_equity = base
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
            if isinstance(chosen, CostAwareRebalancer):  # the world's keys weighed on cost
                planner = chosen.over(planner)
        trigger = Trigger(
            portfolio_id=ws.portfolio_id,
            event=event,
            event_ids=correction.event_ids,
            occurred_at=event.occurred_at,
            total_equity=equity,
            now_ms=now_ms,
            requested_by=correction.asker,
            command=correction.command,
        )
        basis = Basis(portfolio, {world_id: ws})
        reduce_only = reduce_only_worlds(self.sources.state, basis, [world_id])
        plan = run_planner(planner, trigger.context([change], positions, options, reduce_only))
        figures = None
        gate = self.sources.options.cost_gates.get(event.policy)
        if gate is not None and event.trigger != "command":  # an operator's ask is not gated
            figures = decide(gate, plan.wire, world_id, gate_equity).as_record()
            if not figures["go"]:
                return self.effects.skip(plan, trigger, basis, figures)
        waiting = hold_policy(None, event, HoldReason.AWAITING_APPROVAL, now_ms)
        waiting = waiting.model_copy(
            update={"event_ids": list(correction.event_ids), "requested_by": correction.asker}
        )
        return self.effects.commit(plan, trigger, basis, {world_id: waiting}, cost_gate=figures)
