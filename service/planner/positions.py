"""Positions as columns: integer codes into sorted vocabularies plus numeric arrays.

The planner never loops over rows in Python; it works on these arrays. Vocabularies are kept
sorted (a null venue first), so code order is label order and every output comes out in a
canonical order whatever order the rows arrived in.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, Protocol, TypeVar, cast

import numpy as np
import numpy.typing as npt
import orjson

T = TypeVar("T")


class PositionLike(Protocol):
    """One position of a snapshot: what ``SnapshotColumns`` reads of it."""

    @property
    def venue(self) -> str | None: ...
    @property
    def symbol(self) -> str: ...
    @property
    def qty(self) -> float: ...
    @property
    def mark(self) -> float | None: ...


class SnapshotIdentity(Protocol):
    """What a table needs to know of a snapshot besides its rows."""

    @property
    def world_id(self) -> str: ...
    @property
    def strategy_id(self) -> str: ...
    @property
    def version(self) -> tuple[int, int]: ...


class SnapshotLike(SnapshotIdentity, Protocol):
    """A snapshot with its positions: a ``PositionSnapshot`` or a fast decoder's struct."""

    @property
    def positions(self) -> Sequence[PositionLike]: ...


IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def _venue_order(v: str | None) -> tuple[bool, str]:
    return (v is not None, v or "")


