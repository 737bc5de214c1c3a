"""The venue interface an execution node trades through.

Small on purpose: what it holds, what orders are open, place an order, and a stream of order
updates. A real exchange adapter implements these five against its API (positions per
account, client order ids, reduce-only flags are what every derivatives venue offers);
``PaperVenue`` implements them in memory for demos and tests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from service.execution import VenueRules


class OrderStatus(Enum):
    OPEN = "open"
    FILLED = "filled"
    REJECTED = "rejected"
    CANCELED = "canceled"


@dataclass(frozen=True)
class Order:
    """A signed order (positive buys) for one account's symbol, at about ``price``.

    ``order_id`` is the client's id: the same id twice is refused by the venue, which is how
    a restarted node cannot send an order it already sent.
    """

    order_id: str
    account: str
    symbol: str
    qty: float
    reduce_only: bool
    price: float


@dataclass(frozen=True)
class OrderUpdate:
    """A change of one order: ``fill_qty`` is this update's signed fill, ``filled_qty`` the
    order's total so far."""

    order: Order
    status: OrderStatus
    fill_qty: float = 0.0
    filled_qty: float = 0.0
    price: float | None = None
    reason: str | None = None
    reason_code: str | None = None
    """A rejection's reason as a short fixed word (``min_notional``, ``lot_size``, ...): what
    the node's metrics count rejections by (``reason`` is free text, for the log)."""
    fee: float = 0.0
    """What the venue charged for this update's fill, in the quote currency (negative: a
    rebate); what the node reports as the plan's realised fees."""

    @property
    def final(self) -> bool:
        return self.status is not OrderStatus.OPEN


class Venue(Protocol):
    """What an execution node needs of an exchange."""

    name: str

    def rules(self, symbol: str) -> VenueRules:
        """Lot size, minimum notional and flip support for ``symbol``."""
        ...

    async def positions(self, account: str) -> dict[str, float]:
        """Signed quantity per symbol held by ``account``."""
        ...

    async def open_orders(self) -> list[tuple[Order, float]]:
        """Orders not yet final, each with its filled quantity so far."""
        ...

    async def place(self, order: Order) -> None:
        """Submit ``order``; its acceptance, fills or rejection arrive as updates."""
        ...

    def updates(self) -> asyncio.Queue[OrderUpdate]:
        """Order updates, in the order the venue produced them."""
        ...
