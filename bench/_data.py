"""Synthetic portfolios for the benchmarks: several worlds, strategies, venues and symbols."""

from __future__ import annotations

import numpy as np

from service.planner import PlannerOptions, PlanningContext, PositionTable, WorldChange


def portfolio(
    rows: int,
    *,
    worlds: int = 8,
    strategies_per_world: int = 25,
    venues: int = 4,
    symbols: int = 2_000,
    seed: int = 7,
) -> PositionTable:
    """``rows`` positions spread over worlds x strategies x venues x symbols, prebuilt columns."""
    rng = np.random.default_rng(seed)
    strategies = [
        (f"w{w:02d}", f"s{s:03d}") for w in range(worlds) for s in range(strategies_per_world)
    ]
    venue_names = [f"venue{v}" for v in range(venues)]
    symbol_names = [f"SYM{s:05d}" for s in range(symbols)]
    strat = rng.integers(0, len(strategies), rows)
    sym = rng.integers(0, symbols, rows)
    return PositionTable.from_columns(
        strategies=strategies,
        venues=venue_names,
        symbols=symbol_names,
        strategy=strat,
        venue=sym % venues,  # a symbol trades on one venue, as it mostly does
        symbol=sym,
        qty=np.round(rng.normal(0, 10, rows), 3),
        mark=np.round(rng.uniform(1, 1000, symbols), 2)[sym],
        recency=rng.integers(0, 50, rows),
    )


def context(table: PositionTable, *, lots: bool = True) -> PlanningContext:
    """Every world moves by a different ratio; half the strategies get new weights."""
    changes = []
    for i, world in enumerate(table.worlds):
        before, after = 0.1, 0.1 * (0.5 + 0.1 * i)
        names = sorted({s for w, s in table.strategies if w == world})
        strategy_before = {s: before / len(names) for s in names}
        strategy_after = {
            s: after / len(names) * (1.2 if j % 2 else 1.0)
            for j, s in enumerate(names)
            if j % 2 == 0
        }
        changes.append(WorldChange(world, before, after, strategy_before, strategy_after))
    options = PlannerOptions(
        min_trade_notional=5.0,
        lot_size_by_symbol=dict.fromkeys(table.symbols[::2], 0.001) if lots else {},
    )
    return PlanningContext(
        event_id="bench",
        portfolio_id="default",
        occurred_at=0,
        total_equity=1e9,
        changes=tuple(changes),
        positions=table,
        options=options,
    )
