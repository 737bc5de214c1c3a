"""Operators' commands, decided like events: the new trading state and the command's result,
as state records for the edges to write, and for ``flatten`` and ``rebalance`` a plan (SPEC 7).

``pause`` and ``halt`` hold a portfolio's or a world's changes (``holding``); ``resume`` lets
them go, planned once against the positions of that moment by the release check.
``reduce-only`` holds no change: its worlds' plans publish only what shrinks exposure
(``effects``), and the allocation moves on; after a resume, a ``rebalance`` (or a policy)
brings the world to it. ``flatten``
plans every key of its scope to zero at once (whatever holds the worlds) and halts the scope
until a resume; ``rebalance`` plans a world back to its allocation now, as a policy
correction, and is refused while the world waits. A command
is remembered by id with the portfolio's applied events, so one read again is not applied
twice, and its result is kept in the portfolio's state for the API to report.
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import InputError
from ..messages import PolicyRebalance
from ..messages.allocation import WorldAllocationsChanged
from ..messages.command import OperatorCommand
from ..messages.policy import AllocationTarget
from ..state.allocations import (
    COMMANDS_KEPT,
    AllocationState,
    CommandResult,
    PortfolioState,
    Record,
    TradingMode,
    TradingState,
    WorldState,
    encode,
    portfolio_key,
    proposal_key,
    world_key,
)
from .admission import Requested, check_policy
from .approval import decided
from .effects import Basis, Effects, PlanRequest, Sources, Trigger, publication
from .holding import Holding
from .options import EventOptions
from .policy import Correction, PolicyCorrections
from .work import Json, Outcome, Work

MODE_OF: dict[str, TradingMode] = {
    "pause": "paused",
    "halt": "halted",
    "reduce-only": "reduce-only",
    "resume": "active",
}
"""The trading mode each state command sets."""

APPROVAL_OF: dict[str, bool] = {"require-approval": True, "waive-approval": False}
"""Whether plans need approval, as each approval-mode command sets it."""


class Commands:
    """Decides what an operator's command does to the state (and, for ``flatten`` and
    ``rebalance``, plans it)."""

    def __init__(
        self, sources: Sources, holding: Holding, effects: Effects, policies: PolicyCorrections
    ) -> None:
        self.state = sources.state
        self.holding = holding
        self.effects = effects
        self.policies = policies

    def on_command(self, command: OperatorCommand, now_ms: int) -> Work:
        state = self.state
        portfolio_id = command.portfolio_id
        if state.was_applied(portfolio_id, command.command_id):
            return Work(Outcome.DUPLICATE)
        portfolio = AllocationState.with_applied(
            state.portfolio(portfolio_id), [command.command_id]
        )
        world = None
        if command.world_id is not None:
            world = state.worlds.get((portfolio_id, command.world_id))
            if world is None:
                why = f"portfolio {portfolio_id} has no world {command.world_id!r}"
                return self._refused(command, portfolio, why, now_ms)
        try:
            if command.action == "flatten":
                return self._flatten(command, portfolio, world, now_ms)
            if command.action == "rebalance":
                return self._rebalance(command, portfolio, world, now_ms)
            if command.action == "approve":
                return self._approve(command, portfolio, now_ms)
            if command.action == "reject":
                return self._reject(command, portfolio, now_ms)
            if command.action in APPROVAL_OF:
                return self._approval_mode(command, portfolio, world, now_ms)
        except InputError as exc:
            return self._refused(command, portfolio, str(exc), now_ms)
        mode = MODE_OF[command.action]  # every other action is carried out above
        if world is None:
            detail = f"portfolio {portfolio_id}: {portfolio.trading.mode} -> {mode}"
        else:
            detail = f"world {world.world_id} of {portfolio_id}: {world.trading.mode} -> {mode}"
        update = {"trading": trading(command, mode, now_ms)}
        return self._set(command, portfolio, world, update, detail, now_ms)

    def _set(
        self,
        command: OperatorCommand,
        portfolio: PortfolioState,
        world: WorldState | None,
        update: Json,
        detail: str,
        now_ms: int,
    ) -> Work:
        """The work of a command that sets ``update`` on its world, or on its portfolio."""
        portfolio_id = command.portfolio_id
        records: list[Record] = []
        if world is None:
            portfolio = portfolio.model_copy(update=update)
        else:
            world = world.model_copy(update=update)
            records.append((world_key(portfolio_id, world.world_id), encode(world)))
        portfolio = remember(portfolio, result(command, "applied", detail, now_ms))
        records.append((portfolio_key(portfolio_id), encode(portfolio)))
        return Work(Outcome.COMMANDED, portfolio_id=portfolio_id, state=records, why=detail)

    def _refused(
        self, command: OperatorCommand, portfolio: PortfolioState, why: str, now_ms: int
    ) -> Work:
        portfolio = remember(portfolio, result(command, "refused", why, now_ms))
        return Work(
            Outcome.COMMANDED,
            portfolio_id=command.portfolio_id,
            state=[(portfolio_key(command.portfolio_id), encode(portfolio))],
            why=why,
        )

    def _flatten(
        self,
        command: OperatorCommand,
        portfolio: PortfolioState,
        world: WorldState | None,
        now_ms: int,
    ) -> Work:
        """Every key of the scope to zero now (a world move to 0: reduce-only closes), held
        changes dropped, whatever holds the worlds; then the scope halted until a resume."""
        portfolio_id = command.portfolio_id
        scope = [world] if world is not None else self.state.portfolio_worlds(portfolio_id)
        moving = [w for w in scope if w.alloc]
        if not moving:
            raise InputError(f"flatten: no world of {portfolio_id} in scope has an allocation")
        halted = trading(command, "halted", now_ms).model_copy(update={"latched_by_flatten": True})
        names = ", ".join(w.world_id for w in moving)
        detail = f"flatten: worlds {names} of {portfolio_id} to 0; halted until resume"
        worlds: dict[str, WorldState] = {}
        if world is None:
            portfolio = portfolio.model_copy(update={"trading": halted})
        else:
            worlds[world.world_id] = world.model_copy(update={"trading": halted})
        proposals = sorted({w.proposal for w in scope if w.proposal is not None})
        for ws in scope:  # their proposals are withdrawn, their changes dropped
            if ws.proposal is not None:
                ws = worlds.get(ws.world_id, ws)
                worlds[ws.world_id] = ws.model_copy(update={"proposal": None, "held": None})
        if proposals:
            detail += f"; proposals {', '.join(proposals)} withdrawn"
        portfolio = remember(portfolio, result(command, "applied", detail, now_ms))
        event = WorldAllocationsChanged(
            type="world_allocations_changed",
            event_id=command.command_id,
            portfolio_id=portfolio_id,
            occurred_at=now_ms,
            total_equity=portfolio.total_equity or 0.0,
            world_alloc_after={w.world_id: 0.0 for w in moving},
        )
        trigger = Trigger(
            portfolio_id=portfolio_id,
            event=event,
            event_ids=(command.command_id,),
            occurred_at=now_ms,
            total_equity=event.total_equity,
            now_ms=now_ms,
            requested_by=command.requested_by,
            command=command,
        )
        requested = [Requested(w.world_id, 0.0) for w in moving]
        basis = Basis(portfolio, worlds)
        request = PlanRequest(trigger, requested, EventOptions.of(event), basis, approvable=False)
        work = self.effects.plan(request)
        withdrawn = self._withdrawn(proposals, command, now_ms)
        return replace(
            work,
            outcome=Outcome.COMMANDED,
            why=detail,
            records=[*withdrawn.records, *work.records],
            state=[*withdrawn.state, *work.state],
        )

    def _withdrawn(self, plan_ids: list[str], command: OperatorCommand, now_ms: int) -> Work:
        """The records and state of proposals a flatten withdraws (its worlds are written
        by the flatten's plan)."""
        portfolio_id = command.portfolio_id
        records = []
        state: list[Record] = []
        for plan_id in plan_ids:
            proposed = self.state.proposal(portfolio_id, plan_id)
            if proposed is None:
                continue
            why = f"withdrawn by flatten {command.command_id} ({command.requested_by})"
            records.append(decided(proposed.record, "expired", command.requested_by, why, now_ms))
            state.append((proposal_key(portfolio_id, plan_id), None))
        return Work(Outcome.COMMANDED, records=records, state=state)

    def _rebalance(
        self,
        command: OperatorCommand,
        portfolio: PortfolioState,
        world: WorldState | None,
        now_ms: int,
    ) -> Work:
        """The world back to its allocation now, measured on the current snapshots (as a
        policy correction would), unless something holds it: then refused, with what."""
        if world is None:
            raise InputError("rebalance: name a world (POST .../worlds/{world}/rebalance)")
        waits = self.holding.reason(world, now_ms)
        if waits is not None:
            raise InputError(f"rebalance: world {world.world_id} waits ({waits}); not planned")
        event = PolicyRebalance(
            type="policy_rebalance",
            event_id=command.command_id,
            portfolio_id=command.portfolio_id,
            occurred_at=now_ms,
            world_id=world.world_id,
            policy="command",
            trigger="command",
            reason=f"rebalance by {command.requested_by}: {command.reason}",
            target=AllocationTarget(kind="allocation"),
        )
        check_policy(event, world, self.policies.equity(command.portfolio_id))
        detail = f"rebalance: world {world.world_id} of {command.portfolio_id} planned"
        portfolio = remember(portfolio, result(command, "applied", detail, now_ms))
        correction = Correction(
            event, world, portfolio, (command.command_id,), command.requested_by, command
        )
        return replace(
            self.policies.plan(correction, now_ms), outcome=Outcome.COMMANDED, why=detail
        )

    def _approve(self, command: OperatorCommand, portfolio: PortfolioState, now_ms: int) -> Work:
        """Publish a proposal as it was proposed, if nothing it was made from has moved;
        else expire it and let the release check plan its change again (and propose it)."""
        approvals = self.effects.approvals
        assert command.plan_id is not None  # the message requires it
        proposed = approvals.find(command.portfolio_id, command.plan_id, "approve")
        plan_id = command.plan_id
        asker = proposed.terms.requested_by
        if approvals.four_eyes(command.portfolio_id) and asker == command.requested_by:
            raise InputError(
                f"approve: four-eyes: {command.requested_by} asked for plan {plan_id} and "
                "cannot approve it; another approver must"
            )
        for ws in approvals.worlds(proposed):
            mode = self.state.trading_mode(ws)
            if mode in ("paused", "halted"):
                raise InputError(
                    f"approve: world {ws.world_id} is {mode}; resume it before approving "
                    f"plan {plan_id}"
                )
        moved = approvals.moved(proposed, portfolio, now_ms)
        if moved is not None:
            detail = f"approve: plan {plan_id} expired ({moved}); its change is planned again"
            portfolio = remember(portfolio, result(command, "refused", detail, now_ms))
            return approvals.close(
                proposed,
                portfolio,
                status="expired",
                by=command.requested_by,
                reason=moved,
                replan=True,
                now_ms=now_ms,
                outcome=Outcome.COMMANDED,
            )
        record, worlds = approvals.approved(
            proposed, portfolio, command.requested_by, command.reason, now_ms
        )
        detail = (
            f"approve: plan {plan_id} published as proposed ({len(record['intent_ids'])} intents)"
        )
        portfolio = remember(portfolio, result(command, "applied", detail, now_ms))
        work = publication(
            command.portfolio_id,
            record,
            worlds,
            portfolio,
            closes_proposal=True,
            outcome=Outcome.COMMANDED,
        )
        return replace(work, why=detail)

    def _reject(self, command: OperatorCommand, portfolio: PortfolioState, now_ms: int) -> Work:
        """Drop a proposal and its change, with the approver's reason."""
        assert command.plan_id is not None  # the message requires it
        approvals = self.effects.approvals
        proposed = approvals.find(command.portfolio_id, command.plan_id, "reject")
        detail = f"reject: plan {command.plan_id} rejected; its change is not carried out"
        portfolio = remember(portfolio, result(command, "applied", detail, now_ms))
        work = approvals.close(
            proposed,
            portfolio,
            status="rejected",
            by=command.requested_by,
            reason=command.reason,
            replan=False,
            now_ms=now_ms,
            outcome=Outcome.COMMANDED,
        )
        return replace(work, why=detail)

    def _approval_mode(
        self,
        command: OperatorCommand,
        portfolio: PortfolioState,
        world: WorldState | None,
        now_ms: int,
    ) -> Work:
        """Whether the portfolio's or the world's plans need approval from now on (a
        proposal already made stays one)."""
        required = APPROVAL_OF[command.action]
        wording = "need approval" if required else "are published without approval"
        records: list[Record] = []
        if world is None:
            portfolio = portfolio.model_copy(update={"approval": required})
            detail = f"plans of portfolio {command.portfolio_id} {wording}"
        else:
            world = world.model_copy(update={"approval": required})
            records.append((world_key(command.portfolio_id, world.world_id), encode(world)))
            detail = f"plans of world {world.world_id} of {command.portfolio_id} {wording}"
        portfolio = remember(portfolio, result(command, "applied", detail, now_ms))
        records.append((portfolio_key(command.portfolio_id), encode(portfolio)))
        return Work(Outcome.COMMANDED, portfolio_id=command.portfolio_id, state=records, why=detail)


def trading(command: OperatorCommand, mode: TradingMode, now_ms: int) -> TradingState:
    return TradingState(
        mode=mode,
        command_id=command.command_id,
        by=command.requested_by,
        reason=command.reason,
        since=now_ms,
    )


def result(command: OperatorCommand, outcome: str, detail: str, now_ms: int) -> CommandResult:
    return CommandResult(
        command_id=command.command_id,
        action=command.action,
        world_id=command.world_id,
        outcome="applied" if outcome == "applied" else "refused",
        detail=detail,
        requested_by=command.requested_by,
        reason=command.reason,
        requested_at=command.requested_at,
        decided_at=now_ms,
    )


def remember(portfolio: PortfolioState, decided: CommandResult) -> PortfolioState:
    kept = [*portfolio.commands, decided][-COMMANDS_KEPT:]
    return portfolio.model_copy(update={"commands": kept})
