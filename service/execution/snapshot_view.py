"""What the execution domain reads of snapshots, as protocols.

``service.state`` sits beside this package in the layers, so the domain cannot import its
snapshot table; it reads positions and snapshots through these shapes instead, which the
table's stored snapshots (and plain test doubles) satisfy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from ..planner.positions import PositionLike

HeldPosition = PositionLike
"""One position row of a snapshot: the planner's ``PositionLike``, the same shape."""


class HeldSnapshot(Protocol):
    """One strategy's snapshot."""

    @property
    def world_id(self) -> str: ...

    @property
    def strategy_id(self) -> str: ...

    @property
    def as_of(self) -> int: ...

    def positions(self) -> Sequence[HeldPosition]: ...


PositionsOf = Callable[[str | None], Iterable[HeldPosition]]
"""The positions the snapshots of one world hold (of every world for None)."""
