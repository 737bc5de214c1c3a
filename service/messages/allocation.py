"""Allocation changes: the events that move world and strategy weights.

Strategy weights are fractions of *total equity*; a strategy's weights never exceed its world's.
There is no manual strategy-weight change: only the weighting module's event or a world's cascade.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter, model_validator

from ._types import (
    SUM_TOLERANCE,
    EpochMs,
    LotSize,
    Message,
    Name,
    NonNegative,
    Ratio,
    SchemaVersion,
    check_ratio_sum,
)

WorldRatios = dict[Name, Ratio]
StrategyRatios = dict[Name, dict[Name, Ratio]]


class WorldAllocationsChanged(Message):
    """A world-level move, possibly of several worlds at once (planned together).

    Worlds not named are untouched: an explicit 0 liquidates a world, absence never does.
    """

    type: Literal["world_allocations_changed"]
    schema_version: SchemaVersion = 1
    event_id: Name
    portfolio_id: Name = "default"
    occurred_at: EpochMs
    total_equity: NonNegative
    world_alloc_after: WorldRatios = Field(min_length=1)
    world_alloc_before: WorldRatios | None = None
    strategy_alloc_after_total: StrategyRatios | None = None
    strategy_alloc_before_total: StrategyRatios | None = None
    min_trade_notional: NonNegative | None = None
    lot_size_by_symbol: dict[Name, LotSize] | None = None

    @model_validator(mode="after")
    def _check_sums(self) -> WorldAllocationsChanged:
        check_ratio_sum(self.world_alloc_after, 1.0, "world_alloc_after: world allocations")
        if self.world_alloc_before is not None:
            check_ratio_sum(self.world_alloc_before, 1.0, "world_alloc_before: world allocations")
        for world, weights in (self.strategy_alloc_after_total or {}).items():
            if world not in self.world_alloc_after:
                raise ValueError(
                    f"strategy_alloc_after_total.{world}: world {world!r} is not in "
                    "world_alloc_after (strategy weights move only with their world's event "
                    "or a strategy_weights_updated event)"
                )
            check_ratio_sum(
                weights,
                self.world_alloc_after[world],
                f"strategy_alloc_after_total.{world}: strategy weights of world {world!r}",
            )
        for world, weights in (self.strategy_alloc_before_total or {}).items():
            before = (self.world_alloc_before or {}).get(world)
            if before is not None:
                check_ratio_sum(
                    weights,
                    before,
                    f"strategy_alloc_before_total.{world}: strategy weights of world {world!r}",
                )
            else:
                check_ratio_sum(weights, 1.0, f"strategy_alloc_before_total.{world}")
        return self


class StrategyWeightsUpdated(Message):
    """The performance-weighting module's new strategy weights for one world.

    The world's own allocation is unchanged; the strategies' sum must stay within it.
    """

    type: Literal["strategy_weights_updated"]
    schema_version: SchemaVersion = 1
    event_id: Name
    portfolio_id: Name = "default"
    occurred_at: EpochMs
    world_id: Name
    strategy_alloc_after_total: dict[Name, Ratio] = Field(min_length=1)
    strategy_alloc_before_total: dict[Name, Ratio] | None = None

    @model_validator(mode="after")
    def _check_sums(self) -> StrategyWeightsUpdated:
        check_ratio_sum(
            self.strategy_alloc_after_total, 1.0, "strategy_alloc_after_total: strategy weights"
        )
        if self.strategy_alloc_before_total is not None:
            check_ratio_sum(
                self.strategy_alloc_before_total,
                1.0,
                "strategy_alloc_before_total: strategy weights",
            )
        return self


AllocationEvent = Annotated[
    WorldAllocationsChanged | StrategyWeightsUpdated, Field(discriminator="type")
]
"""Either allocation change, told apart by ``type``."""

allocation_event_adapter: TypeAdapter[AllocationEvent] = TypeAdapter(AllocationEvent)

__all__ = [
    "SUM_TOLERANCE",
    "AllocationEvent",
    "StrategyWeightsUpdated",
    "WorldAllocationsChanged",
    "allocation_event_adapter",
]
