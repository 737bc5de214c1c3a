"""A simulated exchange, in process: lot sizes, minimum notional, reduce-only enforcement,
immediate or partial fills over time, seeded random rejections, a fee per fill and a fixed
slippage against the order's price.

It rejects what real venues reject: a quantity that is not whole lots, an order under the
minimum notional, a reused client order id, and a reduce-only order that would grow a
position or take it through zero. With ``state_file`` its accounts and open orders survive
the process (written after every change), so an execution node can be killed and restarted
against the same venue.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import orjson

from service.execution import VenueRules
from service.planner.lots import is_whole_lots, lot_count, lot_fraction, lots_to_qty
from service.state.stored_snapshot import StoredSnapshot

from .base import Order, OrderStatus, OrderUpdate

FillModel = Literal["immediate", "partial"]


@dataclass
class PaperConfig:
    """How the paper venue behaves."""

    lot_size_by_symbol: dict[str, float] = field(default_factory=dict)
    min_notional: float = 0.0
    direct_flip: bool = False
    fill_model: FillModel = "immediate"
    partial_slices: int = 3
    """Partial fills: each order fills in this many slices..."""
    fill_interval_ms: int = 20
    """...one every this many milliseconds."""
    reject_rate: float = 0.0
    """Share of otherwise valid orders rejected at random (a venue's transient refusals)."""
    seed: int = 0
    fee_bps: float = 0.0
    """Fee charged on each fill, in basis points of its notional (|qty| x fill price)."""
    slippage_bps: float = 0.0
    """Fills are this many basis points worse than the order's price (buys higher, sells
    lower): the simulated cost of crossing the spread."""

    def __post_init__(self) -> None:
        for name in ("fee_bps", "slippage_bps"):
            value = getattr(self, name)
            if not math.isfinite(value) or not 0 <= value <= 10_000:
                raise ValueError(
                    f"{name}: expected a number of basis points in [0, 10000], got {value!r}"
                )


@dataclass
class _Open:
    order: Order
    filled: float = 0.0


class PaperVenue:
    """An in-memory venue; see the module docstring."""

    def __init__(
        self, name: str, config: PaperConfig | None = None, *, state_file: Path | None = None
    ) -> None:
        self.name = name
        self.config = config or PaperConfig()
        self.accounts: dict[str, dict[str, float]] = {}
        self.orders_placed = 0
        self.placed: list[Order] = []
        """Every order received since this object was made (not persisted)."""
        self.rejections: list[tuple[Order, str]] = []
        self._open: dict[str, _Open] = {}
        self._ids: set[str] = set()
        self._updates: asyncio.Queue[OrderUpdate] = asyncio.Queue()
        self._random = random.Random(self.config.seed)
        self._tasks: set[asyncio.Task[None]] = set()
        self._state_file = state_file
        self.listener: Callable[[Order | OrderUpdate], None] | None = None
        """Told of every order received and every update sent (for traces)."""
        if state_file is not None and state_file.exists():
            self._load(state_file)

    # -- the Venue interface ------------------------------------------------------------------

    def rules(self, symbol: str) -> VenueRules:
        c = self.config
        return VenueRules(
            lot_size=c.lot_size_by_symbol.get(symbol),
            min_notional=c.min_notional,
            direct_flip=c.direct_flip,
        )

    async def positions(self, account: str) -> dict[str, float]:
        return dict(self.accounts.get(account, {}))

    async def open_orders(self) -> list[tuple[Order, float]]:
        return [(o.order, o.filled) for o in self._open.values()]

    async def place(self, order: Order) -> None:
        self.orders_placed += 1
        self.placed.append(order)
        if self.listener is not None:
            self.listener(order)
        refusal = self._refusal(order)
        if refusal is not None:
            code, reason = refusal
            self.rejections.append((order, reason))
            self._ids.add(order.order_id)
            self._save()
            await self._send(
                OrderUpdate(order, OrderStatus.REJECTED, reason=reason, reason_code=code)
            )
            return
        self._ids.add(order.order_id)
        self._open[order.order_id] = _Open(order)
        self._save()
        self._schedule(order.order_id)

    def updates(self) -> asyncio.Queue[OrderUpdate]:
        return self._updates

    # -- simulation ---------------------------------------------------------------------------

    def seed_position(self, account: str, symbol: str, qty: float) -> None:
        """Start an account with a holding (a demo's or test's initial state)."""
        self.accounts.setdefault(account, {})[symbol] = qty
        self._save()

    def _refusal(self, order: Order) -> tuple[str, str] | None:
        """Why the venue refuses ``order``: a reason code and its text; None if it does not."""
        rules = self.rules(order.symbol)
        if order.order_id in self._ids:
            return "duplicate_order_id", f"duplicate client order id {order.order_id!r}"
        if not math.isfinite(order.qty) or order.qty == 0:
            return "invalid_quantity", f"quantity {order.qty!r} is not a non-zero number"
        held = self.accounts.get(order.account, {}).get(order.symbol, 0.0)
        if order.reduce_only:
            after = held + order.qty
            if held == 0 or abs(after) > abs(held) or after * held < 0:
                return (
                    "reduce_only",
                    f"reduce-only order {order.qty:+g} would grow or flip position {held:+g}",
                )
        closing_all = order.reduce_only and abs(held + order.qty) < 1e-12
        lot = rules.lot_size
        if lot is not None and not closing_all and not is_whole_lots(order.qty, *lot_fraction(lot)):
            return "lot_size", f"quantity {order.qty:g} is not a multiple of the lot size {lot:g}"
        notional = abs(order.qty) * order.price
        if notional < rules.min_notional and not closing_all:
            return (
                "min_notional",
                f"notional {notional:g} is under the minimum {rules.min_notional:g}",
            )
        if self.config.reject_rate and self._random.random() < self.config.reject_rate:
            return "venue_refused", "rejected by the venue (simulated transient refusal)"
        return None

    def _schedule(self, order_id: str) -> None:
        task = asyncio.create_task(self._fill(order_id), name=f"paper-fill-{order_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fill(self, order_id: str) -> None:
        c = self.config
        while (state := self._open.get(order_id)) is not None:
            order = state.order
            remaining = order.qty - state.filled
            if c.fill_model == "partial":
                await asyncio.sleep(c.fill_interval_ms / 1000)
                lot = self.rules(order.symbol).lot_size
                piece = order.qty / max(1, c.partial_slices)
                if lot is not None:  # whole lots (SPEC 3.2's rounding), at least one
                    num, scale = lot_fraction(lot)
                    piece = lots_to_qty(max(1, lot_count(piece, num, scale)), num, scale, piece)
                part = remaining if abs(piece) >= abs(remaining) else piece
            else:
                part = remaining
            account = self.accounts.setdefault(order.account, {})
            value = account.get(order.symbol, 0.0) + part
            account[order.symbol] = 0.0 if abs(value) < 1e-12 else value
            state.filled += part
            done = abs(order.qty - state.filled) < 1e-12
            if done:
                del self._open[order_id]
            self._save()
            price = self._fill_price(order)
            await self._send(
                OrderUpdate(
                    order,
                    OrderStatus.FILLED if done else OrderStatus.OPEN,
                    fill_qty=part,
                    filled_qty=state.filled,
                    price=price,
                    fee=abs(part) * price * c.fee_bps / 10_000,
                )
            )
            if done:
                return

    def _fill_price(self, order: Order) -> float:
        """The order's price moved against it by ``slippage_bps``."""
        side = 1.0 if order.qty > 0 else -1.0
        return order.price * (1 + side * self.config.slippage_bps / 10_000)

    async def _send(self, update: OrderUpdate) -> None:
        if self.listener is not None:
            self.listener(update)
        await self._updates.put(update)

    def seed_from(self, snapshots: Iterable[StoredSnapshot]) -> None:
        """Give the accounts what the snapshots say they hold at this venue."""
        for s in snapshots:
            for p in s.positions():
                if p.venue == self.name:
                    held = self.accounts.get(s.world_id, {}).get(p.symbol, 0.0)
                    self.seed_position(s.world_id, p.symbol, held + p.qty)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- persistence --------------------------------------------------------------------------

    def _save(self) -> None:
        if self._state_file is None:
            return
        data = {
            "accounts": self.accounts,
            "open": [{"order": asdict(o.order), "filled": o.filled} for o in self._open.values()],
            "ids": sorted(self._ids),
            "orders_placed": self.orders_placed,
        }
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(data))
        os.replace(tmp, self._state_file)

    def _load(self, path: Path) -> None:
        data = orjson.loads(path.read_bytes())
        self.accounts = data["accounts"]
        self._ids = set(data["ids"])
        self.orders_placed = data["orders_placed"]
        self._open = {
            o["order"]["order_id"]: _Open(Order(**o["order"]), o["filled"]) for o in data["open"]
        }

    def resume(self) -> None:
        """Carry on filling the open orders loaded from ``state_file`` (needs a running loop)."""
        for order_id in self._open:
            self._schedule(order_id)
