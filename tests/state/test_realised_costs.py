"""Realised cost per plan from the nodes' fill reports: the latest report of each node run
counts once, summed over node runs, whatever the order or repetition of delivery."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.messages import PlanFills
from service.state.read_model import ReadModel
from service.state.realised import RealisedCosts
from tests.state.test_node_board import beat


def report(
    node: str = "n1",
    plan: str = "p1",
    *,
    fills: int = 1,
    fees: float = 1.0,
    slippage: float = 0.5,
    notional: float = 1_000.0,
    session: str = "s1",
    sent_at: int = 10_000,
) -> PlanFills:
    return PlanFills(
        node_id=node,
        session=session,
        venue="paper",
        plan_id=plan,
        sent_at=sent_at,
        fills=fills,
        filled_notional=notional,
        fees=fees,
        slippage=slippage,
    )


def record(r: PlanFills) -> tuple[bytes, bytes]:
    return r.key.encode(), r.model_dump_json().encode()


def test_a_plan_nobody_reported_has_no_realised_cost() -> None:
    assert RealisedCosts().of("p1") is None


def test_a_repeated_or_late_report_counts_once() -> None:
    model = ReadModel()
    first = report(fills=1, fees=1.0, slippage=0.5, notional=1_000.0, sent_at=10_000)
    second = report(fills=2, fees=3.0, slippage=-0.25, notional=3_000.0, sent_at=11_000)
    for r in (first, second, second, first):  # replayed, and the older one delivered late
        model.apply_node(*record(r))
    cost = model.realised.of("p1")
    assert cost is not None
    assert (cost.fees, cost.slippage, cost.total) == (3.0, -0.25, 2.75)
    assert (cost.filled_notional, cost.fills, cost.nodes) == (3_000.0, 2, 1)


def test_nodes_and_runs_of_a_node_add_up_and_plans_stay_apart() -> None:
    model = ReadModel()
    for r in (
        report("okx-node", fees=2.0, slippage=0.0, notional=2_000.0),
        report("binance-node", fees=1.5, slippage=1.0, notional=1_500.0),
        # the same node restarted: its new run counts from zero, beside its old run's totals
        report("binance-node", session="s2", fees=0.5, slippage=0.0, notional=500.0),
        report("okx-node", plan="p2", fees=9.0),
    ):
        model.apply_node(*record(r))
    cost = model.realised.of("p1")
    assert cost is not None
    assert (cost.fees, cost.slippage, cost.total, cost.nodes) == (4.0, 1.0, 5.0, 3)
    assert cost.filled_notional == 4_000.0
    other = model.realised.of("p2")
    assert other is not None
    assert other.fees == 9.0


def test_fill_reports_and_heartbeats_share_the_topic_and_tombstones_reach_either() -> None:
    model = ReadModel()
    r = report()
    model.apply_node(b"n1", beat())
    model.apply_node(*record(r))
    assert [v.node_id for v in model.nodes.views(10_000)] == ["n1"]
    assert model.realised.of("p1") is not None
    model.apply_node(r.key.encode(), None)
    assert model.realised.of("p1") is None
    assert [v.node_id for v in model.nodes.views(10_000)] == ["n1"]
    model.apply_node(b"n1", None)
    assert model.nodes.views(10_000) == []


@pytest.mark.parametrize(
    "change",
    [{"fills": -1}, {"fees": None}, {"fees": 1e300}, {"plan_id": "a|b"}, {"unknown": 1}],
)
def test_a_bad_fill_report_is_refused(change: dict[str, Any]) -> None:
    body = {**orjson.loads(report().model_dump_json()), **change}
    with pytest.raises(ValueError):  # noqa: PT011 -- the service logs and skips it
        ReadModel().apply_node(b"k", orjson.dumps(body))


# cumulative reports of (node run, plan): (fills, fees) grow together
runs = st.lists(
    st.tuples(
        st.sampled_from(["n1", "n2"]), st.sampled_from(["s1", "s2"]), st.sampled_from(["p1", "p2"])
    ),
    min_size=1,
    max_size=6,
    unique=True,
)


@given(runs, st.data())
def test_any_delivery_order_with_repeats_gives_the_sum_of_the_latest(
    reporters: list[tuple[str, str, str]], data: st.DataObject
) -> None:
    reports = []
    latest: dict[str, float] = {}
    for node, session, plan in reporters:
        steps = data.draw(st.integers(1, 4))
        for fills in range(1, steps + 1):
            fee = round(0.25 * fills, 2)
            reports.append(
                report(node, plan, session=session, fills=fills, fees=fee, sent_at=fills)
            )
        latest[plan] = latest.get(plan, 0.0) + round(0.25 * steps, 2)
    delivered = data.draw(st.permutations(reports + data.draw(st.lists(st.sampled_from(reports)))))
    costs = RealisedCosts()
    for r in delivered:
        costs.apply(r.key, r)
    for plan, fees in latest.items():
        cost = costs.of(plan)
        assert cost is not None
        assert cost.fees == pytest.approx(fees)
