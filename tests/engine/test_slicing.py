"""Slicing in the engine: a plan's legs above max_slice_notional published as slices, in
whole lots, chained in order, with the plan id, and the bytes of unsliced plans, unchanged."""

from __future__ import annotations

import itertools
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from service.engine import RebalanceEngine
from service.engine.options import PacingRules
from service.messages import DeltaIntent, allocation_event_adapter
from service.messages.plan import PlanRecord
from service.planner import PlannerOptions
from service.planner.intents import intents_from_record
from service.policies.pacing import slice_legs
from tests.engine.test_engine import event, published, snap
from tests.engine.test_pacing import Recorder
from tests.examples import examples

LOTS = (0.001, 0.01, 0.1, 0.25, 1.0, 5.0)


def lots_of(x: float, lot: float) -> Fraction:
    return Fraction(repr(x)) / Fraction(repr(lot))


def flip_legs(current: float, target: float) -> list[dict[str, object]]:
    return [
        {
            "intent_id": "c",
            "leg": "close",
            "current_qty": current,
            "target_qty": 0.0,
            "delta_qty": -current,
            "reduce_only": True,
            "depends_on": None,
        },
        {
            "intent_id": "o",
            "leg": "open",
            "current_qty": 0.0,
            "target_qty": target,
            "delta_qty": target,
            "reduce_only": False,
            "depends_on": "c",
        },
    ]


@given(
    close_lots=st.integers(1, 3_000),
    open_lots=st.integers(1, 3_000),
    lot=st.sampled_from(LOTS),
    mark=st.floats(0.5, 70_000),
    slice_lots=st.integers(1, 400),
)
@settings(max_examples=examples(200), deadline=None)
def test_sliced_legs_sum_to_each_leg_in_whole_lots_chained_in_order(
    close_lots: int, open_lots: int, lot: float, mark: float, slice_lots: int
) -> None:
    unit = Fraction(repr(lot))
    current, target = float(unit * close_lots), -float(unit * open_lots)
    cap = slice_lots * lot * mark * 1.0000001
    out = slice_legs(flip_legs(current, target), mark, cap, lot)
    for name, total in (("close", -close_lots), ("open", -open_lots)):
        legs = [leg for leg in out if leg["leg"] == name]
        counts = [lots_of(float(leg["delta_qty"]), lot) for leg in legs]  # type: ignore[arg-type]
        assert sum(counts) == total
        assert all(c.denominator == 1 for c in counts)
        assert all(abs(float(leg["delta_qty"])) * mark <= cap * (1 + 1e-9) for leg in legs)  # type: ignore[arg-type]
        if len(legs) > 1:
            assert [leg["slice_index"] for leg in legs] == list(range(len(legs)))
            assert {leg["slice_count"] for leg in legs} == {len(legs)}
    assert out[0]["current_qty"] == current
    assert out[-1]["target_qty"] == target
    for a, b in itertools.pairwise(out):  # each walks from where the one before ends
        assert b["depends_on"] == a["intent_id"]
        assert b["current_qty"] == a["target_qty"] or (a["leg"], b["leg"]) == ("close", "open")
    assert out[0]["depends_on"] is None
    assert len({leg["intent_id"] for leg in out}) == len(out)
    assert slice_legs(flip_legs(current, target), mark, cap, lot) == out


def test_a_leg_that_fits_or_cannot_be_cut_in_lots_stays_whole() -> None:
    legs = flip_legs(2.0, -3.0)
    assert slice_legs(legs, 100.0, 1_000.0) == legs
    assert slice_legs(legs, 100.0, 50.0, lot=1.0) == legs  # one lot is worth more


def started(max_slice: float | None, **planner: object) -> Recorder:
    r = Recorder(
        pacing=PacingRules(),
        max_slice_notional=max_slice,
        planner=PlannerOptions.model_validate(planner),
    )
    r.snapshots.apply(snap("s1", 120.0))
    return r


