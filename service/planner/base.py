"""The planning contract: what every planner takes, gives and may be configured with.

Planners are pure: a ``PlanningContext`` in, a ``Plan`` out, no I/O, no clock. Cost-aware,
slippage-aware or risk-constrained planners plug in by implementing ``Rebalancer``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from ..messages._types import MAX_AMOUNT, LotSize, Name
from .positions import PositionTable
from .scaling import ScaleRule, WorldChange

if TYPE_CHECKING:
    from .plan import Plan

FlipPolicy = Literal["flatten_then_open", "direct_flip"]
ExecutionMode = Literal["per_world", "shared_account"]

MAX_INTENT_TTL_MS = 366 * 86_400_000
"""An intent lives at most a year: its expiry stays a representable time."""


Notional = Annotated[float, Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False)]

HASHED_WHEN_SET = ("min_notional_by_venue",)
"""Options left out of the canonical form (and so of plan ids) while empty."""


class PlannerOptions(BaseModel):
    """How to turn scale factors into intents; set in config, overridable per request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale_rule: ScaleRule = "strategy"
    flip_policy: FlipPolicy = "flatten_then_open"
    direct_flip_venues: tuple[str, ...] = Field(
        default=(), description="Venues that support flipping a position in one order."
    )
    execution_mode: ExecutionMode = "per_world"
    allow_shared_account: bool = Field(
        default=False, description="shared_account mode is refused unless this is set."
    )
    min_trade_notional: float = Field(default=0.0, ge=0, le=MAX_AMOUNT, allow_inf_nan=False)
    min_notional_by_venue: dict[Name, Notional] = Field(
        default_factory=dict,
        description="venue -> minimum notional of an intent there; a key below its venue's "
        "minimum (or min_trade_notional, whichever is higher) is dropped (below_min_notional).",
    )
    lot_size_by_symbol: dict[str, LotSize] = Field(default_factory=dict)
    lot_size_by_venue: dict[str, dict[str, LotSize]] = Field(
        default_factory=dict, description="venue -> symbol -> lot size; wins over by_symbol."
    )
    qty_decimals: int = Field(
        default=12, ge=0, le=15, description="Quantities without a lot size are rounded to this."
    )
    intent_ttl_ms: int = Field(
        default=300_000, gt=0, le=MAX_INTENT_TTL_MS, description="expires_at - created_at."
    )

    _canonical: dict[str, Any] | None = PrivateAttr(default=None)

    def canonical(self) -> dict[str, Any]:
        """The options as plain JSON data (computed once; the model is immutable), hashed
        into plan ids. Options added since ids were first published appear only when set, so
        a configuration that does not use them keeps its plan ids."""
        if self._canonical is None:
            data = self.model_dump(mode="json")
            for name in HASHED_WHEN_SET:
                if not data[name]:
                    del data[name]
            self._canonical = data
        return self._canonical


class PlanningError(ValueError):
    """The context cannot be planned as asked (not a bug: tell the caller what to fix)."""


@dataclass(frozen=True)
class PlanningContext:
    """Everything a plan depends on, already validated.

    ``trigger`` is the canonical JSON of whatever caused the plan (an event, a request); it is
    hashed into ``plan_id`` together with the positions, so a re-planned event keeps its ids.
    ``current_weights`` are the service's current strategy weights per world, if it has them.
    ``created_at`` stamps the intents (they expire ``intent_ttl_ms`` later); it defaults to
    ``occurred_at``, the time of the triggering event. Ids never depend on either.
    ``reduce_only_worlds``: worlds in the ``reduce-only`` trading state (SPEC 7). Their keys,
    and the global view when one of them is planned, trade only what shrinks exposure: a
    flip becomes a close to zero, a key that opens or grows is held (dropped, reason
    ``held``). The planner does not hash them: a caller that sets them puts them in
    ``trigger`` too (the service does), so that the plan id tells the plans apart.
    """

    event_id: str
    portfolio_id: str
    occurred_at: int
    total_equity: float
    changes: tuple[WorldChange, ...]
    positions: PositionTable
    options: PlannerOptions = field(default_factory=PlannerOptions)
    current_weights: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    trigger: bytes = b""
    created_at: int | None = None
    coalesced_event_ids: tuple[str, ...] = ()
    reduce_only_worlds: frozenset[str] = frozenset()


class Rebalancer(Protocol):
    """A planner: same input, same output, whatever the rule inside."""

    name: str

    def plan(self, context: PlanningContext) -> Plan: ...
