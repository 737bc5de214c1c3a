"""What a node publishes and commits, as pure functions: its snapshot of a strategy (other
venues' rows kept, its own from the ledger, time moving forward) and its commit offsets
(never past an intent still in hand)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from service.execution import Ledger
from service.execution.outgoing import next_as_of, node_snapshot
from service.execution.pending import PendingIntents
from service.messages import DeltaIntent

from .test_execution_domain import intent


@dataclass
class Row:
    symbol: str
    venue: str | None
    qty: float
    mark: float | None


@dataclass
class Held:
    world_id: str
    strategy_id: str
    as_of: int
    rows: list[Row] = field(default_factory=list)

    def positions(self) -> list[Row]:
        return self.rows


def test_snapshot_keeps_other_venues_and_replaces_its_own_from_the_ledger() -> None:
    held = Held("w", "s1", 500, [Row("BTC", "paper", 9.0, 100.0), Row("ETH", "other", 2.0, 10.0)])
    ledger = Ledger()
    ledger.set(("w", "s1"), ("paper", "BTC"), 1.5)
    ledger.set(("w", "s1"), ("paper", "SOL"), 0.0)  # flat: no row
    ledger.marks[("paper", "BTC")] = 101.0
    out = node_snapshot(("w", "s1"), held, ledger, "paper", 600, "plan-1")
    assert out == {
        "world_id": "w",
        "strategy_id": "s1",
        "as_of": 600,
        "positions": [
            {"symbol": "ETH", "venue": "other", "qty": 2.0, "mark": 10.0},
            {"symbol": "BTC", "venue": "paper", "qty": 1.5, "mark": 101.0},
        ],
        "converged_plan_id": "plan-1",
    }


def test_snapshot_of_a_strategy_the_topic_never_had() -> None:
    ledger = Ledger()
    ledger.set(("w", "s2"), ("paper", "BTC"), -1.0)
    out = node_snapshot(("w", "s2"), None, ledger, "paper", 7, None)
    assert out["positions"] == [{"symbol": "BTC", "venue": "paper", "qty": -1.0, "mark": None}]


@given(
    now=st.integers(0, 10**13),
    last=st.integers(0, 10**13),
    topic=st.none() | st.integers(0, 10**13),
)
def test_as_of_moves_past_what_was_published_and_what_the_topic_holds(
    now: int, last: int, topic: int | None
) -> None:
    held = None if topic is None else Held("w", "s", topic)
    as_of = next_as_of(now, last, held)
    assert as_of >= now
    assert as_of > last
    assert topic is None or as_of > topic


def _intent(n: int) -> DeltaIntent:
    return intent(intent_id=f"i{n}")


def test_commit_stops_at_the_oldest_intent_in_hand() -> None:
    pending = PendingIntents()
    for offset in (3, 5, 9):
        pending.add("p0", offset, _intent(offset))
    done = {"i3", "i9"}
    assert pending.commit_offset("p0", 12, lambda i: i.intent_id in done) == 5
    done.add("i5")
    assert pending.commit_offset("p0", 12, lambda i: i.intent_id in done) == 12
    assert pending.commit_offset("p1", 4, lambda i: True) == 4  # nothing held there


@given(st.lists(st.tuples(st.integers(0, 50), st.booleans()), max_size=30))
def test_commit_never_passes_an_unfinished_intent(held: list[tuple[int, bool]]) -> None:
    pending = PendingIntents()
    finished_ids = set()
    for offset, finished in held:
        pending.add("p", offset, _intent(offset))
        if finished:
            finished_ids.add(f"i{offset}")
        else:
            finished_ids.discard(f"i{offset}")
    unfinished = {o for o, _ in held if f"i{o}" not in finished_ids}
    committed = pending.commit_offset("p", 51, lambda i: i.intent_id in finished_ids)
    assert committed == (min(unfinished) if unfinished else 51)
