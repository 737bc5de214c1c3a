"""Each traded key's ``strategy_breakdown``: which strategies' moves it nets (SPEC 3.4).

Two forms of the same content: dicts (``breakdown_dicts``, for ``Plan.record()``) and JSON
fragments (``breakdown_fragments``, for ``Plan.wire``, the form that is published), which a
test holds byte for byte to the dicts serialised.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import orjson

if TYPE_CHECKING:
    from .netting import NettedKeys
    from .positions import PositionTable

Json = dict[str, Any]

EMPTY_LIST = orjson.Fragment(b"[]")

LAYOUTS_KEPT = 8
"""Breakdown layouts kept per position table (one per set of worlds planned together)."""


def breakdown_fragments(
    table: PositionTable, view: NettedKeys, lo: int, hi: int, *, with_world: bool
) -> list[orjson.Fragment]:
    """``breakdown_dicts`` as JSON fragments, built without a Python step per entry.

    A key's breakdown is its entries' heads (``[{"strategy_id":"s1","delta_qty":`` or
    ``},{...``) with the numbers between them. The heads depend only on which strategies
    meet on which key, the same plan after plan on one position table, so they are laid
    out once (``_layout``); a plan writes all its numbers with one ``orjson.dumps`` of the
    array, drops them into the layout and joins each key's slice.
    """
    start = np.searchsorted(view.pair_key, np.arange(lo, hi + 1))
    first, last = int(start[0]), int(start[-1])
    if first == last:
        return [EMPTY_LIST] * (hi - lo)
    parts, spans = _layout(table, view.pair_strategy[first:last], start - first, with_world)
    parts = parts.copy()
    numbers = orjson.dumps(view.pair_delta[first:last], option=orjson.OPT_SERIALIZE_NUMPY)
    parts[1::2] = numbers[1:-1].split(b",")
    join = b"".join
    return [orjson.Fragment(join(parts[a:b]) + b"}]") if b > a else EMPTY_LIST for a, b in spans]


def _layout(
    table: PositionTable,
    strategy: npt.NDArray[np.int64],
    bounds: npt.NDArray[np.int64],
    with_world: bool,
) -> tuple[list[bytes], list[tuple[int, int]]]:
    """The breakdown entries' heads at even places, room for their numbers at odd ones,
    and each key's ``[a, b)`` in that list; kept on the table per distinct layout."""
    layouts: dict[Any, tuple[list[bytes], list[tuple[int, int]]]] = table.memo.setdefault(
        "breakdown layouts", {}
    )
    memo_key = (with_world, bounds.tobytes(), strategy.tobytes())
    found = layouts.get(memo_key)
    if found is None:
        heads = _heads(table, with_world)
        opens = np.zeros(strategy.shape[0], np.int64)
        edges = bounds.tolist()
        opens[[b for b in edges[:-1] if b < strategy.shape[0]]] = 1  # a key's first entry
        parts: list[bytes] = [b""] * (2 * strategy.shape[0])
        parts[0::2] = map(heads.__getitem__, (strategy * 2 + opens).tolist())
        spans = [(2 * a, 2 * b) for a, b in itertools.pairwise(edges)]
        if len(layouts) >= LAYOUTS_KEPT:
            layouts.clear()
        found = layouts[memo_key] = (parts, spans)
    return found


def _heads(table: PositionTable, with_world: bool) -> list[bytes]:
    """Per strategy code ``c``, a breakdown entry's start: at ``2c`` after another entry
    of its key, at ``2c + 1`` as the key's first. Made once per position table."""
    memo = table.memo
    found: list[bytes] | None = memo.get(f"breakdown heads {with_world}")
    if found is None:
        found = []
        for world_id, strategy_id in table.strategies:
            head = b'{"world_id":' + orjson.dumps(world_id) + b"," if with_world else b"{"
            head += b'"strategy_id":' + orjson.dumps(strategy_id) + b',"delta_qty":'
            found += (b"}," + head, b"[" + head)
        memo[f"breakdown heads {with_world}"] = found
    return found


def breakdown_dicts(
    table: PositionTable, view: NettedKeys, lo: int, hi: int, *, with_world: bool
) -> list[list[Json]]:
    """Per key in ``[lo, hi)``, the strategies' own deltas on it."""
    start = np.searchsorted(view.pair_key, np.arange(lo, hi + 1))
    strategies = table.strategies
    codes = view.pair_strategy.tolist()
    deltas = view.pair_delta.tolist()
    out: list[list[Json]] = []
    for a, b in zip(start[:-1].tolist(), start[1:].tolist(), strict=True):
        if with_world:
            items = [
                {
                    "world_id": strategies[codes[j]][0],
                    "strategy_id": strategies[codes[j]][1],
                    "delta_qty": deltas[j],
                }
                for j in range(a, b)
            ]
        else:  # keys of one world: the world is the key's, not repeated per strategy
            items = [
                {"strategy_id": strategies[codes[j]][1], "delta_qty": deltas[j]}
                for j in range(a, b)
            ]
        out.append(items)
    return out