def test_a_large_intent_is_published_as_slices_of_the_same_plan() -> None:
    plain = started(None, lot_size_by_symbol={"X": 1.0})
    whole = plain.send(world_alloc_before={"a": 0.2}, world_alloc_after={"a": 0.5})
    r = started(5_000.0, lot_size_by_symbol={"X": 1.0})
    work = r.send(world_alloc_before={"a": 0.2}, world_alloc_after={"a": 0.5})
    (intent,) = whole.intents  # +180 at 100: 18,000
    slices = [DeltaIntent.model_validate(published(i)) for i in work.intents]
    assert [s.delta_qty for s in slices] == [45.0, 45.0, 45.0, 45.0]
    assert [s.slice_index for s in slices] == [0, 1, 2, 3]
    assert {s.slice_count for s in slices} == {4}
    assert [s.target_qty for s in slices] == [165.0, 210.0, 255.0, 300.0]
    assert slices[0].depends_on is None
    assert [s.depends_on for s in slices[1:]] == [s.intent_id for s in slices[:-1]]
    assert all(s.plan_id == intent["plan_id"] and s.notional == 4_500.0 for s in slices)
    record = work.records[0]
    assert record["plan_id"] == whole.records[0]["plan_id"]  # slicing leaves the id
    assert record["intent_ids"] == [s.intent_id for s in slices]
    (key,) = PlanRecord.model_validate(published(record)).per_world["a"].deltas
    assert [(leg.slice_index, leg.slice_count) for leg in key.legs] == [(k, 4) for k in range(4)]
    assert published(intents_from_record(record)) == published(work.intents)
    world = r.state.world("default", "a")
    assert world.in_flight is not None
    assert world.in_flight.plan_id == intent["plan_id"]


def test_slicing_on_leaves_an_intent_that_fits_byte_for_byte() -> None:
    a = started(None).send(world_alloc_before={"a": 0.2}, world_alloc_after={"a": 0.25})
    b = started(5_000.0).send(world_alloc_before={"a": 0.2}, world_alloc_after={"a": 0.25})
    assert published(a.intents) == published(b.intents)
    assert published(a.records) == published(b.records)
    assert "slice_index" not in b.intents[0]


def test_a_sliced_plan_resumed_after_a_crash_republishes_the_same_slices() -> None:
    r = started(5_000.0, lot_size_by_symbol={"X": 1.0})
    work = r.engine.on_event(event(world_alloc_before={"a": 0.2}, world_alloc_after={"a": 0.5}), 1)
    assert work.pending is not None
    r.write(*work.pending)
    heir = Recorder(r.log, max_slice_notional=5_000.0)
    resumed = RebalanceEngine.resume(heir.state.pending_plan("default"))
    assert published(resumed.intents) == published(work.intents)
    assert len(resumed.intents) == 4


def test_a_sliced_flip_opens_after_the_last_close_slice() -> None:
    r = started(5_000.0, lot_size_by_symbol={"X": 1.0})
    r.snapshots.apply(snap("s2", -30.0))  # the key nets 90 long; s1 out flips it to 30 short
    flip = allocation_event_adapter.validate_python(
        {
            "type": "world_allocations_changed",
            "event_id": "e1",
            "occurred_at": 1,
            "total_equity": 1_000_000.0,
            "world_alloc_before": {"a": 0.2},
            "world_alloc_after": {"a": 0.2},
            "strategy_alloc_before_total": {"a": {"s1": 0.1, "s2": 0.1}},
            "strategy_alloc_after_total": {"a": {"s1": 0.0}},
        }
    )
    work = r.run(r.engine.on_event(flip, 1))
    legs = [(i["leg"], i.get("slice_index"), i["delta_qty"]) for i in work.intents]
    assert legs == [("close", 0, -45.0), ("close", 1, -45.0), ("open", None, -30.0)]
    assert work.intents[2]["depends_on"] == work.intents[1]["intent_id"]
    assert work.intents[1]["depends_on"] == work.intents[0]["intent_id"]
