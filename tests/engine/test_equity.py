"""The portfolio equity that live policies weigh worlds against: positions times marks plus
cash from the snapshots, else (and saying why) the last allocation event's."""

from __future__ import annotations

import pytest

from service.engine.equity import portfolio_equity
from service.live.config import PolicySettings
from service.live.runner import PolicyRunner
from tests.engine.test_engine import Harness, event
from tests.engine.test_policy_engine import snap

T = 1_700_000_000_000


def seeded(allocs: dict[str, float], equity: float = 1_000.0) -> Harness:
    h = Harness()
    h.send(event(world_alloc_before=allocs, world_alloc_after=allocs, total_equity=equity), T)
    return h


def test_positions_times_marks_plus_cash_over_the_portfolio_worlds() -> None:
    h = seeded({"a": 0.3, "b": 0.5})
    # world a: X netted over two strategies (3 - 1) at its latest mark (110), 50 in cash
    h.snapshots.apply(snap("s1", [("X", 3.0, 100.0)], as_of=T - 10, world="a", cash=50.0))
    h.snapshots.apply(snap("s2", [("X", -1.0, 110.0)], as_of=T - 5, world="a"))
    # world b: short Y (a short counts against equity) and cash
    h.snapshots.apply(snap("t1", [("Y", -2.0, 25.0)], as_of=T - 5, world="b", cash=600.0))
    # a world of another portfolio (no state here) does not count
    h.snapshots.apply(snap("u1", [("X", 9.0, 100.0)], as_of=T - 5, world="elsewhere"))
    equity = portfolio_equity(h.state, h.snapshots, "default")
    assert equity.source == "measured"
    assert equity.value == equity.measured == pytest.approx(2 * 110 + 50 - 50 + 600)
    assert equity.detail == ""
    assert equity.describe() == "equity 820 (measured)"


def test_incomplete_measures_fall_back_to_the_event_equity_and_say_why() -> None:
    h = seeded({"a": 0.5, "b": 0.5})
    h.snapshots.apply(snap("s1", [("X", 1.0, 100.0)], as_of=T, world="a"))
    no_snapshot = portfolio_equity(h.state, h.snapshots, "default")
    assert (no_snapshot.value, no_snapshot.source, no_snapshot.measured) == (1e3, "event", None)
    assert no_snapshot.detail == "not measured: world b has no snapshot"
    h.snapshots.apply(snap("t1", [("Y", 2.0, None)], as_of=T, world="b"))
    unpriced = portfolio_equity(h.state, h.snapshots, "default")
    assert (unpriced.value, unpriced.source) == (1e3, "event")
    assert unpriced.detail == "not measured: world b holds v:Y without a mark"
    assert "(event: not measured: world b holds v:Y" in unpriced.describe()
    h.snapshots.apply(snap("t1", [("Y", 2.0, 50.0)], as_of=T + 1, world="b"))
    complete = portfolio_equity(h.state, h.snapshots, "default")
    assert (complete.value, complete.source) == (200.0, "measured")


def test_a_world_without_allocation_or_snapshot_counts_for_nothing() -> None:
    h = seeded({"a": 0.5, "b": 0.0})
    h.snapshots.apply(snap("s1", [("X", 1.0, 100.0)], as_of=T, world="a"))
    equity = portfolio_equity(h.state, h.snapshots, "default")
    assert (equity.value, equity.source) == (100.0, "measured")


def test_a_measure_that_is_not_positive_or_an_unknown_equity() -> None:
    h = seeded({"a": 0.5})
    h.snapshots.apply(snap("s1", [("X", -1.0, 100.0)], as_of=T, world="a", cash=40.0))
    short = portfolio_equity(h.state, h.snapshots, "default")
    assert (short.value, short.source, short.measured) == (1e3, "event", -60.0)
    assert short.detail == "measured equity is -60, not positive"
    unknown = portfolio_equity(h.state, h.snapshots, "nobody")
    assert (unknown.value, unknown.source) == (0.0, "none")
    assert (
        unknown.detail == "measured equity is 0, not positive; no allocation event gave an equity"
    )


def test_a_market_move_that_lifts_every_world_together_leaves_each_at_its_allocation() -> None:
    """The acceptance of issue 16, item 4: against the event's equity, which stands still,
    both worlds would look 50 % overweight after the market rises 50 %."""
    h = seeded({"a": 0.6, "b": 0.4})
    rules = [
        {
            "name": f"keep-{w}",
            "worlds": [w],
            "trigger": {"kind": "band", "mode": "absolute", "threshold": 0.02},
            "target": {"kind": "allocation"},
        }
        for w in "ab"
    ]
    runner = PolicyRunner(
        PolicySettings.model_validate({"enabled": True, "rules": rules}), h.engine
    )

    def market(level: float, at: int) -> dict[str, tuple[str, dict[str, float]]]:
        h.snapshots.apply(snap("s1", [("X", 6.0, 100.0 * level)], as_of=at, world="a"))
        h.snapshots.apply(snap("t1", [("Y", 8.0, 50.0 * level)], as_of=at, world="b"))
        found = runner.evaluate(at, lambda _: True)
        return {e.world_id: (e.outcome, e.event.measured if e.event else {}) for e in found}

    assert market(1.0, T + 1) == {"a": ("in_band", {}), "b": ("in_band", {})}
    assert market(1.5, T + 2) == {"a": ("in_band", {}), "b": ("in_band", {})}
    assert h.engine.equity("default").value == pytest.approx(1_500.0)
    # one world moving alone does drift: X doubles, Y stays
    h.snapshots.apply(snap("s1", [("X", 6.0, 200.0)], as_of=T + 3, world="a"))
    h.snapshots.apply(snap("t1", [("Y", 8.0, 50.0)], as_of=T + 3, world="b"))
    moved = {e.world_id: e for e in runner.evaluate(T + 3, lambda _: True)}
    assert moved["a"].outcome == moved["b"].outcome == "triggered"
    assert moved["a"].event is not None
    assert moved["a"].event.measured == pytest.approx({"world": 1_200 / 1_600})
