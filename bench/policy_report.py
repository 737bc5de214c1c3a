"""The source document's comparison, measured: no rebalance, monthly, a drift band and the
volatility-regime ("smart") policy on skfolio's S&P 500 dataset, with 10 bps costs.

Run from the README's venv:  .venv/bin/python bench/policy_report.py [--chart docs/backtests.png]

Prints the Markdown tables of docs/backtests.md (overall and per period) and writes the
chart. Every policy uses equal weights and its defaults; nothing here was tuned. Periods:
two fixed by the market's own history (the S&P 500's 2007-2009 bear market and the bull
market that followed it) and two picked by a rule stated below, computed from the basket.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pandas as pd
from skfolio.datasets import load_sp500_dataset

from service.backtest import Backtest, Policy, PriceTable, chart, markdown
from service.policies import Calendar, CostModel, DriftBand, Never, VolatilityRegimes

POLICIES = [
    Policy("no rebalance", Never()),
    Policy("monthly", Calendar("monthly")),
    Policy("5% band", DriftBand(0.05, mode="relative")),
    Policy("smart (vol regimes)", VolatilityRegimes()),
]
COSTS = CostModel(fee_bps=10)
BEAR = ("2007-10-09", "2009-03-09")  # the S&P 500's peak and trough
BULL = ("2009-03-10", "2020-02-19")  # from that trough to the next peak


def overlaps(a: tuple[str, str], b: tuple[str, str]) -> bool:
    return not (a[1] < b[0] or b[1] < a[0])


def high_volatility_year(table: PriceTable) -> tuple[str, str]:
    """The calendar year in which the equal-weight basket was most volatile, outside the
    bear market (which is its own period)."""
    years = table.dates[1:].astype("datetime64[Y]").astype(int) + 1970
    basket = pd.Series(table.returns.mean(axis=1)[1:])
    vol = basket.groupby(years).std()
    for year in vol.sort_values(ascending=False).index:
        span = (f"{year}-01-01", f"{year}-12-31")
        if not overlaps(span, BEAR):
            return span
    raise SystemExit("no year outside the bear market")


def sideways_window(table: PriceTable, avoid: list[tuple[str, str]]) -> tuple[str, str]:
    """The 24-month window (starting on a month's first day) over which holding the basket
    changed its value least, not overlapping the other periods."""
    best: tuple[float, tuple[str, str]] | None = None
    for start in pd.date_range("1991-01-01", "2020-12-01", freq="MS"):
        end = start + pd.DateOffset(months=24) - pd.DateOffset(days=1)
        span = (str(start.date()), str(end.date()))
        if any(overlaps(span, a) for a in avoid):
            continue
        a = table.index_of(span[0])
        b = table.index_of(span[1], side="right")
        if b >= len(table) or b <= a:
            continue
        change = abs(float((table.prices[b] / table.prices[a]).mean()) - 1.0)
        if best is None or change < best[0]:
            best = (change, span)
    assert best is not None
    return best[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chart", default="docs/backtests.png")
    args = parser.parse_args()
    table = PriceTable.from_frame(load_sp500_dataset())
    high_vol = high_volatility_year(table)
    sideways = sideways_window(table, [BEAR, BULL, high_vol])
    periods = [
        ("Overall", (None, None)),
        ("Bull: 2009 trough to 2020 peak", BULL),
        ("Bear: 2007-2009 (S&P 500 peak to trough)", BEAR),
        ("Sideways: flattest 24 months of the basket", sideways),
        ("High volatility: the basket's most volatile year outside the bear", high_vol),
    ]
    for title, (start, end) in periods:
        runs = Backtest(costs=COSTS, start=start, end=end).run(table, POLICIES)
        first, last = runs[0].dates[0], runs[0].dates[-1]
        print(f"### {title} ({first} to {last})\n")
        print(markdown(runs))
        smart = runs[-1].regime_share
        shares = ", ".join(f"{k} {v:.0%}" for k, v in smart.items() if v > 0)
        print(f"Smart policy's time in each regime: {shares}.\n")
        if start is None:
            path = chart(runs, args.chart, "20 S&P 500 stocks, equal weight, 10 bps costs")
            print(f"(chart: {path}, {path.stat().st_size // 1024} KB)\n", file=sys.stderr)
    print(f"numpy {np.__version__}", file=sys.stderr)


if __name__ == "__main__":
    main()
