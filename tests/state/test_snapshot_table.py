"""The snapshot table's assembled position tables: kept between plans, never stale.

Whatever snapshots arrive, are deleted or are warmed in between, ``positions(worlds)`` equals
a table built from scratch from the snapshots the table holds now.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.messages import PositionSnapshot
from service.planner import PositionTable
from service.state.snapshots import TABLES_KEPT, SnapshotTable
from tests.examples import examples


class Record(NamedTuple):
    key: bytes | None
    value: bytes | None


WORLDS = ("a", "b", "c")
STRATEGIES = ("s1", "s2", "s3")
SYMBOLS = ("BTC", "ETH", "SOL", "XRP")


def snap(world: str, strategy: str, as_of: int, rows: list[tuple[str | None, str, float]]) -> Any:
    return PositionSnapshot.model_validate(
        {
            "world_id": world,
            "strategy_id": strategy,
            "as_of": as_of,
            "positions": [
                {"venue": v, "symbol": s, "qty": q, "mark": 10.0 + i}
                for i, (v, s, q) in enumerate(rows)
            ],
        }
    )


def same(a: PositionTable, b: PositionTable) -> bool:
    labels = ("worlds", "strategies", "venues", "symbols")
    arrays = ("world", "strategy", "venue", "symbol", "qty", "mark", "recency")
    return all(getattr(a, n) == getattr(b, n) for n in labels) and all(
        np.array_equal(getattr(a, n), getattr(b, n), equal_nan=True) for n in arrays
    )


def fresh(table: SnapshotTable, worlds: tuple[str, ...] | None) -> PositionTable:
    held = table.snapshots(worlds)
    return PositionTable.from_snapshots(PositionSnapshot.model_validate_json(s.data) for s in held)


rows = st.lists(
    st.tuples(
        st.sampled_from([None, "binance", "okx"]),
        st.sampled_from(SYMBOLS),
        st.floats(-100, 100, allow_nan=False),
    ),
    max_size=4,
    unique_by=lambda r: (r[0], r[1]),
)
operation = st.one_of(
    st.tuples(
        st.just("snapshot"),
        st.sampled_from(WORLDS),
        st.sampled_from(STRATEGIES),
        rows,
        st.booleans(),  # through ingest (the topic's path) or apply
    ),
    st.tuples(st.just("delete"), st.sampled_from(WORLDS), st.sampled_from(STRATEGIES)),
    st.tuples(st.just("warm")),
    st.tuples(
        st.just("plan"),
        st.one_of(st.none(), st.lists(st.sampled_from(WORLDS), min_size=1, max_size=3)),
    ),
)


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(operation, max_size=30))
def test_a_kept_table_is_always_the_table_of_the_snapshots_held_now(ops: list[Any]) -> None:
    table = SnapshotTable()
    clock = 0
    for op in ops:
        if op[0] == "snapshot":
            clock += 1
            snapshot = snap(op[1], op[2], clock, op[3])
            if op[4]:
                record = Record(None, snapshot.model_dump_json().encode())
                assert table.ingest([record], lambda r, e: pytest.fail(str(e))) == 1
            else:
                table.apply(snapshot)
        elif op[0] == "delete":
            table.delete(op[1], op[2])
        elif op[0] == "warm":
            table.warm()
        else:
            worlds = None if op[1] is None else tuple(sorted(set(op[1])))
            assert same(table.positions(op[1]), fresh(table, worlds)), op


def test_a_table_is_reused_until_its_worlds_change_and_warm_rebuilds_it() -> None:
    table = SnapshotTable()
    table.apply(snap("a", "s1", 1, [("binance", "BTC", 1.0)]))
    table.apply(snap("b", "s1", 1, [("binance", "ETH", 2.0)]))
    first = table.positions(["a"])
    assert table.positions(["a"]) is first
    table.apply(snap("b", "s1", 2, [("binance", "ETH", 3.0)]))  # another world
    assert table.positions(["a"]) is first
    assert table.warm() == []
    table.apply(snap("a", "s2", 2, [("okx", "BTC", 5.0)]))
    (rebuilt,) = table.warm()  # rebuilt ahead of the next plan
    warmed = table.positions(["a"])
    assert warmed is rebuilt
    assert warmed is not first
    assert warmed.strategies == (("a", "s1"), ("a", "s2"))
    assert table.positions(None).strategies == (("a", "s1"), ("a", "s2"), ("b", "s1"))
    table.delete("a", "s2")
    assert table.positions(["a"]).strategies == (("a", "s1"),)
    assert table.positions(None).strategies == (("a", "s1"), ("b", "s1"))
    table.apply(snap("a", "s1", 0, [("binance", "BTC", 9.0)]))  # stale: changes nothing
    assert table.warm() == []


def test_kept_tables_are_read_only_and_bounded() -> None:
    table = SnapshotTable()
    for i in range(TABLES_KEPT + 3):
        table.apply(snap(f"w{i}", "s", 1, [("binance", "BTC", float(i))]))
        table.positions([f"w{i}"])
    kept = table.positions(["w0"])  # the oldest was dropped; built again
    with pytest.raises(ValueError, match="read-only"):
        kept.qty[0] = 1.0
    assert len(table._tables) == TABLES_KEPT


class Timed(NamedTuple):
    key: bytes | None
    value: bytes | None
    timestamp: Any


MAX_AS_OF = 253_402_300_799_999  # the model's bound (year 9999)


@settings(max_examples=300, deadline=None)
@given(
    as_of=st.integers(0, MAX_AS_OF),
    published=st.one_of(st.none(), st.integers(-5, MAX_AS_OF)),
    now=st.integers(0, MAX_AS_OF),
    skew=st.integers(0, 10**9),
)
def test_a_snapshot_is_refused_exactly_when_dated_beyond_the_skew(
    as_of: int, published: int | None, now: int, skew: int
) -> None:
    """Ahead of the record's time (when it has one) or of now, whichever is earlier, by more
    than the skew: refused, naming the skew; otherwise applied."""
    reference = now if published is None or published < 0 else min(published, now)
    value = snap("a", "s1", as_of, [("v", "BTC", 1.0)]).model_dump_json().encode()
    refused: list[Exception] = []
    table = SnapshotTable()
    applied = table.ingest(
        [Timed(b"a|s1", value, published)],
        lambda r, e: refused.append(e),
        now_ms=now,
        max_skew_ms=skew,
    )
    if as_of > reference + skew:
        assert applied == 0
        assert len(refused) == 1
        assert f"beyond the allowed clock skew of {skew} ms" in str(refused[0])
    else:
        assert (applied, refused) == (1, [])
