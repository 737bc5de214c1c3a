"""Operators' commands (SPEC 7): published on the allocation topic keyed by their portfolio,
so the partition's owner applies them in order with the allocation changes, and a crash after
the API has answered loses none (the command is on the topic before the answer).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import StringConstraints

from ._types import EpochMs, Message, Name, SchemaVersion

Action = Literal["pause", "resume", "reduce-only", "halt", "flatten", "rebalance"]
"""What a command asks of a portfolio or a world."""

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


__all__ = ["Action", "OperatorCommand"]
