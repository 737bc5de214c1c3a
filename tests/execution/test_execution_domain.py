"""The execution node's pure parts: the target book, the residual order, fill attribution."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.execution import Ledger, Offer, TargetBook, VenueRules, next_order, to_lots, weights
from service.messages import DeltaIntent, StrategyDelta


def intent(**fields: Any) -> DeltaIntent:
    base: dict[str, Any] = {
        "intent_id": "i1",
        "plan_id": "p1",
        "event_id": "e1",
        "portfolio_id": "default",
        "world_id": "w",
        "venue": "paper",
        "symbol": "BTC",
        "current_qty": 1.0,
        "target_qty": 0.5,
        "delta_qty": -0.5,
        "mark": 100.0,
        "notional": 50.0,
        "reduce_only": True,
        "leg": "adjust",
        "strategy_breakdown": [{"strategy_id": "s1", "delta_qty": -0.5}],
        "created_at": 1_000,
        "expires_at": 10_000,
    }
    return DeltaIntent.model_validate({**base, **fields})


# -- the target book ---------------------------------------------------------------------------


def test_duplicates_expired_and_older_plans_change_nothing() -> None:
    book = TargetBook()
    assert book.offer(intent(), 2_000) is Offer.ACCEPTED
    assert book.offer(intent(), 2_000) is Offer.DUPLICATE
    assert book.offer(intent(intent_id="old", expires_at=1_500), 2_000) is Offer.EXPIRED
    newer = intent(intent_id="i2", plan_id="p2", created_at=1_500, target_qty=0.2)
    assert book.offer(newer, 2_000) is Offer.SUPERSEDED
    older = intent(intent_id="i0", plan_id="p0", created_at=900, target_qty=9.0)
    assert book.offer(older, 2_000) is Offer.STALE
    (target,) = book.keys.values()
    assert (target.plan_id, target.final.target_qty) == ("p2", 0.2)


plans = st.lists(
    st.tuples(st.integers(0, 5), st.sampled_from(["BTC", "ETH"]), st.floats(-5, 5)),
    min_size=1,
    max_size=8,
)


@given(plans, st.randoms(use_true_random=False))
def test_the_newest_plan_wins_whatever_the_arrival_order(
    items: list[tuple[int, str, float]], random: Any
) -> None:
    intents = [
        intent(
            intent_id=f"i{n}",
            plan_id=f"p{created}",
            created_at=1_000 + created,
            symbol=symbol,
            target_qty=qty,
        )
        for n, (created, symbol, qty) in enumerate(items)
    ]
    shuffled = list(intents)
    random.shuffle(shuffled)
    books = [TargetBook(), TargetBook()]
    for book, order in zip(books, (intents, shuffled), strict=True):
        for i in order:
            book.offer(i, 0)
    for symbol in {i.symbol for i in intents}:
        newest = max((i for i in intents if i.symbol == symbol), key=lambda i: i.created_at)
        for book in books:
            assert book.keys[("w", "paper", symbol)].plan_id == newest.plan_id


def test_an_open_leg_waits_for_its_close_leg() -> None:
    book = TargetBook()
    close = intent(intent_id="c", leg="close", target_qty=0.0, delta_qty=-1.0)
    open_ = intent(
        intent_id="o",
        leg="open",
        current_qty=0.0,
        target_qty=-2.0,
        delta_qty=-2.0,
        reduce_only=False,
        depends_on="c",
    )
    book.offer(open_, 0)  # arrives first
    (target,) = book.keys.values()
    assert target.active() is None  # its close leg is not known yet
    book.offer(close, 0)
    assert target.active() == close
    target.reached.add("c")
    assert target.active() == open_
    target.reached.add("o")
    assert target.done
    assert target.active() is None


# -- the residual order ------------------------------------------------------------------------

lots = st.one_of(st.none(), st.sampled_from([0.001, 0.01, 0.25, 1.0]))
quantities = st.floats(-50, 50, allow_nan=False).map(lambda x: round(x, 3))


@given(quantities, quantities, lots, st.booleans())
def test_orders_never_overshoot_and_reductions_never_cross_zero(
    position: float, target: float, lot: float | None, direct_flip: bool
) -> None:
    rules = VenueRules(lot_size=lot, direct_flip=direct_flip)
    order = next_order(target=target, position=position, mark=10.0, rules=rules)
    if order is None:
        # nothing tradable left: less than a lot to go (or nothing)
        assert abs(target - position) < (lot or 1e-9) + 1e-9 or position * target < 0
        return
    after = position + order.qty
    if order.reduce_only:
        assert abs(after) <= abs(position) + 1e-12
        assert after * position >= 0  # never through zero
    crosses = position * target < 0
    if crosses and not direct_flip:
        assert order.reduce_only
        assert after == 0
    else:
        # toward the target, never past it
        assert abs(target - after) <= abs(target - position) + 1e-12
        assert (target - after) * (target - position) >= -1e-9  # float noise of position + qty
    if lot is not None and not (order.reduce_only and after == 0):
        assert abs(order.qty / lot - round(order.qty / lot)) < 1e-6


def test_residual_below_minimums_is_done() -> None:
    rules = VenueRules(lot_size=0.1, min_notional=10.0)
    assert next_order(target=1.05, position=1.0, mark=100.0, rules=rules) is None  # < a lot
    assert next_order(target=1.1, position=1.0, mark=50.0, rules=rules) is None  # 5 < 10
    order = next_order(target=1.2, position=1.0, mark=100.0, rules=rules)
    assert order is not None
    assert order.qty == pytest.approx(0.2)
    assert not order.reduce_only
    assert to_lots(-0.37, VenueRules(lot_size=0.25)) == -0.25


# -- attribution -------------------------------------------------------------------------------


def test_fills_are_shared_by_the_breakdown_even_across_signs() -> None:
    shares = weights(
        "w",
        [
            StrategyDelta(strategy_id="s1", delta_qty=0.3),
            StrategyDelta(strategy_id="s2", delta_qty=-0.8),
        ],
    )
    assert shares == pytest.approx({("w", "s1"): -0.6, ("w", "s2"): 1.6})
    ledger = Ledger()
    ledger.set(("w", "s1"), ("v", "X"), 1.0)
    ledger.set(("w", "s2"), ("v", "X"), 2.0)
    ledger.attribute(("v", "X"), -0.25, shares)
    ledger.attribute(("v", "X"), -0.25, shares)
    assert ledger.qty(("w", "s1"), ("v", "X")) == pytest.approx(1.3)
    assert ledger.qty(("w", "s2"), ("v", "X")) == pytest.approx(1.2)


@given(
    st.dictionaries(
        st.sampled_from(["a", "b", "c", "d"]),
        st.floats(-10, 10, allow_nan=False).filter(lambda x: abs(x) > 1e-6),
        min_size=1,
    ),
    st.lists(st.floats(-5, 5, allow_nan=False), max_size=6),
)
def test_attributed_shares_add_up_to_the_fills(
    breakdown: dict[str, float], fills: list[float]
) -> None:
    shares = weights("w", [StrategyDelta(strategy_id=s, delta_qty=q) for s, q in breakdown.items()])
    assert math.fsum(shares.values()) == pytest.approx(1.0)
    ledger = Ledger()
    for fill in fills:
        ledger.attribute(("v", "X"), fill, shares)
    assert ledger.total(["w"], ("v", "X")) == pytest.approx(math.fsum(fills), abs=1e-9)


# -- slices ------------------------------------------------------------------------------------


def slices(count: int, start: float = 0.0, step: float = 1.0) -> list[DeltaIntent]:
    out = []
    for k in range(count):
        out.append(
            intent(
                intent_id=f"s{k}",
                current_qty=start + k * step,
                target_qty=start + (k + 1) * step,
                delta_qty=step,
                reduce_only=False,
                depends_on=f"s{k - 1}" if k else None,
                slice_index=k,
                slice_count=count,
            )
        )
    return out


@given(st.randoms(use_true_random=False))
def test_slices_are_worked_in_order_whatever_the_arrival_order(random: Any) -> None:
    book = TargetBook()
    parts = slices(4)
    arrival = list(parts)
    random.shuffle(arrival)
    for i in arrival[:-1]:
        book.offer(i, 2_000)
    (target,) = book.keys.values()
    missing = arrival[-1].slice_index
    assert missing is not None
    assert not target.complete
    for k in range(missing):  # slices before the missing one go, then the key waits for it
        leg = target.active()
        assert leg is not None
        assert leg.slice_index == k
        target.reached.add(leg.intent_id)
    assert target.active() is None
    assert not target.done
    book.offer(arrival[-1], 2_000)
    assert target.complete
    for k in range(missing, 4):
        leg = target.active()
        assert leg is not None
        assert leg.slice_index == k
        target.reached.add(leg.intent_id)
    assert target.active() is None
    assert target.done
    assert target.final.intent_id == "s3"


def test_a_slice_the_venue_has_gone_past_is_reached_not_traded_back() -> None:
    from service.execution import Place, Reached, next_step

    rules = VenueRules()
    first, _, last = slices(3, start=0.0, step=2.0)
    assert isinstance(
        next_step(first, position=4.0, rules=rules, attempts=0, max_retries=3), Reached
    )
    step = next_step(first, position=1.0, rules=rules, attempts=0, max_retries=3)
    assert isinstance(step, Place)
    assert step.request.qty == 1.0
    # the last slice is the leg's target: an overshoot is traded back, as for any leg
    back = next_step(last, position=7.0, rules=rules, attempts=0, max_retries=3)
    assert isinstance(back, Place)
    assert back.request.qty == -1.0