@dataclass(frozen=True)
class PositionTable:
    """Position rows of many (world, strategy) pairs, one array per column.

    ``strategy`` codes index ``strategies``, a sorted tuple of ``(world_id, strategy_id)``;
    ``world`` codes index ``worlds``. ``mark`` is NaN where a row has no mark. ``recency``
    orders rows by the time of their snapshot; among equals, the later row is the newer.
    """

    worlds: tuple[str, ...]
    strategies: tuple[tuple[str, str], ...]
    venues: tuple[str | None, ...]
    symbols: tuple[str, ...]
    world: IntArray
    strategy: IntArray
    venue: IntArray
    symbol: IntArray
    qty: FloatArray
    mark: FloatArray
    recency: IntArray

    def __len__(self) -> int:
        return int(self.qty.shape[0])

    @cached_property
    def strategy_slot(self) -> IntArray:
        """Per strategy code, its rank among its own world's strategies (codes are sorted by
        world, so a world's strategies are contiguous)."""
        if not self.strategies:
            return np.zeros(0, np.int64)
        world_of = np.array([w for w, _ in self.strategies], dtype=object)
        first = np.flatnonzero(np.r_[True, world_of[1:] != world_of[:-1]])
        starts = np.repeat(first, np.diff(np.r_[first, len(self.strategies)]))
        return np.arange(len(self.strategies), dtype=np.int64) - starts

    @cached_property
    def memo(self) -> dict[str, Any]:
        """Scratch space for values derived from this (immutable) table, such as lot arrays."""
        return {}

    @cached_property
    def world_strategies(self) -> dict[str, dict[str, int]]:
        """Per world, its strategies' codes by strategy id."""
        out: dict[str, dict[str, int]] = {}
        for code, (world_id, strategy_id) in enumerate(self.strategies):
            out.setdefault(world_id, {})[strategy_id] = code
        return out

    @cached_property
    def vocabulary_digest(self) -> bytes:
        """A digest of the vocabularies: codes mean the same labels iff digests match."""
        material = orjson.dumps([self.strategies, self.venues, self.symbols])
        return hashlib.sha256(material).digest()

    @cached_property
    def symbol_index(self) -> dict[str, int]:
        """Symbol to code."""
        return {s: i for i, s in enumerate(self.symbols)}

    @cached_property
    def venue_index(self) -> dict[str | None, int]:
        """Venue to code."""
        return {v: i for i, v in enumerate(self.venues)}

    @classmethod
    def empty(cls) -> PositionTable:
        return cls.from_columns(
            strategies=[], venues=[], symbols=[], strategy=[], venue=[], symbol=[], qty=[], mark=[]
        )

    @classmethod
    def from_columns(
        cls,
        *,
        strategies: Sequence[tuple[str, str]],
        venues: Sequence[str | None],
        symbols: Sequence[str],
        strategy: npt.ArrayLike,
        venue: npt.ArrayLike,
        symbol: npt.ArrayLike,
        qty: npt.ArrayLike,
        mark: npt.ArrayLike,
        recency: npt.ArrayLike | None = None,
    ) -> PositionTable:
        """Build from codes into (possibly unsorted) vocabularies; re-codes to sorted order."""
        strat = np.asarray(strategy, dtype=np.int64)
        ven = np.asarray(venue, dtype=np.int64)
        sym = np.asarray(symbol, dtype=np.int64)
        q = np.asarray(qty, dtype=np.float64)
        m = np.asarray(mark, dtype=np.float64)
        n = q.shape[0]
        rec = np.zeros(n, np.int64) if recency is None else np.asarray(recency, dtype=np.int64)
        for name, col in (("strategy", strat), ("venue", ven), ("symbol", sym), ("mark", m)):
            if col.shape != (n,):
                raise ValueError(f"column {name} has shape {col.shape}, expected ({n},)")
        if rec.shape != (n,):
            raise ValueError(f"column recency has shape {rec.shape}, expected ({n},)")
        if not np.isfinite(q).all():
            raise ValueError("qty: every quantity must be finite")
        if np.any(m <= 0):
            raise ValueError("mark: marks must be > 0 (use NaN for a missing mark)")
        m = np.where(np.isfinite(m), m, np.nan)

        strat_vocab, strat = _sorted_codes(list(strategies), strat, "strategy", key=None)
        venue_vocab, ven = _sorted_codes(list(venues), ven, "venue", key=_venue_order)
        symbol_vocab, sym = _sorted_codes(list(symbols), sym, "symbol", key=None)
        worlds = tuple(sorted({w for w, _ in strat_vocab}))
        world_index = {w: i for i, w in enumerate(worlds)}
        strat_world = np.fromiter(
            (world_index[w] for w, _ in strat_vocab), np.int64, len(strat_vocab)
        )
        world = strat_world[strat] if n else np.zeros(0, np.int64)
        return cls(
            worlds=worlds,
            strategies=tuple(strat_vocab),
            venues=tuple(venue_vocab),
            symbols=tuple(symbol_vocab),
            world=world,
            strategy=strat,
            venue=ven,
            symbol=sym,
            qty=q,
            mark=m,
            recency=rec,
        )

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[tuple[str, str, str | None, str, float, float | None, int]],
    ) -> PositionTable:
        """Build from ``(world_id, strategy_id, venue, symbol, qty, mark, recency)`` tuples."""
        strategies: dict[tuple[str, str], int] = {}
        venues: dict[str | None, int] = {}
        symbols: dict[str, int] = {}
        s_col: list[int] = []
        v_col: list[int] = []
        y_col: list[int] = []
        q_col: list[float] = []
        m_col: list[float] = []
        r_col: list[int] = []
        nan = float("nan")
        for world_id, strategy_id, venue, symbol, qty, mark, recency in rows:
            s_col.append(strategies.setdefault((world_id, strategy_id), len(strategies)))
            v_col.append(venues.setdefault(venue, len(venues)))
            y_col.append(symbols.setdefault(symbol, len(symbols)))
            q_col.append(qty)
            m_col.append(nan if mark is None else mark)
            r_col.append(recency)
        return cls.from_columns(
            strategies=list(strategies),
            venues=list(venues),
            symbols=list(symbols),
            strategy=s_col,
            venue=v_col,
            symbol=y_col,
            qty=q_col,
            mark=m_col,
            recency=r_col,
        )

    @classmethod
    def from_labels(
        cls,
        *,
        world_ids: Sequence[str],
        strategy_ids: Sequence[str],
        venues: Sequence[str | None],
        symbols: Sequence[str],
        qty: npt.ArrayLike,
        mark: npt.ArrayLike,
    ) -> PositionTable:
        """The table ``from_rows`` builds of the same rows (recency 0), from one sequence per
        column (``mark`` NaN where missing): labels are interned a whole column at a time,
        with no step per row in Python."""
        world_vocab, world_code = _intern(world_ids)
        strategy_vocab, strategy_code = _intern(strategy_ids)
        width = max(len(strategy_vocab), 1)
        pairs, strategy = np.unique(world_code * width + strategy_code, return_inverse=True)
        venue_vocab, venue = _intern(venues)
        symbol_vocab, symbol = _intern(symbols)
        return cls.from_columns(
            strategies=[
                (world_vocab[p // width], strategy_vocab[p % width]) for p in pairs.tolist()
            ],
            venues=venue_vocab,
            symbols=symbol_vocab,
            strategy=strategy.reshape(-1),
            venue=venue,
            symbol=symbol,
            qty=qty,
            mark=mark,
        )

    @classmethod
    def from_snapshots(cls, snapshots: Iterable[SnapshotLike]) -> PositionTable:
        """Build from snapshots, keeping only the newest per (world, strategy).

        A row's recency is the rank of its snapshot's ``(as_of, seq)`` among the snapshots,
        so the mark of a key comes from its most recent snapshot.
        """
        latest: dict[tuple[str, str], SnapshotLike] = {}
        for s in snapshots:
            held = latest.get((s.world_id, s.strategy_id))
            if held is None or s.version > held.version:
                latest[(s.world_id, s.strategy_id)] = s
        venues: Vocabulary[str | None] = Vocabulary()
        symbols: Vocabulary[str] = Vocabulary()
        pieces = [(s, SnapshotColumns.of(s.positions, venues, symbols)) for s in latest.values()]
        return cls.from_pieces(pieces, venues, symbols)

    @classmethod
    def from_pieces(
        cls,
        pieces: Iterable[tuple[SnapshotIdentity, SnapshotColumns]],
        venues: Vocabulary[str | None],
        symbols: Vocabulary[str],
    ) -> PositionTable:
        """Concatenate snapshots already in columns (one per (world, strategy)), whose codes
        are ids in ``venues`` and ``symbols``. Whole arrays only: no step per snapshot but
        taking its identity."""
        items = [(s, c) for s, c in pieces if c.qty.shape[0]]
        if not items:
            return cls.empty()
        ranks = {v: i for i, v in enumerate(sorted({s.version for s, _ in items}))}
        lengths = [c.qty.shape[0] for _, c in items]
        venue_labels, venue = _compact(np.concatenate([c.venue for _, c in items]), venues)
        symbol_labels, symbol = _compact(np.concatenate([c.symbol for _, c in items]), symbols)
        return cls.from_columns(
            strategies=[(s.world_id, s.strategy_id) for s, _ in items],
            venues=venue_labels,
            symbols=symbol_labels,
            strategy=np.repeat(np.arange(len(items), dtype=np.int64), lengths),
            venue=venue,
            symbol=symbol,
            qty=np.concatenate([c.qty for _, c in items]),
            mark=np.concatenate([c.mark for _, c in items]),
            recency=np.repeat(np.array([ranks[s.version] for s, _ in items], np.int64), lengths),
        )


class Vocabulary(Generic[T]):
    """Labels (venues or symbols) interned to dense ids, shared by the columns of many
    snapshots, so that putting snapshots together needs no lookup per row.

    Ids are never reused: a vocabulary grows with every label it has seen (instruments are a
    bounded set in practice).
    """

    def __init__(self) -> None:
        self.ids: dict[T, int] = {}
        self._labels: list[T] = []

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def labels(self) -> list[T]:
        """Labels by id."""
        if len(self._labels) < len(self.ids):
            self._labels.extend(itertools.islice(self.ids, len(self._labels), None))
        return self._labels


def _intern(labels: Sequence[T]) -> tuple[list[T], IntArray]:
    """The distinct labels in order of first appearance, and each label's index among them."""
    index = {label: i for i, label in enumerate(dict.fromkeys(labels))}
    return list(index), np.fromiter(map(index.__getitem__, labels), np.int64, len(labels))


def _compact(ids: IntArray, vocabulary: Vocabulary[T]) -> tuple[list[T], IntArray]:
    """The labels ``ids`` use (in id order) and the ids renumbered densely onto them."""
    present = np.zeros(len(vocabulary), np.bool_)
    present[ids] = True
    used = np.flatnonzero(present)
    renumber = np.cumsum(present, dtype=np.int64) - 1
    labels = vocabulary.labels
    return [labels[i] for i in used.tolist()], renumber[ids]


@dataclass(frozen=True)
class SnapshotColumns:
    """One snapshot's positions as columns, venues and symbols as ids of shared vocabularies;
    computed once per snapshot and reused by every plan that includes it."""

    venue: IntArray
    symbol: IntArray
    qty: FloatArray
    mark: FloatArray

    @classmethod
    def of(
        cls,
        rows: Sequence[PositionLike],
        venues: Vocabulary[str | None],
        symbols: Vocabulary[str],
    ) -> SnapshotColumns:
        """From a snapshot's positions, adding new labels to the vocabularies."""
        venue_ids, symbol_ids = venues.ids, symbols.ids
        n = len(rows)
        nan = float("nan")
        return cls(
            venue=np.fromiter(
                (venue_ids.setdefault(r.venue, len(venue_ids)) for r in rows), np.int64, n
            ),
            symbol=np.fromiter(
                (symbol_ids.setdefault(r.symbol, len(symbol_ids)) for r in rows), np.int64, n
            ),
            qty=np.fromiter((r.qty for r in rows), np.float64, n),
            mark=np.fromiter((nan if r.mark is None else r.mark for r in rows), np.float64, n),
        )


def _sorted_codes(
    vocab: list[T], codes: IntArray, name: str, key: Callable[[T], Any] | None
) -> tuple[list[T], IntArray]:
    """Return the vocabulary sorted and the codes mapped onto it."""
    if codes.size and (codes.min() < 0 or codes.max() >= len(vocab)):
        raise ValueError(f"{name}: code out of range of its vocabulary of {len(vocab)}")
    if len(set(vocab)) != len(vocab):
        raise ValueError(f"{name}: vocabulary has duplicates")
    sort_key: Callable[[T], Any] = key or (lambda v: v)
    order = sorted(range(len(vocab)), key=lambda i: cast(Any, sort_key(vocab[i])))
    if order == list(range(len(vocab))):
        return vocab, codes
    rank = np.empty(len(vocab), np.int64)
    rank[np.asarray(order, dtype=np.int64)] = np.arange(len(vocab))
    return [vocab[i] for i in order], rank[codes]
