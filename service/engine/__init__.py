"""The service's decisions for each allocation change, pure and synchronous.

Given an event, the snapshot table and the allocation state, the engine says what to do:
dead-letter it (``InputError``), skip it (already applied), hold it (a plan in flight for its
world, or stale snapshots), or plan it. It also finds held work that may go now. It performs
no I/O: the edges (``consumers``) carry out a ``Work`` in the order that keeps every plan safe
across crashes, and read its ``Outcome`` to report it.

- ``admission``: whether an event, or a state about to be written, is acceptable;
- ``holding``: what waits, how later changes join it, when it may go;
- ``effects``: a plan or a hold turned into records, write-ahead and state;
- ``policy``: policy corrections, measured when planned;
- ``engine``: ``RebalanceEngine``, the face composing them.
"""

from ..planner.intents import intents_from_record
from ..state.allocations import HoldReason
from .effects import affected_strategies
from .engine import RebalanceEngine
from .options import EngineOptions, EventOptions
from .work import Held, Outcome, Work

__all__ = [
    "EngineOptions",
    "EventOptions",
    "Held",
    "HoldReason",
    "Outcome",
    "RebalanceEngine",
    "Work",
    "affected_strategies",
    "intents_from_record",
]
