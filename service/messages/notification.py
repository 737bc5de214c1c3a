"""Notifications (SPEC 7): what happened to a portfolio's rebalancing, one message per event,
on the notifications topic (key ``portfolio_id``) and to the configured webhooks.

Every notification is derived from what the service already publishes (a plan record, a
command's result, a world's plan reached) and its ``notification_id`` is a hash of what it is
about, so a restart that republishes a plan republishes the same ids: receivers dedupe on it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._types import EpochMs, Message, Name, SchemaVersion

NotificationKind = Literal[
    "planned",
    "held",
    "proposed",
    "approved",
    "rejected",
    "expired",
    "skipped_by_cost_gate",
    "reached",
    "command",
]
"""The plan record's status for plans (``planned`` ... ``expired``), ``reached`` when every
affected strategy reports a world's plan converged, ``command`` for an operator's command
(pause, resume, reduce-only, halt, flatten, ...) applied or refused."""

Trigger = Literal["allocation", "policy", "command"]
"""What caused the plan: an external allocation change, one of the service's policies, or an
operator's command (flatten, rebalance)."""


class Notification(Message):
    """One rebalancing event, for people: a one-line ``text`` and the ids to look it up."""

    schema_version: SchemaVersion = 1
    notification_id: Name = Field(
        description="Deterministic (a hash of what the notification is about): the same "
        "event always has the same id, so receivers can drop duplicates."
    )
    kind: NotificationKind
    portfolio_id: Name
    world_ids: list[Name] = Field(description="The worlds concerned, sorted (may be empty).")
    at: EpochMs = Field(description="When it happened (as the source record says).")
    plan_id: Name | None = None
    event_ids: list[Name] = Field(
        default_factory=list, description="The allocation changes or commands behind it."
    )
    trigger: Trigger | None = Field(
        default=None, description="What caused the plan (plan kinds only)."
    )
    risk: bool = Field(
        default=False,
        description="Risk-driven: a policy correction (drift, drawdown, volatility) or a flatten.",
    )
    policy: Name | None = Field(default=None, description="The policy that triggered it.")
    action: Name | None = Field(
        default=None, description="The operator's command (kind command): pause, resume, ..."
    )
    outcome: Literal["applied", "refused"] | None = Field(
        default=None, description="What became of the command (kind command)."
    )
    requested_by: Name | None = None
    reason: str | None = Field(
        default=None, description="Why: held reason, command reason, approver's reason."
    )
    intents: int = Field(default=0, ge=0, description="Intents the plan published.")
    text: str = Field(description="A readable one-liner (what the Slack format sends).")
