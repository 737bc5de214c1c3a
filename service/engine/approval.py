"""Approval mode (SPEC 7): a plan proposed instead of published, until an approver decides.

A proposed plan is published as a record with status ``proposed`` and no intents; its worlds
hold their change (``awaiting_approval``), so later changes join it. Approval publishes the
record's intents exactly as proposed (the same ids and bytes) when nothing it was made from
has moved: the worlds' allocations, the changes it carries out, the portfolio's equity and
the positions. Otherwise the proposal expires and the change is planned again, and proposed
again. A rejected proposal, or one not approved within ``approval.ttl_ms``, is dropped: its
change is not carried out, the worlds keep their allocations and positions.

Marks are not part of what must not move: in a live market they always do, and the intents
carry quantities (their marks and notionals are the planning time's estimates).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import orjson

from ..errors import InputError
from ..planner import Plan
from ..planner.ids import hex_id
from ..state.allocations import (
    ApprovalTerms,
    HeldChange,
    HoldReason,
    PortfolioState,
    ProposedPlan,
    Record,
    WorldState,
    encode,
    pending_key,
    portfolio_key,
    proposal_key,
    world_key,
)
from .admission import checked
from .options import ApprovalRules
from .work import Json, Outcome, Work

if TYPE_CHECKING:
    from .effects import Sources


class Approvals:
    """Decides whether a plan needs approval, proposes it, and settles proposals."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    @property
    def rules(self) -> ApprovalRules:
        return self.sources.options.approval

    def required(self, portfolio: PortfolioState, world: WorldState) -> bool:
        return approval_required(self.rules, portfolio, world)

    def four_eyes(self, portfolio_id: str) -> bool:
        return portfolio_id in self.rules.four_eyes

    def digest(self, world: WorldState, portfolio: PortfolioState) -> str:
        """What a world's plan was made from, hashed: its trading mode (reduce-only shapes the
        plan), allocations, the changes it holds, the portfolio's equity and the world's
        positions (quantities, not marks)."""
        positions = sorted(
            (snap.strategy_id, p.venue or "", p.symbol, p.qty)
            for snap in self.sources.snapshots.snapshots([world.world_id])
            for p in snap.positions()
        )
        basis = {
            "mode": self.sources.state.trading_mode(world),
            "alloc": world.alloc,
            "strategy_alloc": world.strategy_alloc,
            "events": [] if world.held is None else world.held.event_ids,
            "equity": portfolio.total_equity,
            "positions": positions,
        }
        return hex_id(orjson.dumps(basis, option=orjson.OPT_SORT_KEYS))

    def propose(
        self,
        plan: Plan,
        record: Json,
        after: Mapping[str, WorldState],
        portfolio: PortfolioState,
        changes: Mapping[str, HeldChange],
        now_ms: int,
    ) -> Work:
        """The work of proposing ``plan``: its record as ``proposed``, its worlds holding
        their change for the approver, and the terms of the approval (``after``: every world
        the plan writes, as publishing it would leave them)."""
        portfolio_id = portfolio.portfolio_id
        planned = [scale.world_id for scale in plan.worlds]
        requested_by = next((c.requested_by for c in changes.values() if c.requested_by), None)
        waiting = dict(after)
        for world_id in planned:
            held = changes[world_id].model_copy(
                update={"reason": HoldReason.AWAITING_APPROVAL, "since": now_ms}
            )
            ws = self.sources.state.world(portfolio_id, world_id)
            waiting[world_id] = checked(
                ws.model_copy(update={"held": held, "proposal": plan.plan_id})
            )
        terms = ApprovalTerms(
            requested_by=requested_by,
            proposed_at=now_ms,
            deadline=now_ms + self.rules.ttl_ms,
            basis={w: self.digest(waiting[w], portfolio) for w in planned},
            worlds=[after[w] for w in planned],
        )
        record["status"] = "proposed"
        record["approval"] = {
            "requested_by": requested_by,
            "deadline": terms.deadline,
            "decided_by": None,
            "decided_at": None,
            "reason": None,
        }
        state: list[Record] = [(world_key(portfolio_id, w), encode(s)) for w, s in waiting.items()]
        state.append((portfolio_key(portfolio_id), encode(portfolio)))
        state.append(proposal_entry(portfolio_id, record, terms))
        pending = orjson.dumps(
            {
                "portfolio_id": portfolio_id,
                "record": record,
                "worlds": [w.model_dump(mode="json") for w in waiting.values()],
                "portfolio": portfolio.model_dump(mode="json"),
                "proposal": terms.model_dump(mode="json"),
            }
        )
        return Work(
            Outcome.PROPOSED,
            portfolio_id=portfolio_id,
            state=[*state, (pending_key(portfolio_id), None)],
            records=[record],
            plan=plan,
            pending=(pending_key(portfolio_id), pending),
            planned_worlds=planned,
        )

    def find(self, portfolio_id: str, plan_id: str, action: str) -> ProposedPlan:
        """The proposal ``plan_id`` of the portfolio (``InputError`` if none awaits)."""
        proposed = self.sources.state.proposal(portfolio_id, plan_id)
        if proposed is None:
            raise InputError(
                f"{action}: no plan {plan_id!r} of portfolio {portfolio_id!r} awaits approval "
                "(never proposed, or approved, rejected or expired already)"
            )
        return proposed

    def worlds(self, proposed: ProposedPlan) -> list[WorldState]:
        state = self.sources.state
        return [state.world(proposed.portfolio_id, w.world_id) for w in proposed.terms.worlds]

    def moved(self, proposed: ProposedPlan, portfolio: PortfolioState, now_ms: int) -> str | None:
        """Why the proposal can no longer be published as it is, if it cannot: its intents
        expired, or something it was made from moved."""
        expires_at = proposed.record["expires_at"]
        if now_ms >= expires_at:
            return f"its intents expired at {expires_at}"
        for ws in self.worlds(proposed):
            if self.digest(ws, portfolio) == proposed.terms.basis.get(ws.world_id):
                continue
            if ws.held is None or ws.held.event_ids != _held_events(proposed):
                return f"world {ws.world_id}'s allocations changed since it was proposed"
            return f"world {ws.world_id}'s positions, trading mode or the portfolio's equity moved"
        return None

    def approved(
        self, proposed: ProposedPlan, portfolio: PortfolioState, by: str, reason: str, now_ms: int
    ) -> tuple[Json, list[WorldState]]:
        """The record to publish (as proposed, ``approved``) and the worlds as publishing it
        leaves them: the proposal's allocations, plan in flight (from now) and next paced
        step on the worlds as they are."""
        record = decided(proposed.record, "approved", by, reason, now_ms)
        out = []
        for after, ws in zip(proposed.terms.worlds, self.worlds(proposed), strict=True):
            flight = after.in_flight
            update: Json = {
                "alloc": after.alloc,
                "strategy_alloc": after.strategy_alloc,
                "in_flight": None
                if flight is None
                else flight.model_copy(update={"planned_at": now_ms}),
                "held": after.held,  # the next step of a paced move, if the plan is a step
                "proposal": None,
            }
            out.append(checked(ws.model_copy(update=update)))
        return record, out

    def close(
        self,
        proposed: ProposedPlan,
        portfolio: PortfolioState,
        *,
        status: str,
        by: str,
        reason: str,
        replan: bool,
        now_ms: int,
        outcome: Outcome,
    ) -> Work:
        """The work of a proposal that will not be published: its record with ``status``
        and why; its worlds free again, their change dropped, or (``replan``) kept held to
        be planned again by the next release check."""
        portfolio_id = proposed.portfolio_id
        drop: Json = {"proposal": None} if replan else {"proposal": None, "held": None}
        state: list[Record] = [
            (world_key(portfolio_id, ws.world_id), encode(ws.model_copy(update=drop)))
            for ws in self.worlds(proposed)
            if ws.proposal == proposed.record["plan_id"]
        ]
        state.append((portfolio_key(portfolio_id), encode(portfolio)))
        state.append((proposal_key(portfolio_id, proposed.record["plan_id"]), None))
        return Work(
            outcome,
            portfolio_id=portfolio_id,
            state=state,
            records=[decided(proposed.record, status, by, reason, now_ms)],
            why=reason,
        )

    def expired(self, now_ms: int, portfolios: Iterable[str] | None) -> list[Work]:
        """The work of each proposal (of ``portfolios``) past its deadline: expired, its
        change dropped."""
        state = self.sources.state
        owned = None if portfolios is None else set(portfolios)
        out = []
        for portfolio_id, plan_id in sorted(state.proposals):
            if owned is not None and portfolio_id not in owned:
                continue
            proposed = state.proposal(portfolio_id, plan_id)
            if proposed is None or now_ms < proposed.terms.deadline:
                continue
            why = f"not approved within approval.ttl_ms ({self.rules.ttl_ms} ms)"
            out.append(
                self.close(
                    proposed,
                    state.portfolio(portfolio_id),
                    status="expired",
                    by="service",
                    reason=why,
                    replan=False,
                    now_ms=now_ms,
                    outcome=Outcome.EXPIRED,
                )
            )
        return out


