"""The read model's execution nodes: the last heartbeat of each, alive within three intervals."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from service.state.read_model import ReadModel


def beat(node: str = "n1", sent_at: int = 10_000, **fields: Any) -> bytes:
    body: dict[str, Any] = {
        "node_id": node,
        "venue": "paper",
        "started_at": 1_000,
        "sent_at": sent_at,
        "interval_ms": 1_000,
        "ready": True,
        "plans": ["p1"],
        "counts": {"intents": 1, "orders": 2, "fills": 1, "rejections": 1, "plans_converged": 0},
        **fields,
    }
    return orjson.dumps(body)


def test_a_node_is_alive_for_three_intervals_after_its_last_heartbeat() -> None:
    model = ReadModel()
    model.apply_node(b"n1", beat())
    (view,) = model.nodes.views(10_000 + 2_999)
    assert (view.node_id, view.venue, view.alive, view.plans) == ("n1", "paper", True, ["p1"])
    assert view.last_heartbeat == 10_000
    assert not model.nodes.views(10_000 + 3_000)[0].alive


def test_a_stopped_node_is_not_alive_and_an_older_heartbeat_changes_nothing() -> None:
    model = ReadModel()
    model.apply_node(b"n1", beat(sent_at=12_000, stopped=True, ready=False, plans=[]))
    model.apply_node(b"n1", beat(sent_at=11_000))  # delivered late
    (view,) = model.nodes.views(12_001)
    assert (view.alive, view.stopped, view.last_heartbeat) == (False, True, 12_000)


def test_nodes_are_listed_by_venue_and_a_tombstone_forgets_one() -> None:
    model = ReadModel()
    model.apply_node(b"z", beat("z", venue="binance"))
    model.apply_node(b"a", beat("a"))
    model.apply_node(b"b", beat("b"))
    assert [v.node_id for v in model.nodes.views(10_000)] == ["z", "a", "b"]
    model.apply_node(b"a", None)
    assert [v.node_id for v in model.nodes.views(10_000)] == ["z", "b"]


@pytest.mark.parametrize("value", [b"{}", b"not json", beat(node="bad|id")])
def test_a_record_that_is_no_heartbeat_is_refused(value: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 -- the service logs and skips it
        ReadModel().apply_node(b"k", value)
