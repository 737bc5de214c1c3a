"""The execution node's decisions without a broker: when a plan is reached, what a strategy
reports as converged, what is pruned, what start-up reconciliation finds, who claims an
unattributed quantity, and what a key does next."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from service.execution import (
    GiveUp,
    HeldPosition,
    KeyTarget,
    Ledger,
    Offer,
    Place,
    Plans,
    Reached,
    TargetBook,
    Unattributed,
    VenueRules,
    adopt,
    due_leg,
    expire,
    held_at,
    next_step,
    reached_elsewhere,
    reconcile,
    within_tolerance,
)
from service.messages import DeltaIntent

HERE = "paper"
THERE = "other"
TOL = 1e-9


def intent(**fields: Any) -> DeltaIntent:
    base: dict[str, Any] = {
        "intent_id": f"{fields.get('plan_id', 'p1')}-{fields.get('venue', HERE)}-"
        f"{fields.get('symbol', 'BTC')}-{fields.get('leg', 'adjust')}",
        "plan_id": "p1",
        "event_id": "e1",
        "portfolio_id": "default",
        "world_id": "w",
        "venue": HERE,
        "symbol": "BTC",
        "current_qty": 1.5,
        "target_qty": 1.0,
        "delta_qty": -0.5,
        "mark": 100.0,
        "notional": 50.0,
        "reduce_only": True,
        "leg": "adjust",
        "strategy_breakdown": [
            {"strategy_id": "s1", "delta_qty": -0.2},
            {"strategy_id": "s2", "delta_qty": -0.3},
        ],
        "created_at": 1_000,
        "expires_at": 10_000,
    }
    return DeltaIntent.model_validate({**base, **fields})


@dataclass(frozen=True)
class Row:
    venue: str | None
    symbol: str
    qty: float
    mark: float | None = 100.0


@dataclass(frozen=True)
class Snap:
    world_id: str
    strategy_id: str
    as_of: int
    rows: tuple[Row, ...] = ()

    def positions(self) -> Sequence[Row]:
        return self.rows


@dataclass
class World:
    """Snapshots per world, read as the node reads its snapshot table."""

    rows: dict[str, list[Row]] = field(default_factory=dict)

    def __call__(self, world_id: str | None) -> Iterable[HeldPosition]:
        if world_id is None:
            return [r for rows in self.rows.values() for r in rows]
        return self.rows.get(world_id, [])


def offer(book: TargetBook, plans: Plans, *intents: DeltaIntent, now: int = 2_000) -> None:
    """As the node does: the book takes each intent, the plans note the accepted ones."""
    for i in intents:
        if book.offer(i, now) in (Offer.ACCEPTED, Offer.SUPERSEDED):
            plans.record(i)


def reach(book: TargetBook, *intents: DeltaIntent) -> None:
    for i in intents:
        book.keys[(i.world_id, i.venue, i.symbol)].reached.add(i.intent_id)


# -- another venue's key, within tolerance -----------------------------------------------------


def test_another_venue_counts_as_reached_within_a_relative_tolerance() -> None:
    rows = [Row(THERE, "BTC", 0.4), Row(THERE, "BTC", 0.6), Row(HERE, "BTC", 9.0)]
    rows += [Row(THERE, "ETH", 5.0), Row(None, "BTC", 7.0)]
    key = ("w", THERE, "BTC")
    assert held_at(key, rows) == pytest.approx(1.0)  # only that venue's BTC, summed
    assert reached_elsewhere(key, 1.0, rows, 1e-9)
    assert not reached_elsewhere(key, 1.1, rows, 1e-9)
    assert reached_elsewhere(key, 1.0 + 1e-12, rows, 1e-9)  # float noise of partial fills
    assert within_tolerance(1_000.0 + 1e-7, 1_000.0, 1e-9)  # relative to a large target
    assert not within_tolerance(1e-8, 0.0, 1e-9)  # absolute below 1
    assert reached_elsewhere(("w", THERE, "SOL"), 0.0, rows, 1e-9)  # nothing held, none wanted


# -- a plan reached across venues --------------------------------------------------------------


def two_venue_plan() -> tuple[TargetBook, Plans, DeltaIntent, DeltaIntent]:
    book, plans = TargetBook(), Plans(HERE, TOL)
    here = intent()
    there = intent(venue=THERE, current_qty=0.0, target_qty=2.0, delta_qty=2.0, reduce_only=False)
    offer(book, plans, here, there)
    return book, plans, here, there


def test_a_plan_is_reached_only_when_every_key_at_every_venue_is() -> None:
    book, plans, here, _ = two_venue_plan()
    other = World({"w": [Row(THERE, "BTC", 2.0)]})
    assert not plans.reached("p1", book, other)  # this venue's leg still open
    reach(book, here)
    assert plans.reached("p1", book, other)
    assert not plans.reached("p1", book, World({"w": [Row(THERE, "BTC", 1.9)]}))
    assert not plans.reached("p1", book, World({"x": [Row(THERE, "BTC", 2.0)]}))  # other world


def test_a_shared_account_key_is_judged_by_every_worlds_snapshots() -> None:
    book, plans = TargetBook(), Plans(HERE, TOL)
    shared = [{"world_id": "a", "strategy_id": "s1", "delta_qty": 2.0}]
    shared_key = intent(
        world_id=None,
        venue=THERE,
        target_qty=2.0,
        delta_qty=0.5,
        reduce_only=False,
        strategy_breakdown=shared,
    )
    offer(book, plans, shared_key)
    split = World({"a": [Row(THERE, "BTC", 1.5)], "b": [Row(THERE, "BTC", 0.5)]})
    assert plans.reached("p1", book, split)
    assert plans.owners("p1") == {("a", "s1")}


def test_convergence_is_reported_only_once_every_key_is_within_tolerance() -> None:
    book, plans, here, _ = two_venue_plan()
    short = World({"w": [Row(THERE, "BTC", 1.5)]})
    reach(book, here)
    assert plans.converged_for(("w", "s1"), book, short, None) is None
    assert plans.converged_for(("w", "s1"), book, short, "p0") == "p0"  # keeps the topic's
    done = World({"w": [Row(THERE, "BTC", 2.0 - 1e-12)]})
    assert plans.converged_for(("w", "s1"), book, done, None) == "p1"
    assert plans.converged_for(("w", "s2"), book, done, None) == "p1"
    assert plans.converged_for(("w", "s3"), book, done, None) is None  # not in the plan
    # once found, it stays found even when the other venue's snapshot moves on
    assert plans.converged_for(("w", "s1"), book, short, None) == "p1"


def test_owners_are_the_strategies_the_breakdown_moves() -> None:
    book, plans = TargetBook(), Plans(HERE, TOL)
    breakdown = [
        {"strategy_id": "s1", "delta_qty": -0.5},
        {"strategy_id": "s2", "delta_qty": 0.0},  # not moved: nothing to report
        {"world_id": "x", "strategy_id": "s3", "delta_qty": 0.1},
    ]
    offer(book, plans, intent(strategy_breakdown=breakdown))
    assert plans.owners("p1") == {("w", "s1"), ("x", "s3")}
    assert plans.owners("unknown") == set()


def test_a_superseded_plan_is_never_reported_and_the_newest_reached_wins() -> None:
    book, plans = TargetBook(), Plans(HERE, TOL)
    old = intent()
    eth = intent(symbol="ETH", current_qty=1.0, target_qty=0.0, delta_qty=-1.0)
    offer(book, plans, old, eth)
    reach(book, eth)
    new = intent(plan_id="p2", created_at=1_500, target_qty=0.8, delta_qty=-0.7)
    offer(book, plans, new)  # BTC follows p2 now: p1 can never be reached as planned
    nowhere = World()
    assert not plans.reached("p1", book, nowhere)
    assert plans.converged_for(("w", "s1"), book, nowhere, None) is None
    reach(book, new)
    assert plans.reached("p2", book, nowhere)
    assert plans.converged_for(("w", "s1"), book, nowhere, None) == "p2"
    # the topic reports a newer plan this node knows: another venue finished it later
    newer = intent(plan_id="p3", venue=THERE, created_at=1_800, target_qty=5.0, delta_qty=0.0)
    offer(book, plans, newer)
    assert plans.converged_for(("w", "s1"), book, nowhere, "p3") == "p3"
    # an older report, or one this node never saw alongside its own finding, yields to it
    assert plans.converged_for(("w", "s1"), book, nowhere, "p1") == "p2"
    assert plans.converged_for(("w", "s1"), book, nowhere, "zzz") == "p2"


# -- pruning -----------------------------------------------------------------------------------


def test_pruning_forgets_expired_intent_ids() -> None:
    book, plans = TargetBook(), Plans(HERE, TOL)
    early = intent(intent_id="early", expires_at=3_000)
    late = intent(intent_id="late", symbol="ETH", expires_at=9_000)
    offer(book, plans, early, late)
    plans.prune(book, 5_000)
    # an id still remembered is a duplicate; a forgotten one would be taken again (it is
    # only offered at a time before its expiry here to make the forgetting visible)
    assert book.offer(late, 2_000) is Offer.DUPLICATE
    assert book.offer(early, 2_000) is Offer.ACCEPTED


def test_pruning_forgets_plans_that_can_no_longer_matter() -> None:
    book, plans = TargetBook(), Plans(HERE, TOL)
    p1 = intent()
    p2 = intent(plan_id="p2", created_at=1_500, target_qty=0.8, delta_qty=-0.7)
    pending = intent(plan_id="p3", created_at=1_200, symbol="ETH", target_qty=3.0, delta_qty=1.0)
    offer(book, plans, p1, p2, pending)
    assert plans.prune(book, 2_000) == ["p1"]  # no key follows p1 any more
    assert set(plans.known) == {"p2", "p3"}
    reach(book, p2)
    assert plans.converged_for(("w", "s1"), book, World(), None) == "p2"
    assert plans.prune(book, 2_000) == []  # s2 has not been found to reach p2 yet
    assert plans.converged_for(("w", "s2"), book, World(), None) == "p2"
    # both owners reached p2: p2 is done with, and p3, older than what both of its owners
    # reached, can never be reported again (a key still following it does not save it)
    assert sorted(plans.prune(book, 2_000)) == ["p2", "p3"]
    assert plans.known == {}


def test_pruning_keeps_a_plan_still_in_execution() -> None:
    book, plans = TargetBook(), Plans(HERE, TOL)
    offer(book, plans, intent())
    assert plans.prune(book, 2_000) == []
    assert set(plans.known) == {"p1"}


# -- start-up: adopting the snapshots, reconciling with the venue ------------------------------


def test_the_ledger_adopts_this_venues_rows_of_the_snapshots() -> None:
    ledger = Ledger()
    snaps = [
        Snap("w", "s1", 10, (Row(HERE, "BTC", 0.6, 101.0), Row(THERE, "BTC", 5.0))),
        Snap("w", "s2", 20, (Row(HERE, "BTC", 0.9, None),)),
        Snap("w", "s3", 30, (Row(THERE, "ETH", 1.0),)),
    ]
    adopted = adopt(ledger, snaps, HERE)
    assert ledger.holdings == {("w", "s1"): {(HERE, "BTC"): 0.6}, ("w", "s2"): {(HERE, "BTC"): 0.9}}
    assert ledger.marks == {(HERE, "BTC"): 101.0}
    assert adopted.owners == {("w", "s1"), ("w", "s2")}  # s3 holds nothing here
    assert adopted.as_of == {("w", "s1"): 10, ("w", "s2"): 20, ("w", "s3"): 30}


def test_reconciliation_reports_what_the_venue_holds_beyond_the_ledger() -> None:
    ledger = Ledger()
    ledger.set(("w", "s1"), (HERE, "BTC"), 0.6)
    ledger.set(("w", "s2"), (HERE, "BTC"), 0.9)
    ledger.set(("w", "s1"), (HERE, "ETH"), 2.0)
    ledger.set(("x", "s1"), (HERE, "SOL"), 4.0)  # another world's account
    held = {"BTC": 1.5 + 1e-12, "ETH": 1.5, "DOGE": 10.0}
    gaps = reconcile(ledger, "w", HERE, held)
    assert [(g.world, g.symbol) for g in gaps] == [("w", "DOGE"), ("w", "ETH")]
    assert [g.qty for g in gaps] == [pytest.approx(10.0), pytest.approx(-0.5)]
    assert reconcile(ledger, "w", HERE, {"BTC": 1.5, "ETH": 2.0}) == []
    (gone,) = reconcile(ledger, "x", HERE, {})
    assert (gone.symbol, gone.qty) == ("SOL", -4.0)  # the venue holds less than attributed


# -- unattributed quantities -------------------------------------------------------------------


def test_an_unattributed_gap_is_claimed_once_by_the_next_breakdown_of_its_key() -> None:
    ledger = Ledger()
    ledger.set(("w", "s1"), (HERE, "BTC"), 0.6)
    ledger.set(("w", "s2"), (HERE, "BTC"), 0.9)
    waiting = Unattributed()
    (gap,) = reconcile(ledger, "w", HERE, {"BTC": 2.0})
    waiting.found(gap)
    leg = intent()  # breakdown -0.2 / -0.3: s1 takes 40 %, s2 60 %
    assert waiting.claim(ledger, HERE, "w", intent(symbol="ETH")) == []  # not that key
    assert waiting.claim(ledger, HERE, "w", leg) == [("w", "s1"), ("w", "s2")]
    assert ledger.qty(("w", "s1"), (HERE, "BTC")) == pytest.approx(0.8)
    assert ledger.qty(("w", "s2"), (HERE, "BTC")) == pytest.approx(1.2)
    assert ledger.total(["w"], (HERE, "BTC")) == pytest.approx(2.0)  # the venue's, again
    assert waiting.claim(ledger, HERE, "w", leg) == []  # claimed once
    assert waiting.gaps == {}


def test_fills_no_plan_explains_wait_with_the_gaps() -> None:
    ledger, waiting = Ledger(), Unattributed()
    waiting.add("shared", "BTC", 0.25)
    waiting.add("shared", "BTC", 0.25)
    breakdown = [
        {"world_id": "a", "strategy_id": "s1", "delta_qty": 1.0},
        {"world_id": "b", "strategy_id": "s1", "delta_qty": 3.0},
    ]
    leg = intent(world_id=None, strategy_breakdown=breakdown, delta_qty=4.0, reduce_only=False)
    assert waiting.claim(ledger, HERE, "shared", leg) == [("a", "s1"), ("b", "s1")]
    assert ledger.qty(("a", "s1"), (HERE, "BTC")) == pytest.approx(0.125)
    assert ledger.qty(("b", "s1"), (HERE, "BTC")) == pytest.approx(0.375)


# -- what a key does next ----------------------------------------------------------------------


def key_target(*legs: DeltaIntent) -> KeyTarget:
    book = TargetBook()
    for leg in legs:
        book.offer(leg, 0)
    (target,) = book.keys.values()
    return target


def test_the_due_leg_waits_for_its_close_and_an_expired_plan_stops() -> None:
    close = intent(leg="close", target_qty=0.0, delta_qty=-1.5)
    open_ = intent(
        leg="open",
        current_qty=0.0,
        target_qty=-2.0,
        delta_qty=-2.0,
        reduce_only=False,
        depends_on="missing-close",
    )
    assert due_leg(key_target(open_), 2_000) is None  # its close leg has not arrived
    target = key_target(close)
    due = due_leg(target, 2_000)
    assert due is not None
    assert (due.leg, due.expired) == (close, False)
    late = due_leg(target, 10_000)
    assert late is not None
    assert late.expired
    expire(target)
    assert target.done
    assert due_leg(target, 2_000) is None


def test_the_next_step_is_the_residual_order_until_reached_or_given_up() -> None:
    rules = VenueRules(lot_size=0.1)
    leg = intent()  # target 1.0
    step = next_step(leg, position=1.5, rules=rules, attempts=0, max_retries=2)
    assert isinstance(step, Place)
    assert (step.request.qty, step.request.reduce_only, step.attempt) == (-0.5, True, 0)
    retry = next_step(leg, position=1.3, rules=rules, attempts=2, max_retries=2)
    assert isinstance(retry, Place)
    assert retry.request.qty == pytest.approx(-0.3)
    assert retry.attempt == 2
    assert next_step(leg, position=1.3, rules=rules, attempts=3, max_retries=2) == GiveUp(3)
    assert next_step(leg, position=1.05, rules=rules, attempts=0, max_retries=2) == Reached()
    # reached wins over giving up: nothing is left to retry
    assert next_step(leg, position=1.0, rules=rules, attempts=99, max_retries=2) == Reached()


def test_an_intent_is_finished_once_reached_superseded_or_expired() -> None:
    book = TargetBook()
    first = intent()
    eth = intent(symbol="ETH")
    book.offer(first, 2_000)
    book.offer(eth, 2_000)
    assert not book.finished(first, 2_000)
    assert book.finished(first, 10_000)  # expired
    reach(book, eth)
    assert book.finished(eth, 2_000)
    book.offer(intent(plan_id="p2", created_at=1_500), 2_000)
    assert book.finished(first, 2_000)  # its key follows p2 now
    assert book.finished(intent(symbol="SOL"), 2_000)  # a key the book does not follow
