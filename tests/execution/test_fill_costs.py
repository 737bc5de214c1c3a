"""A node's fill costs: fees as the venue charged them, slippage against the intent's mark,
per plan; the paper venue's fee and slippage; the desk costs each fill to its plan."""

from __future__ import annotations

import asyncio

import pytest

from consumers.execution_node import ExecutionNode, NodeOptions
from consumers.venues import PaperConfig, PaperVenue
from consumers.venues.base import Order, OrderStatus
from service.execution import FillCosts


def test_fills_add_fees_and_slippage_against_the_mark_per_plan() -> None:
    costs = FillCosts()
    costs.record("p1", qty=2.0, price=101.0, mark=100.0, fee=0.2)  # bought 1 above the mark
    costs.record("p1", qty=-1.0, price=99.0, mark=100.0, fee=0.1)  # sold 1 below it
    costs.record("p2", qty=-1.0, price=101.0, mark=100.0, fee=0.0)  # sold 1 above: a gain
    assert costs.take_dirty().keys() == {"p1", "p2"}
    p1, p2 = costs.plans["p1"], costs.plans["p2"]
    assert (p1.fills, p1.fees, p1.slippage, p1.filled_notional) == pytest.approx(
        (2, 0.3, 3.0, 301.0)
    )
    assert p2.slippage == -1.0
    assert costs.take_dirty() == {}
    costs.record("p2", qty=1.0, price=100.0, mark=100.0, fee=0.05)
    assert list(costs.take_dirty()) == ["p2"]


def test_the_least_recently_filled_plans_go_past_the_bound() -> None:
    costs = FillCosts(kept=2)
    for plan in ("p1", "p2", "p1", "p3"):
        costs.record(plan, qty=1.0, price=1.0, mark=1.0, fee=0.0)
    assert list(costs.plans) == ["p1", "p3"]
    assert set(costs.take_dirty()) == {"p1", "p3"}


@pytest.mark.parametrize("field", ["fee_bps", "slippage_bps"])
@pytest.mark.parametrize("value", [-1.0, float("nan"), 10_001.0])
def test_paper_fee_and_slippage_must_be_basis_points(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        PaperConfig(**{field: value})  # type: ignore[arg-type]


async def test_the_paper_venue_charges_its_fee_on_a_fill_worse_by_its_slippage() -> None:
    venue = PaperVenue("paper", PaperConfig(fee_bps=10, slippage_bps=5))
    venue.seed_position("w", "BTC", 1.0)
    await venue.place(Order("o1", "w", "BTC", -0.5, True, 100.0))
    await venue.place(Order("o2", "w", "BTC", 2.0, False, 100.0))
    updates = [await asyncio.wait_for(venue.updates().get(), 5) for _ in range(2)]
    by_id = {u.order.order_id: u for u in updates}
    sell, buy = by_id["o1"], by_id["o2"]
    assert sell.status is OrderStatus.FILLED
    assert buy.status is OrderStatus.FILLED
    assert sell.price == pytest.approx(99.95)
    assert sell.fee == pytest.approx(0.5 * 99.95 * 0.001)
    assert buy.price == pytest.approx(100.05)
    assert buy.fee == pytest.approx(2.0 * 100.05 * 0.001)
    await venue.close()


def test_a_node_reports_each_plan_filled_since_its_last_report_once() -> None:
    node = ExecutionNode(
        "127.0.0.1:1",  # never started: reports are built, not sent
        snapshots_topic="snapshots",
        intents_topic="intents",
        venue=PaperVenue("paper"),
        options=NodeOptions(group_id="g", nodes_topic="nodes", node_id="paper-1"),
        clock=lambda: 5_000,
    )
    node.costs.record("p1", qty=1.0, price=101.0, mark=100.0, fee=0.1)
    node.costs.record("p2", qty=1.0, price=100.0, mark=100.0, fee=1e300)  # no report takes it
    (report,) = node.fill_reports()
    assert (report.node_id, report.session, report.plan_id) == ("paper-1", node.session, "p1")
    assert (report.fills, report.fees, report.slippage, report.sent_at) == (1, 0.1, 1.0, 5_000)
    assert report.key == f"paper-1|{node.session}|p1"
    assert node.fill_reports() == []
