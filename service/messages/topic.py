"""What the allocation topic carries: external allocation changes, the service's own policy
events and operators' commands, told apart by ``type``.

External callers (and the ``plan`` command) speak ``AllocationEvent``; only the stream service
reads the wider union, since a policy event is planned against the service's own state.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, TypeAdapter

from .allocation import StrategyWeightsUpdated, WorldAllocationsChanged
from .command import OperatorCommand
from .policy import PolicyRebalance

TopicEvent = Annotated[
    WorldAllocationsChanged | StrategyWeightsUpdated | PolicyRebalance | OperatorCommand,
    Field(discriminator="type"),
]

topic_event_adapter: TypeAdapter[TopicEvent] = TypeAdapter(TopicEvent)

__all__ = ["TopicEvent", "topic_event_adapter"]
