"""Execution nodes' fill reports: what one node's fills of one plan cost, for the history.

Published on ``topics.nodes`` beside the heartbeats, keyed ``{node_id}|{session}|{plan_id}``
(names hold no ``|``), so compaction keeps the latest report of every node run and plan.
Totals are cumulative within one run (``session``) of one node: a reader keeps the latest
report per (node, session, plan) and sums over them, so a report read twice, or an older one
read after a newer one, changes nothing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from ._types import Amount, EpochMs, Message, Name, NonNegative, SchemaVersion


class PlanFills(Message):
    """One node run's fills of one plan so far (``kind`` tells it from a heartbeat)."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        # readers tell it from a heartbeat by its kind: the schema asks writers for it
        json_schema_extra=lambda schema: schema["required"].insert(0, "kind"),
    )

    schema_version: SchemaVersion = 1
    kind: Literal["plan_fills"] = Field(
        default="plan_fills", description="Always plan_fills (heartbeats have no kind)."
    )
    node_id: Name
    session: Name = Field(description="This run of the node: a restart starts new totals.")
    venue: Name
    plan_id: Name
    sent_at: EpochMs
    fills: int = Field(ge=0, description="Fills of the plan's orders (each partial fill counts).")
    filled_notional: NonNegative = Field(description="Sum of |fill quantity| x fill price.")
    fees: Amount = Field(description="Fees the venue charged on those fills (negative: rebates).")
    slippage: Amount = Field(
        description="Sum of fill quantity x (fill price - the intent's mark): what the fills "
        "paid beyond the mark the plan was computed at (negative: better than the mark)."
    )

    @property
    def key(self) -> str:
        """The record key: one per node run and plan, so compaction keeps every plan's last."""
        return f"{self.node_id}|{self.session}|{self.plan_id}"
