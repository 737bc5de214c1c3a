"""Delta intents: "make (world, venue, symbol) hold target_qty", one per leg.

Topic key ``"{venue}|{symbol}"`` keeps one instrument's intents in order. Ids are deterministic
hashes, so a re-planned event republishes byte-identical intents.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._types import EpochMs, Message, Name, NonNegative, Price, Quantity, SchemaVersion

Leg = Literal["adjust", "close", "open"]


class StrategyDelta(Message):
    """One strategy's own, unnetted share of a key's delta (for attributing fills)."""

    world_id: Name | None = Field(
        default=None, description="Set only in shared-account mode, where keys span worlds."
    )
    strategy_id: Name
    delta_qty: Quantity


class DeltaIntent(Message):
    """One instruction for execution nodes, computed against one snapshot state."""

    schema_version: SchemaVersion = 1
    intent_id: Name
    plan_id: Name
    event_id: Name
    portfolio_id: Name
    world_id: Name | None = Field(description="Null in shared-account mode.")
    venue: Name | None
    symbol: Name
    current_qty: Quantity
    target_qty: Quantity
    delta_qty: Quantity
    mark: Price
    notional: NonNegative
    reduce_only: bool
    leg: Leg
    depends_on: Name | None = Field(
        default=None, description="The intent_id that must be reached before this one starts."
    )
    strategy_breakdown: list[StrategyDelta] = Field(default_factory=list)
    slice_index: int | None = Field(
        default=None,
        ge=0,
        description="Set on a slice of a leg ([slicing] max_slice_notional): its place, "
        "from 0. Slice k + 1 depends on slice k (depends_on) and is traded after it.",
    )
    slice_count: int | None = Field(
        default=None, ge=2, description="How many slices the leg was cut into."
    )
    created_at: EpochMs
    expires_at: EpochMs

    @property
    def key(self) -> str:
        """The topic key: one instrument's intents stay in one partition, in order."""
        return f"{self.venue or ''}|{self.symbol}"
