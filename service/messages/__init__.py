"""Wire messages (SPEC section 2): pydantic v2 models, JSON via orjson, ``schema_version`` 1."""

from ._types import SCHEMA_VERSION, Message
from .allocation import (
    AllocationEvent,
    StrategyWeightsUpdated,
    WorldAllocationsChanged,
    allocation_event_adapter,
)
from .dead_letter import DeadLetter
from .intent import DeltaIntent, Leg, StrategyDelta
from .plan import (
    DroppedKey,
    DropReason,
    KeyDelta,
    PlannedLeg,
    PlanOptions,
    PlanRecord,
    PlanTiming,
    WorldPlan,
)
from .snapshot import Position, PositionSnapshot

__all__ = [
    "SCHEMA_VERSION",
    "AllocationEvent",
    "DeadLetter",
    "DeltaIntent",
    "DropReason",
    "DroppedKey",
    "KeyDelta",
    "Leg",
    "Message",
    "PlanOptions",
    "PlanRecord",
    "PlanTiming",
    "PlannedLeg",
    "Position",
    "PositionSnapshot",
    "StrategyDelta",
    "StrategyWeightsUpdated",
    "WorldAllocationsChanged",
    "WorldPlan",
    "allocation_event_adapter",
]
