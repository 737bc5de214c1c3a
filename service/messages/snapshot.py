"""Position snapshots: the only truth about what a (world, strategy) holds."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidatorFunctionWrapHandler, field_validator

from ._types import Amount, EpochMs, Message, Name, Price, Quantity, SchemaVersion, Sequence


class Position(Message):
    """One holding inside a snapshot. A missing ``venue`` is its own netting key."""

    symbol: Name
    venue: Name | None = None
    qty: Quantity
    mark: Price | None = Field(
        default=None, description="Latest mark; a key without any mark is held, never guessed."
    )
    avg_cost: Amount | None = None


class PositionSnapshot(Message):
    """What one ``(world_id, strategy_id)`` holds at ``as_of``; topic key ``"{world}|{strategy}"``.

    ``positions`` may also be QMTL's map form ``{symbol: {qty, avg_cost, mark}}`` (no venue).
    """

    schema_version: SchemaVersion = 1
    world_id: Name
    strategy_id: Name
    as_of: EpochMs
    seq: Sequence | None = Field(default=None, description="Breaks ties between equal as_of.")
    cash: Amount | None = Field(
        default=None,
        description="Cash the strategy holds, in the portfolio's currency: counted in the "
        "portfolio's measured equity (positions times marks plus cash), which live policies "
        "weigh worlds against.",
    )
    positions: list[Position] = Field(default_factory=list)
    converged_plan_id: Name | None = Field(
        default=None, description="Set by execution nodes: the last plan fully reached."
    )

    @field_validator("positions", mode="wrap")
    @classmethod
    def _accept_map_form(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # QMTL's {symbol: {qty, avg_cost, mark}}; the list form never pays for this check
        if isinstance(value, dict):
            rows = []
            for symbol, body in value.items():
                if not isinstance(body, dict):
                    raise ValueError(f"{symbol!r} must be an object with qty, got {body!r}")
                rows.append({"symbol": symbol, **body})
            value = rows
        return handler(value)

    @property
    def key(self) -> str:
        """The topic key of this snapshot."""
        return f"{self.world_id}|{self.strategy_id}"

    @property
    def version(self) -> tuple[int, int]:
        """Ordering between snapshots of one strategy: newer ``as_of`` wins, then ``seq``."""
        return (self.as_of, -1 if self.seq is None else self.seq)
