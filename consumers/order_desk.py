"""One venue's orders: toward each key's newest target, one order at a time (SPEC 5.2).

The desk is the execution node's trading half, apart from Kafka: it reads the target book
the node fills from the intent topic, asks the pure rules (``service.execution``) for each
key's next step, places orders at the venue and attributes their fills to strategies. Its
methods return whose snapshot changed (``Touched``), and the node publishes those. What each
plan's fills cost (fees, slippage against the intent's mark) is added up in ``FillCosts``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from service.execution import (
    FillCosts,
    GiveUp,
    KeyId,
    Ledger,
    Place,
    Plans,
    Reached,
    TargetBook,
    Unattributed,
    due_leg,
    expire,
    next_step,
    weights,
)
from service.execution.ledger import Owner
from service.messages import DeltaIntent

from .venues.base import Order, OrderStatus, OrderUpdate, Venue

log = logging.getLogger("rebalancer.execution")

SHARED_ACCOUNT = "shared"
"""The venue account of shared-account mode (intents without a world)."""


def account_of(world_id: str | None) -> str:
    return SHARED_ACCOUNT if world_id is None else world_id


def world_of(account: str) -> str | None:
    return None if account == SHARED_ACCOUNT else account


@dataclass
class NodeStats:
    """Counts, for logs, tests and the operator."""

    intents: dict[str, int] = field(default_factory=dict)
    invalid_intents: int = 0
    orders: int = 0
    fills: int = 0
    rejections: int = 0
    rejections_by_reason: dict[str, int] = field(default_factory=dict)
    """Rejections by the venue's reason code (``OrderUpdate.reason_code``; ``other``)."""
    given_up: int = 0
    expired_unfinished: int = 0
    snapshots_published: int = 0
    unattributed: int = 0
    plans_converged: int = 0
    """Plans this node found reached and reported converged (once each)."""
    intent_lag: dict[int, int] = field(default_factory=dict)
    """Per assigned partition of the intent topic, records behind its high watermark."""
    residuals: dict[KeyId, float] = field(default_factory=dict)
    """Per key of this venue, its target minus the venue's position when last looked at."""


@dataclass
class Touched:
    """What a step or an order update changed."""

    publish: set[Owner] = field(default_factory=set)
    """Strategies whose snapshot should be published (holdings or convergence changed)."""
    follow: set[Owner] = field(default_factory=set)
    """Strategies the node now trades for and reports on every heartbeat."""
    again: bool = False
    """A leg was reached, so the next leg of its key (open after close) can start now."""

    def add(self, other: Touched) -> None:
        self.publish |= other.publish
        self.follow |= other.follow
        self.again = self.again or other.again


class OrderDesk:
    """Orders at one venue for the targets of a ``TargetBook``."""

    def __init__(
        self,
        venue: Venue,
        *,
        book: TargetBook,
        ledger: Ledger,
        plans: Plans,
        unattributed: Unattributed,
        stats: NodeStats,
        costs: FillCosts,
        session: str,
        max_retries: int,
        clock: Callable[[], int],
    ) -> None:
        self.venue = venue
        self.book = book
        self.ledger = ledger
        self.plans = plans
        self.unattributed = unattributed
        self.stats = stats
        self.costs = costs
        self.session = session
        self.max_retries = max_retries
        self.clock = clock
        self.open: dict[KeyId, Order] = {}
        self._order_intent: dict[str, DeltaIntent] = {}
        self._attempts: dict[str, int] = {}

    async def adopt_open_orders(self) -> None:
        """Orders the venue still works from before a restart keep their keys busy."""
        for order, _filled in await self.venue.open_orders():
            self.open[(world_of(order.account), self.venue.name, order.symbol)] = order

    async def step(self) -> Touched:
        """Place the next order of every key of this venue that has none open."""
        now = self.clock()
        name = self.venue.name
        touched = Touched()
        positions: dict[str, dict[str, float]] = {}
        for key, target in list(self.book.keys.items()):
            world_id, venue, symbol = key
            if venue != name or key in self.open:
                continue
            due = due_leg(target, now)
            if due is None:
                continue
            leg = due.leg
            if due.expired:
                expire(target)
                self.stats.expired_unfinished += 1
                log.warning("plan %s expired before %s %s was reached", leg.plan_id, name, symbol)
                continue
            account = account_of(world_id)
            if account not in positions:
                positions[account] = await self.venue.positions(account)
            touched.publish.update(self.unattributed.claim(self.ledger, name, account, leg))
            position = positions[account].get(symbol, 0.0)
            self.stats.residuals[key] = target.final.target_qty - position
            step = next_step(
                leg,
                position=position,
                rules=self.venue.rules(symbol),
                attempts=self._attempts.get(leg.intent_id, 0),
                max_retries=self.max_retries,
            )
            if isinstance(step, Reached):
                target.reached.add(leg.intent_id)
                touched.add(self._progress(leg))
                touched.again = True
            elif isinstance(step, GiveUp):
                target.reached.add(leg.intent_id)
                self.stats.given_up += 1
                log.error("giving up %s after %d rejected orders", leg.intent_id, step.attempts)
            else:
                await self._place(key, leg, account, step)
        return touched

    async def _place(self, key: KeyId, leg: DeltaIntent, account: str, step: Place) -> None:
        """Send ``step``'s order for ``leg``; the key has it open until it is final."""
        self._attempts[leg.intent_id] = step.attempt + 1
        order = Order(
            order_id=f"{leg.intent_id}:{self.session}:{step.attempt}",
            account=account,
            symbol=leg.symbol,
            qty=step.request.qty,
            reduce_only=step.request.reduce_only,
            price=leg.mark,
        )
        self.open[key] = order
        self._order_intent[order.order_id] = leg
        self.stats.orders += 1
        await self.venue.place(order)

    def on_update(self, update: OrderUpdate) -> Touched:
        """Attribute a fill to the strategies of its leg; free the key when final."""
        order = update.order
        key: KeyId = (world_of(order.account), self.venue.name, order.symbol)
        leg = self._order_intent.get(order.order_id)
        touched = Touched()
        if update.fill_qty:
            self.stats.fills += 1
            instrument = (self.venue.name, order.symbol)
            if update.price is not None:
                self.ledger.marks[instrument] = update.price
            if leg is None:  # an order from before a restart: its key's current plan owns it
                target = self.book.keys.get(key)
                leg = target.final if target is not None else None
            if leg is None:
                self.unattributed.add(order.account, order.symbol, update.fill_qty)
            else:
                shares = weights(leg.world_id, leg.strategy_breakdown)
                touched.publish.update(self.ledger.attribute(instrument, update.fill_qty, shares))
                touched.follow.update(shares)
                # a venue that tells no fill price is taken to have filled at the mark
                price = leg.mark if update.price is None else update.price
                self.costs.record(
                    leg.plan_id, qty=update.fill_qty, price=price, mark=leg.mark, fee=update.fee
                )
        if update.final:
            if self.open.get(key) == order:
                del self.open[key]
            if update.status is OrderStatus.REJECTED:
                self.stats.rejections += 1
                code = update.reason_code or "other"
                by_reason = self.stats.rejections_by_reason
                by_reason[code] = by_reason.get(code, 0) + 1
                log.info("order %s rejected: %s", order.order_id, update.reason)
            if leg is not None:
                touched.add(self._progress(leg))
        return touched

    def _progress(self, leg: DeltaIntent) -> Touched:
        """Owners of ``leg``'s plan need a snapshot: progress or convergence to report."""
        owners = self.plans.owners(leg.plan_id)
        return Touched(publish=set(owners), follow=set(owners))
