"""Notifications derived from work, deterministically (SPEC 7, issue 15 item 2).

Nothing here decides anything: a notification restates what a piece of work already
publishes (its plan and held records, the result of its operator's command) or what the
release loop found (a world's plan reached). Its id is a hash of what it is about, never of
when it was derived, so work carried out again after a crash (``resume``, an event re-read)
gives the same notifications byte for byte, and receivers dedupe on ``notification_id``.
"""

from __future__ import annotations

import hashlib

import orjson

from ..messages import Notification
from ..state.allocations import CommandResult, InFlight, PortfolioState
from .gating import SKIPPED
from .gating import reason as gate_reason
from .work import Json, Outcome, Work

RISK_ACTIONS = frozenset({"flatten"})
"""Commands whose plans are risk-driven (an emergency exit)."""


def notification_id(*parts: str) -> str:
    """A stable id: the SHA-256 (first 32 hex digits) of what the notification is about."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"n-{digest[:32]}"


def of_work(work: Work) -> list[Notification]:
    """The notifications of a piece of work, in the order its records are published: each
    plan or held record, then the operator's command that caused the work (if any)."""
    command = None
    if work.outcome is Outcome.COMMANDED:
        command = _command_of(work)
    elif work.outcome is Outcome.RESUMED:
        command = _resumed_command(work)
    out = [_of_record(record, command) for record in work.records]
    if command is not None:
        out.append(_of_command(work, command))
    out.extend(n for n in work.notifications if isinstance(n, Notification))
    return out


def reached(portfolio_id: str, world_id: str, flight: InFlight, now_ms: int) -> Notification:
    """A world's plan reached by its positions (every affected strategy reports it)."""
    return Notification(
        notification_id=notification_id("reached", portfolio_id, world_id, flight.plan_id),
        kind="reached",
        portfolio_id=portfolio_id,
        world_ids=[world_id],
        at=now_ms,
        plan_id=flight.plan_id,
        event_ids=flight.event_ids,
        text=f"[{portfolio_id}] plan {flight.plan_id} reached in world {world_id}",
    )


def _command_of(work: Work) -> CommandResult | None:
    """The command a COMMANDED work decided: the latest result in the portfolio it writes."""
    for key, value in reversed(work.state):
        if key.startswith(b"portfolio|") and value is not None:
            portfolio = PortfolioState.model_validate(orjson.loads(value))
            return portfolio.commands[-1] if portfolio.commands else None
    return None


PLANNING_ACTIONS = frozenset({"flatten", "rebalance", "approve"})
"""Commands whose work carries a plan through the write-ahead (and may be resumed)."""


def _resumed_command(work: Work) -> CommandResult | None:
    """The command whose plan a resumed write-ahead finishes, if a command made it: the
    portfolio's latest result, applied when the plan was made (or, for an approval, when it
    was approved). Resumed work gives the command's notification again, with its id."""
    command = _command_of(work)
    if command is None or command.outcome != "applied" or not work.records:
        return None
    if command.action not in PLANNING_ACTIONS:
        return None
    record = work.records[-1]
    approval = record.get("approval") or {}
    when = approval.get("decided_at") if command.action == "approve" else record.get("created_at")
    return command if when == command.decided_at else None


def _of_record(record: Json, command: CommandResult | None) -> Notification:
    status = str(record.get("status", "planned"))
    portfolio_id = str(record["portfolio_id"])
    plan_id = str(record["plan_id"])
    policy = record.get("policy") or None
    approval = record.get("approval") or {}
    worlds = sorted(record.get("per_world") or {})
    if status == "held":
        worlds = sorted(_held_worlds(record) or worlds)
    if policy is not None:
        trigger, risk = "policy", True
    elif command is not None and status in ("planned", "proposed"):
        trigger, risk = "command", command.action in RISK_ACTIONS
    else:
        trigger, risk = "allocation", False
    at = approval.get("decided_at") or record.get("created_at") or record["occurred_at"]
    reason = record.get("held_reason") or approval.get("reason")
    if status == SKIPPED and record.get("cost_gate"):
        reason = gate_reason(record["cost_gate"])
    requested_by = approval.get("decided_by") or approval.get("requested_by")
    if requested_by is None and trigger == "command" and command is not None:
        requested_by = command.requested_by
    intents = len(record.get("intent_ids") or []) if status in ("planned", "approved") else 0
    note = Notification(
        notification_id=notification_id("plan", portfolio_id, plan_id, status),
        kind=status,  # type: ignore[arg-type]  # a PlanStatus is a NotificationKind
        portfolio_id=portfolio_id,
        world_ids=worlds,
        at=int(at),
        plan_id=plan_id,
        event_ids=list(record.get("coalesced_event_ids") or [record["event_id"]]),
        trigger=trigger,  # type: ignore[arg-type]
        risk=risk,
        policy=None if policy is None else policy.get("policy"),
        action=command.action if trigger == "command" and command is not None else None,
        requested_by=requested_by,
        reason=reason,
        intents=intents,
        text="",
    )
    return note.model_copy(update={"text": text_of(note)})


def _held_worlds(record: Json) -> list[str]:
    """The worlds a held record names in its reason ('paused: worlds a, b')."""
    reason = str(record.get("held_reason") or "")
    _, _, names = reason.partition("worlds ")
    return [n.strip() for n in names.split(",") if n.strip()]


def _of_command(work: Work, command: CommandResult) -> Notification:
    portfolio_id = work.portfolio_id or ""
    note = Notification(
        notification_id=notification_id("command", portfolio_id, command.command_id),
        kind="command",
        portfolio_id=portfolio_id,
        world_ids=[] if command.world_id is None else [command.world_id],
        at=command.decided_at,
        event_ids=[command.command_id],
        risk=command.action in RISK_ACTIONS and command.outcome == "applied",
        action=command.action,
        outcome=command.outcome,
        requested_by=command.requested_by,
        reason=command.reason,
        text="",
    )
    return note.model_copy(update={"text": text_of(note, command.detail)})


def text_of(note: Notification, detail: str | None = None) -> str:
    """A one-liner for people: ``[portfolio] what happened (who, why)``."""
    scope = f"world {', '.join(note.world_ids)}" if note.world_ids else "all worlds"
    head = f"[{note.portfolio_id}]"
    if note.kind == "command":
        verb = "applied" if note.outcome == "applied" else "refused"
        line = f"{head} {note.action} {verb} on {scope} by {note.requested_by}"
        if detail:
            line += f": {detail}"
        if note.reason:
            line += f" (reason: {note.reason})"
        return line
    cause = {"allocation": "allocation change", "policy": f"policy {note.policy}"}.get(
        note.trigger or "", f"command {note.action}"
    )
    risk = " [risk]" if note.risk else ""
    line = f"{head}{risk} plan {note.plan_id} {note.kind} for {scope} ({cause})"
    if note.kind in ("planned", "approved"):
        line += f": {note.intents} intent(s)"
    if note.requested_by and note.kind in ("approved", "rejected"):
        line += f" by {note.requested_by}"
    if note.reason:
        line += f"; {note.reason}"
    return line
