"""Field types shared by every message: the validation rules of SPEC section 2 in one place."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

SCHEMA_VERSION = 1
"""The only message schema version this build reads and writes."""

SUM_TOLERANCE = 1e-9
"""Slack allowed when checking that allocation ratios add up within a bound."""

MAX_EPOCH_MS = 253_402_300_799_999
"""The last millisecond of the year 9999: the latest time any message may carry."""

MAX_SEQ = 2**53 - 1
"""The largest sequence number: every JSON reader holds integers up to here exactly."""

MAX_QUANTITY = 1e15
"""The largest absolute quantity (units of an instrument) a message may carry."""

MAX_PRICE = 1e12
"""Marks lie in (0, 1e12]: quantity times price stays far from float limits. (A tiny mark can
still make a huge target quantity; the plan's own check refuses that, see ``planner.bounds``.)"""

MAX_AMOUNT = MAX_QUANTITY * MAX_PRICE
"""The largest money amount (equity, cash, notional): the largest quantity at the largest mark."""

MIN_LOT = 1e-12
MAX_LOT = 1e12
"""Lot sizes lie in [1e-12, 1e12]."""


def _integer_only(value: Any) -> Any:
    # Literal[1] would take 1.0 and true (both == 1): a version is the integer itself
    if isinstance(value, bool | float):
        raise ValueError("Input should be the integer 1")
    return value


SchemaVersion = Annotated[
    Literal[1], BeforeValidator(_integer_only), Field(description="Message schema version.")
]

NAME_PATTERN = r"^[^|\x00-\x1f\x7f-\x9f\u2028\u2029]+$"
"""An identifier's characters: anything but '|', the C0 and C1 control characters (U+0000-U+001F,
U+007F-U+009F) and the line and paragraph separators (U+2028, U+2029)."""

Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=NAME_PATTERN),
    Field(
        description="An identifier: 1-200 characters, no '|', no control characters "
        "(U+0000-U+001F, U+007F-U+009F) and no U+2028/U+2029."
    ),
]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Amount = Annotated[
    float,
    Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT, allow_inf_nan=False, description="A signed money amount."),
]
NonNegative = Annotated[float, Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, le=MAX_AMOUNT, allow_inf_nan=False)]
Ratio = Annotated[
    float, Field(ge=0, le=1, allow_inf_nan=False, description="A fraction of total equity.")
]
Quantity = Annotated[
    float,
    Field(
        ge=-MAX_QUANTITY,
        le=MAX_QUANTITY,
        allow_inf_nan=False,
        description="Signed; negative is short. At most 1e15 in magnitude.",
    ),
]
Price = Annotated[
    float,
    Field(
        gt=0,
        le=MAX_PRICE,
        allow_inf_nan=False,
        description="A positive mark price, at most 1e12.",
    ),
]


def _countable_lot(value: float) -> float:
    if value < MIN_LOT:
        raise ValueError(f"Input should be a lot size of at least {MIN_LOT:g}")
    return value


LotSize = Annotated[
    float,
    Field(
        gt=0,
        le=MAX_LOT,
        allow_inf_nan=False,
        description="A lot size, in [1e-12, 1e12].",
        json_schema_extra={"minimum": MIN_LOT},
    ),
    AfterValidator(_countable_lot),
]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _epoch_ms(value: Any) -> Any:
    """An ISO-8601 time with its zone (``2026-12-02T10:00:00Z``, ``...+09:00``) as epoch
    milliseconds (below a millisecond cut); anything else is left for the integer checks."""
    if not isinstance(value, str):
        return value
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"expected epoch milliseconds or an ISO-8601 time, got {value[:40]!r}"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"the ISO-8601 time {value[:40]!r} needs a zone (Z or +hh:mm)")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


EpochMs = Annotated[
    int,
    BeforeValidator(_epoch_ms),
    Field(
        ge=0,
        le=MAX_EPOCH_MS,
        description="Milliseconds since the Unix epoch, at most 253402300799999 (year 9999), "
        "or an ISO-8601 time with its zone.",
    ),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": MAX_EPOCH_MS},
                {"type": "string", "format": "date-time"},
            ],
            "description": "Milliseconds since the Unix epoch, at most 253402300799999 (year "
            "9999), or an ISO-8601 time with its zone (read as epoch milliseconds).",
        }
    ),
]
Sequence = Annotated[int, Field(ge=0, le=MAX_SEQ)]


class Message(BaseModel):
    """Base of every wire message: strict types, unknown fields refused, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def check_ratio_sum(values: dict[str, float], bound: float, what: str) -> None:
    """Raise ``ValueError`` when ratios add up to more than ``bound`` (with tolerance)."""
    total = sum(values.values())
    if total > bound + SUM_TOLERANCE:
        raise ValueError(f"{what} add up to {total:.12g}, above {bound:.12g}")
