"""Operators' commands (SPEC 7): published on the allocation topic keyed by their portfolio,
so the partition's owner applies them in order with the allocation changes, and a crash after
the API has answered loses none (the command is on the topic before the answer).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import StringConstraints, model_validator

from ._types import EpochMs, Message, Name, SchemaVersion

ScopeAction = Literal[
    "pause",
    "resume",
    "reduce-only",
    "halt",
    "flatten",
    "rebalance",
    "require-approval",
    "waive-approval",
]
"""What a command asks of a portfolio or a world."""

PlanAction = Literal["approve", "reject"]
"""What a command decides about a proposed plan."""

Action = Literal[ScopeAction, PlanAction]

PLAN_ACTIONS = frozenset({"approve", "reject"})
"""Actions on a proposed plan (``plan_id``) rather than on a portfolio or world."""

Reason = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class OperatorCommand(Message):
    """A command for a portfolio (``world_id`` null) or one of its worlds, with who asked,
    when and why. ``command_id`` is the API's, unique: a command read twice is applied once."""

    type: Literal["operator_command"]
    schema_version: SchemaVersion = 1
    command_id: Name
    portfolio_id: Name
    world_id: Name | None = None
    action: Action
    reason: Reason
    requested_by: Name
    requested_at: EpochMs
    plan_id: Name | None = None

    @model_validator(mode="after")
    def _plan_for_plan_actions(self) -> OperatorCommand:
        if self.action in PLAN_ACTIONS:
            if self.plan_id is None:
                raise ValueError(f"plan_id: {self.action} names the proposed plan")
            if self.world_id is not None:
                raise ValueError(f"world_id: {self.action} applies to a plan, not a world")
        elif self.plan_id is not None:
            raise ValueError(f"plan_id: only approve and reject name a plan, not {self.action}")
        return self


__all__ = ["PLAN_ACTIONS", "Action", "OperatorCommand", "PlanAction", "ScopeAction"]
