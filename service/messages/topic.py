"""What the allocation topic carries: external allocation changes and the service's own
policy events, told apart by ``type``.

External callers (and the ``plan`` command) speak ``AllocationEvent``; only the stream service
reads the wider union, since a policy event is planned against the service's own state.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, TypeAdapter

from .allocation import StrategyWeightsUpdated, WorldAllocationsChanged
from .policy import PolicyRebalance

TopicEvent = Annotated[
    WorldAllocationsChanged | StrategyWeightsUpdated | PolicyRebalance,
    Field(discriminator="type"),
]

topic_event_adapter: TypeAdapter[TopicEvent] = TypeAdapter(TopicEvent)

__all__ = ["TopicEvent", "topic_event_adapter"]