def approval_required(rules: ApprovalRules, portfolio: PortfolioState, world: WorldState) -> bool:
    """Whether the world's plans need approval: a command's setting for the world, else for
    its portfolio, else the configuration."""
    if world.approval is not None:
        return world.approval
    if portfolio.approval is not None:
        return portfolio.approval
    return rules.configured(world.portfolio_id, world.world_id)


def _held_events(proposed: ProposedPlan) -> list[str]:
    """The events the proposal carries out (what its worlds' held changes had)."""
    return list(proposed.record.get("coalesced_event_ids") or [])


def decided(record: Json, status: str, by: str, reason: str, now_ms: int) -> Json:
    """A proposal's record with the decision on it (the plan, its ids and intents as they
    were)."""
    approval = dict(record.get("approval") or {})
    approval.update(decided_by=by, decided_at=now_ms, reason=reason)
    return {**record, "status": status, "approval": approval}


def proposal_entry(portfolio_id: str, record: Json, terms: ApprovalTerms) -> Record:
    """The changelog record of a proposal (serialised directly: the plan record is large
    and already plain data)."""
    value = orjson.dumps(
        {"portfolio_id": portfolio_id, "record": record, "terms": terms.model_dump(mode="json")}
    )
    return (proposal_key(portfolio_id, record["plan_id"]), value)
