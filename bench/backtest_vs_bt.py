"""Speed and agreement of the backtester against the ``bt`` package (issue: policy layer).

Run from the README's venv:  .venv/bin/python bench/backtest_vs_bt.py [--rounds N]

Data: skfolio's S&P 500 dataset (20 stocks, daily closes, 1990-01-02 to 2022-12-28, 8,313
dates), loaded through ``skfolio.datasets.load_sp500_dataset()``. Three runs, equal weights,
fractional shares, zero costs: buy-and-hold, monthly, and a 5 % relative drift band.

Ours: the three runs together, from the DataFrame (conversion and validation included),
repeated ``--rounds`` times; the first round (cold) and the median are reported. bt: the same
three runs once each, in the same process, right after. The target is ours <= 1 s.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bt
import numpy as np
from skfolio.datasets import load_sp500_dataset

from service.backtest import Policy, backtest
from service.policies import Calendar, DriftBand, Never

POLICIES = [
    Policy("buy and hold", Never()),
    Policy("monthly", Calendar("monthly")),
    Policy("5% band", DriftBand(0.05, mode="relative")),
]


class CountRuns(bt.Algo):  # type: ignore[misc]
    """Counts how often the Rebalance after it is reached (bt copies strategies: read the
    count from the backtest's own copy)."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __call__(self, target: Any) -> bool:
        self.n += 1
        return True


def bt_strategies() -> list[tuple[str, list[Any], CountRuns]]:
    out = []
    for name, head, tail in [
        ("buy and hold", [bt.algos.RunOnce()], []),
        ("monthly", [bt.algos.RunMonthly()], []),
        ("5% band", [], [bt.algos.RunIfOutOfBounds(0.05)]),
    ]:
        counter = CountRuns()
        algos = [*head, bt.algos.SelectAll(), bt.algos.WeighEqually(), *tail, counter]
        out.append((name, [*algos, bt.algos.Rebalance()], counter))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    prices = load_sp500_dataset()
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, bt {bt.__version__}; "
        f"{prices.shape[0]} dates x {prices.shape[1]} assets, "
        f"{prices.index[0].date()} to {prices.index[-1].date()}"
    )

    ours_times = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        runs = backtest(prices, POLICIES)
        ours_times.append(time.perf_counter() - t0)

    bt_times = []
    bt_results = []
    for name, algos, _ in bt_strategies():
        t0 = time.perf_counter()
        test = bt.Backtest(bt.Strategy(name, algos), prices, integer_positions=False)
        result = bt.run(test)
        bt_times.append(time.perf_counter() - t0)
        (used,) = [a for a in test.strategy.stack.algos if isinstance(a, CountRuns)]
        bt_results.append((float(result.stats.loc["total_return", name]), used.n, result, name))

    print()
    print(
        "| policy | total return, ours | total return, bt | relative difference | "
        "rebalances, ours (+1 initial) | bt Rebalance runs | CAGR ours / bt | max DD ours / bt |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for run, (bt_ret, bt_n, result, name) in zip(runs, bt_results, strict=True):
        ours = run.metrics.total_return
        stats = result.stats[name]
        diff = abs(ours - bt_ret) / abs(bt_ret)
        print(
            f"| {run.policy} | {ours:.10f} | {bt_ret:.10f} | {diff:.1e} "
            f"| {run.metrics.rebalances} (+1) | {bt_n} | {run.metrics.cagr:.4%} / "
            f"{float(stats['cagr']):.4%} | {run.metrics.max_drawdown:.4%} / "
            f"{float(stats['max_drawdown']):.4%} |"
        )
    cold, median = ours_times[0], statistics.median(ours_times)
    bt_total = sum(bt_times)
    print()
    print("| what | seconds |")
    print("|---|---:|")
    print(f"| ours, three runs, first round (cold) | {cold:.3f} |")
    print(f"| ours, three runs, median of {args.rounds} rounds | {median:.3f} |")
    for (name, _, _), t in zip(bt_strategies(), bt_times, strict=True):
        print(f"| bt, {name} | {t:.2f} |")
    print(f"| bt, three runs | {bt_total:.2f} |")
    print()
    print(
        f"ratio bt / ours: {bt_total / cold:.0f}x against our cold round, "
        f"{bt_total / median:.0f}x against our median; target ours <= 1 s: "
        f"{'met' if cold <= 1.0 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
