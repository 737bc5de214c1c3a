"""Execution nodes' heartbeats: who is running, for which venue, working on which plans."""

from __future__ import annotations

from pydantic import Field

from ._types import EpochMs, Message, Name, SchemaVersion


class NodeCounts(Message):
    """What a node has done since it started (its ``/metrics`` has the detail)."""

    intents: int = Field(ge=0, description="Intents read (any outcome).")
    orders: int = Field(ge=0, description="Orders sent to the venue.")
    fills: int = Field(ge=0, description="Fills received (partial fills each count).")
    rejections: int = Field(ge=0, description="Orders the venue refused.")
    plans_converged: int = Field(ge=0, description="Plans this node reported converged.")


class NodeHeartbeat(Message):
    """Published by each execution node every ``execution.heartbeat_interval_ms`` on
    ``topics.nodes`` (compacted), keyed by ``node_id``; a last one with ``stopped`` when it
    stops cleanly."""

    schema_version: SchemaVersion = 1
    node_id: Name
    venue: Name
    started_at: EpochMs
    sent_at: EpochMs
    interval_ms: int = Field(
        gt=0,
        description="The node's heartbeat period: it is alive while its last heartbeat "
        "is less than three of these old.",
    )
    ready: bool = Field(description="Its consumer has joined and its state is restored.")
    stopped: bool = Field(default=False, description="The node stopped cleanly.")
    plans: list[Name] = Field(
        description="Plans with keys of this venue not yet reached, oldest first."
    )
    counts: NodeCounts
    endpoint: str | None = Field(
        default=None, description="Where the node serves /metrics, /healthz, /readyz (host:port)."
    )
