"""Field types shared by every message: the validation rules of SPEC section 2 in one place."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_VERSION = 1
"""The only message schema version this build reads and writes."""

SUM_TOLERANCE = 1e-9
"""Slack allowed when checking that allocation ratios add up within a bound."""

SchemaVersion = Annotated[Literal[1], Field(description="Message schema version.")]

Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=r"^[^|\x00-\x1f]+$"),
    Field(description="An identifier: 1-200 characters, no '|' and no control characters."),
]
Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Ratio = Annotated[
    float, Field(ge=0, le=1, allow_inf_nan=False, description="A fraction of total equity.")
]
Quantity = Annotated[float, Field(allow_inf_nan=False, description="Signed; negative is short.")]
Price = Annotated[float, Field(gt=0, allow_inf_nan=False, description="A positive mark price.")]
EpochMs = Annotated[int, Field(ge=0, description="Milliseconds since the Unix epoch.")]


class Message(BaseModel):
    """Base of every wire message: strict types, unknown fields refused, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def check_ratio_sum(values: dict[str, float], bound: float, what: str) -> None:
    """Raise ``ValueError`` when ratios add up to more than ``bound`` (with tolerance)."""
    total = sum(values.values())
    if total > bound + SUM_TOLERANCE:
        raise ValueError(f"{what} add up to {total:.12g}, above {bound:.12g}")
