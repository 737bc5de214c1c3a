"""A portfolio's equity as the market has it now: the snapshots' positions times marks, plus cash.

Live policies weigh worlds against this, not against the ``total_equity`` of the last
allocation event, which stands still while the market moves: when every world rises
together, each would look overweight against an equity that has not moved. An allocation
event's ``total_equity`` still governs the explicit moves it asks for.

What is measured, precisely: the portfolio's worlds are the worlds its state knows
(``AllocationState.portfolio_worlds``). Over every snapshot of those worlds, positions are
netted per ``(world, venue, symbol)`` and valued at the key's latest mark in the world (as
``policies.measure`` values one world), and every snapshot's ``cash`` is added. The figure is
used when it is complete and positive. It is incomplete when a world with a positive
allocation has no snapshot, or a world holds a key (non-zero quantity) that no snapshot of
the world gives a mark for; then, or when it is not positive, the event's equity is used
instead (``source = "event"``) and ``detail`` says why. A world without allocation and without
a snapshot counts for nothing. Snapshot age is not judged here: the runner refuses to evaluate
a world whose own snapshots are stale, and every other world counts at its latest snapshot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..planner.netting import exact_sums, group, latest_mark
from ..policies.measure import label
from ..state.allocations import AllocationState
from ..state.snapshots import SnapshotTable

EquitySource = Literal["measured", "event", "none"]


@dataclass(frozen=True)
class Equity:
    """What a portfolio's worlds are weighed against, and where the figure comes from."""

    value: float
    """The figure to divide by: measured, else the event's, else 0.0 (``none``)."""
    source: EquitySource
    measured: float | None = None
    """The snapshots' figure when it is complete (even when not positive), else None."""
    detail: str = ""
    """Why the measured figure was not used (empty when it was)."""

    def describe(self) -> str:
        """``equity 1.06e+06 (measured)`` or ``... (event: why)``, for evaluations."""
        if self.source == "measured":
            return f"equity {self.value:.12g} (measured)"
        return f"equity {self.value:.12g} ({self.source}: {self.detail})"


def _flaw(total: float, missing: list[str]) -> str:
    """Why a measurement cannot stand ('' when it can)."""
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        return f"not measured: {', '.join(missing[:3])}{more}"
    if not total > 0:
        return f"measured equity is {total:.12g}, not positive"
    return ""


def portfolio_equity(state: AllocationState, snapshots: SnapshotTable, portfolio_id: str) -> Equity:
    """The portfolio's equity for policies: measured from the snapshots when complete and
    positive, else the last allocation event's (see the module's docstring)."""
    worlds = state.portfolio_worlds(portfolio_id)
    names = [ws.world_id for ws in worlds]
    snaps = snapshots.snapshots(names)
    reported = {s.world_id for s in snaps}
    missing = [
        f"world {ws.world_id} has no snapshot"
        for ws in worlds
        if ws.world_id not in reported and (ws.alloc or 0.0) > 0
    ]
    value, unpriced = _positions_value(snapshots, names) if snaps else (0.0, [])
    missing.extend(unpriced)
    cash = math.fsum(s.cash for s in snaps if s.cash is not None)
    measured = None if missing else value + cash
    why = _flaw(value + cash, missing)
    if not why:
        assert measured is not None
        return Equity(measured, "measured", measured)
    event = state.portfolio(portfolio_id).total_equity or 0.0
    if event > 0:
        return Equity(event, "event", measured, why)
    return Equity(0.0, "none", measured, f"{why}; no allocation event gave an equity")


def _positions_value(snapshots: SnapshotTable, worlds: list[str]) -> tuple[float, list[str]]:
    """The value of the worlds' positions (net per world and key, at the key's latest mark
    in its world), and the keys held without a mark (``world venue:symbol``).

    Read from the table of every world, which the snapshot table keeps as one entry for all
    portfolios (a table per portfolio's world set would crowd out the planner's tables)."""
    table = snapshots.positions(None)
    if not len(table):
        return 0.0, []
    wanted = set(worlds)
    codes_of = [i for i, w in enumerate(table.worlds) if w in wanted]
    rows = np.flatnonzero(np.isin(table.world, codes_of))
    if not rows.shape[0]:
        return 0.0, []
    n_v, n_s = len(table.venues), len(table.symbols)
    keys = (table.world[rows] * n_v + table.venue[rows]) * n_s + table.symbol[rows]
    codes, index = group(keys, len(table.worlds) * n_v * n_s)
    size = codes.shape[0]
    qty = exact_sums(index, table.qty[rows], size)
    mark = latest_mark(index, size, table.mark[rows], table.recency[rows])
    unpriced = (qty != 0) & np.isnan(mark)
    missing = []
    for code in codes[unpriced].tolist():
        world, rest = divmod(code, n_v * n_s)
        key = (table.venues[rest // n_s], table.symbols[rest % n_s])
        missing.append(f"world {table.worlds[world]} holds {label(key)} without a mark")
    priced = ~unpriced & (qty != 0)
    return math.fsum((qty[priced] * mark[priced]).tolist()), missing


__all__ = ["Equity", "EquitySource", "portfolio_equity"]
