"""Wire messages (SPEC section 2): pydantic v2 models, JSON via orjson, ``schema_version`` 1."""

from ._types import SCHEMA_VERSION, Message
from .allocation import (
    AllocationEvent,
    StrategyWeightsUpdated,
    WorldAllocationsChanged,
    allocation_event_adapter,
)
from .dead_letter import DeadLetter
from .fills import PlanFills
from .intent import DeltaIntent, Leg, StrategyDelta
from .node import NodeCounts, NodeHeartbeat
from .notification import Notification, NotificationKind
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
from .policy import (
    AllocationTarget,
    AssetWeight,
    PolicyEstimate,
    PolicyRebalance,
    PolicyTarget,
    WeightsTarget,
)
from .snapshot import Position, PositionSnapshot
from .topic import TopicEvent, topic_event_adapter

__all__ = [
    "SCHEMA_VERSION",
    "AllocationEvent",
    "AllocationTarget",
    "AssetWeight",
    "DeadLetter",
    "DeltaIntent",
    "DropReason",
    "DroppedKey",
    "KeyDelta",
    "Leg",
    "Message",
    "NodeCounts",
    "NodeHeartbeat",
    "Notification",
    "NotificationKind",
    "PlanFills",
    "PlanOptions",
    "PlanRecord",
    "PlanTiming",
    "PlannedLeg",
    "PolicyEstimate",
    "PolicyRebalance",
    "PolicyTarget",
    "Position",
    "PositionSnapshot",
    "StrategyDelta",
    "StrategyWeightsUpdated",
    "TopicEvent",
    "WeightsTarget",
    "WorldAllocationsChanged",
    "WorldPlan",
    "allocation_event_adapter",
    "topic_event_adapter",
]
