"""Agreement with an established backtester: the ``bt`` package, on the S&P 500 dataset
shipped in ``skfolio`` (20 stocks, daily, 1990-2022), fractional shares and zero costs.

Equal weights rebalanced monthly, and equal weights with a 5 % relative drift band
(``bt.algos.RunIfOutOfBounds(0.05)``): total returns within 0.01 % relative and the same
number of rebalances. bt counts a rebalance each time its ``Rebalance`` algo runs, the
initial allocation included; ours counts rebalances after the initial allocation. bt takes
several seconds per run, so only these two runs are compared here (bench/backtest_vs_bt.py
also times buy-and-hold).
"""

from __future__ import annotations

from typing import Any

import bt  # the bench extra, which make test installs: a missing one fails, never skips
import pytest
from skfolio import datasets

from service.backtest import Policy, backtest
from service.policies import Calendar, DriftBand


class CountRuns(bt.Algo):  # type: ignore[misc]
    """Passes through and records each date it is reached (placed just before Rebalance)."""

    def __init__(self) -> None:
        super().__init__()
        self.dates: list[Any] = []

    def __call__(self, target: Any) -> bool:
        self.dates.append(target.now)
        return True


def run_bt(prices: Any, name: str, trigger: list[Any]) -> tuple[float, int]:
    counter = CountRuns()
    algos = [*trigger, counter, bt.algos.Rebalance()]
    if name == "band":  # the band needs the target weights before it can compare
        algos = [bt.algos.SelectAll(), bt.algos.WeighEqually(), *algos]
    else:
        algos = [algos[0], bt.algos.SelectAll(), bt.algos.WeighEqually(), *algos[1:]]
    test = bt.Backtest(bt.Strategy(name, algos), prices, integer_positions=False)
    result = bt.run(test)
    counted = [a for a in test.strategy.stack.algos if isinstance(a, CountRuns)]
    assert len(counted) == 1
    return float(result.stats.loc["total_return", name]), len(counted[0].dates)


@pytest.fixture(scope="module")
def sp500() -> Any:
    return datasets.load_sp500_dataset()


@pytest.mark.parametrize(
    ("name", "ours", "theirs"),
    [
        ("monthly", Calendar("monthly"), lambda: [bt.algos.RunMonthly()]),
        ("band", DriftBand(0.05, mode="relative"), lambda: [bt.algos.RunIfOutOfBounds(0.05)]),
    ],
)
def test_equal_weight_agrees_with_bt(sp500: Any, name: str, ours: Any, theirs: Any) -> None:
    (run,) = backtest(sp500, [Policy(name, ours)])
    bt_return, bt_rebalances = run_bt(sp500, name, theirs())
    assert run.metrics.total_return == pytest.approx(bt_return, rel=1e-4)
    assert run.metrics.rebalances + 1 == bt_rebalances
    assert str(run.dates[0]) == "1990-01-02"
    assert str(run.dates[-1]) == "2022-12-28"
