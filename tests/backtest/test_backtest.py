"""The backtester on hand-computed cases, its input checks, and the ``backtest`` command."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from service.backtest import Backtest, Policy, PriceTable, backtest, chart, markdown, table
from service.backtest.metrics import compute
from service.backtest.spec import parse
from service.policies import (
    Calendar,
    CostGate,
    CostModel,
    DrawdownProtection,
    DriftBand,
    Hybrid,
    Kelly,
    Never,
    PolicyError,
    RiskParity,
    Throttle,
    VolatilityRegimes,
)

ROOT = Path(__file__).resolve().parents[2]

DATES = ["2024-01-30", "2024-01-31", "2024-02-01", "2024-02-02"]


def two_assets() -> PriceTable:
    return PriceTable(
        np.array(DATES, dtype="datetime64[D]"),
        ("A", "B"),
        np.array([[10.0, 10.0], [20.0, 10.0], [20.0, 10.0], [10.0, 10.0]]),
    )


def random_walk(n_dates: int = 600, n_assets: int = 4, seed: int = 0) -> PriceTable:
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0003, 0.015, (n_dates, n_assets))
    prices = 100 * np.cumprod(1 + r, axis=0)
    dates = np.busday_offset("2015-01-01", np.arange(n_dates), roll="forward")
    return PriceTable(dates, tuple(f"X{i}" for i in range(n_assets)), prices)


# --------------------------------------------------------------------------------------------
# hand-computed runs
# --------------------------------------------------------------------------------------------


def test_buy_and_hold_monthly_and_band_by_hand() -> None:
    hold, monthly, band = backtest(
        two_assets(),
        [
            Policy("hold", Never()),
            Policy("monthly", Calendar("monthly")),
            Policy("band", DriftBand(0.10)),
        ],
        initial_equity=100.0,
    )
    # 5 A and 5 B, never traded again
    assert hold.equity.tolist() == [100.0, 150.0, 150.0, 100.0]
    assert hold.metrics.rebalances == 0
    # monthly: on 1 Feb, 150 split into 3.75 A and 7.5 B; then A halves
    assert monthly.equity.tolist() == [100.0, 150.0, 150.0, 112.5]
    assert monthly.trade_dates.astype(str).tolist() == ["2024-01-30", "2024-02-01"]
    assert monthly.metrics.turnover == pytest.approx((50 / 150) / (3 / 365.25))
    # band: A at 2/3 on 31 Jan (33 % off 1/2) and at 1/3 on 2 Feb: two rebalances
    assert band.equity.tolist() == [100.0, 150.0, 150.0, 112.5]
    assert band.trade_dates.astype(str).tolist() == ["2024-01-30", "2024-01-31", "2024-02-02"]


def test_costs_are_paid_from_the_portfolio() -> None:
    (run,) = backtest(
        two_assets(), [Policy("hold", Never())], initial_equity=100.0, costs=CostModel(fee_bps=10)
    )
    # buying everything from cash: V = 100 - 0.001 V, so V = 100 / 1.001
    assert run.equity[0] == pytest.approx(100 / 1.001, rel=1e-13)
    assert run.metrics.total_cost == pytest.approx(100 - 100 / 1.001, rel=1e-10)
    (fixed,) = backtest(
        two_assets(),
        [Policy("hold", Never())],
        initial_equity=100.0,
        costs=CostModel(fixed_per_trade=0.5),
    )
    assert fixed.equity[0] == pytest.approx(99.0)  # two assets bought


def test_one_asset_never_trades_after_the_start_whatever_the_trigger() -> None:
    table = random_walk(n_assets=1)
    runs = backtest(
        table,
        [
            Policy("hold", Never()),
            Policy("band", DriftBand(0.01)),
            Policy("m", Calendar("monthly")),
        ],
    )
    for run in runs:
        assert run.equity.tolist() == pytest.approx(runs[0].equity.tolist(), rel=1e-12)
    assert runs[1].metrics.rebalances == 0


def test_hybrid_looks_monthly_but_trades_only_out_of_band() -> None:
    table = random_walk(seed=3)
    monthly, hybrid, wide = backtest(
        table,
        [
            Policy("m", Calendar("monthly")),
            Policy("h", Hybrid(Calendar("monthly"), DriftBand(0.05))),
            Policy("w", Hybrid(Calendar("monthly"), DriftBand(10.0))),
        ],
    )
    assert set(hybrid.trade_dates.tolist()) <= set(monthly.trade_dates.tolist())
    assert 0 < hybrid.metrics.rebalances < monthly.metrics.rebalances
    assert wide.metrics.rebalances == 0


def test_throttle_spaces_rebalances_and_counts_what_it_skipped() -> None:
    (run,) = backtest(
        random_walk(seed=4), [Policy("t", DriftBand(0.0), throttle=Throttle(cooldown_days=10))]
    )
    gaps = np.diff(run.trade_dates.astype(np.int64))
    assert gaps.min() >= 10
    assert run.skipped_by_throttle > 0
    (capped,) = backtest(
        random_walk(seed=4),
        [Policy("c", DriftBand(0.0), throttle=Throttle(max_trades=1, per="monthly"))],
    )
    months = capped.trade_dates.astype("datetime64[M]")
    assert len(set(months.tolist())) == len(months)


def test_cost_gate_skips_rebalances_not_worth_their_cost() -> None:
    table = random_walk(seed=5)
    costs = CostModel(fee_bps=10)
    plain, never, lenient = backtest(
        table,
        [
            Policy("plain", Calendar("weekly")),
            Policy("never", Calendar("weekly"), gate=CostGate(max_cost_to_benefit=0.0)),
            Policy("lenient", Calendar("weekly"), gate=CostGate(max_cost_to_benefit=1e9)),
        ],
        costs=costs,
    )
    assert never.metrics.rebalances == 0
    assert never.skipped_by_gate == plain.metrics.rebalances
    assert lenient.metrics.rebalances == plain.metrics.rebalances


def test_drawdown_protection_cuts_exposure_then_restores_it() -> None:
    prices = np.array([[100.0], [70.0], [70.0], [85.0], [100.0], [100.0]])
    dates = np.busday_offset("2024-03-01", np.arange(6), roll="forward")
    (run,) = backtest(
        PriceTable(dates, ("A",), prices),
        [Policy("g", Calendar("daily"), drawdown=DrawdownProtection(limit=0.2, floor=0.5))],
        initial_equity=100.0,
    )
    # day 1: 30 % down, cut to half: 35 in A, 35 cash; day 3: 77.5, 22.5 % below the peak of
    # a 30 % trough: 0.5 + 0.5 * (1 - 0.225 / 0.3) = 0.625 in A
    assert run.equity[:4].tolist() == pytest.approx([100.0, 70.0, 70.0, 77.5])
    day3 = 77.5
    assert run.equity[4] == pytest.approx(day3 + 0.625 * day3 * (100 / 85 - 1))


def test_estimating_allocators_run_and_stay_invested() -> None:
    table = random_walk(seed=6)
    kelly, parity = backtest(
        table,
        [
            Policy("k", Calendar("monthly"), weights=Kelly(lookback=120, cap=0.6)),
            Policy("rp", Calendar("monthly"), weights=RiskParity(lookback=120)),
        ],
    )
    assert kelly.metrics.rebalances == parity.metrics.rebalances > 20
    assert np.isfinite(kelly.equity).all()
    assert np.isfinite(parity.equity).all()


def test_history_before_start_feeds_regimes_and_trading_starts_at_start() -> None:
    table = random_walk(seed=7)
    (run,) = Backtest(start="2016-01-01", end="2016-06-30").run(
        table, [Policy("smart", VolatilityRegimes(window=63))]
    )
    assert str(run.dates[0]) == "2016-01-01"
    assert str(run.dates[-1]) == "2016-06-30"
    assert run.equity[0] == 1_000_000.0
    assert sum(run.regime_share.values()) == pytest.approx(1.0)


def test_metrics_match_an_independent_computation() -> None:
    dates = np.array(["2020-01-01", "2020-07-01", "2021-01-01", "2022-01-01"], "datetime64[D]")
    equity = np.array([100.0, 150.0, 150.0, 112.5])
    m = compute(dates, equity, turnover=0.0, rebalances=0, total_cost=0.0, periods_per_year=4)
    years = (366 + 365) / 365.25
    returns = [0.5, 0.0, -0.25]
    assert m.total_return == pytest.approx(0.125)
    assert m.cagr == pytest.approx(1.125 ** (1 / years) - 1)
    assert m.volatility == pytest.approx(statistics.stdev(returns) * 2)
    assert m.sharpe == pytest.approx(statistics.mean(returns) * 4 / (statistics.stdev(returns) * 2))
    assert m.max_drawdown == pytest.approx(-0.25)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def test_nan_prices_are_refused_naming_asset_and_date() -> None:
    prices = two_assets().prices.copy()
    prices[2, 1] = math.nan
    with pytest.raises(PolicyError, match=r"B on 2024-02-01 is missing \(NaN\)"):
        PriceTable(np.array(DATES, "datetime64[D]"), ("A", "B"), prices)


@pytest.mark.parametrize(
    ("dates", "assets", "prices", "message"),
    [
        (DATES, ("A", "B"), [[1.0, 1.0], [0.0, 1.0], [1, 1], [1, 1]], "A on 2024-01-31 is 0.0"),
        (DATES[::-1], ("A", "B"), np.ones((4, 2)), "strictly increasing"),
        (DATES, ("A", "A"), np.ones((4, 2)), "duplicated asset"),
        (DATES[:1], ("A",), np.ones((1, 1)), "at least 2"),
        (DATES, ("A",), np.ones((4, 2)), "1 asset names for 2 columns"),
    ],
)
def test_bad_tables_are_refused(
    dates: list[str], assets: tuple[str, ...], prices: object, message: str
) -> None:
    with pytest.raises(PolicyError, match=message):
        PriceTable(np.array(dates, "datetime64[D]"), assets, np.asarray(prices, dtype=float))


def test_unknown_assets_and_policy_names() -> None:
    with pytest.raises(PolicyError, match="unknown asset"):
        two_assets().select(["A", "Z"])
    with pytest.raises(PolicyError, match="names must be unique"):
        backtest(two_assets(), [Policy("x"), Policy("x")])
    with pytest.raises(PolicyError, match="not understood"):
        parse("sometimes")
    with pytest.raises(PolicyError, match="not a number"):
        parse("band:lots")
    assert parse("fast=band:5%")[0] == "fast"
    band = parse("band-abs:2%")[1]
    assert isinstance(band, DriftBand)
    assert band.mode == "absolute"
    assert band.threshold == pytest.approx(0.02)


def test_from_frame_read_csv_table_and_chart(tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame(two_assets().prices, index=pd.to_datetime(DATES), columns=["A", "B"])
    assert PriceTable.from_frame(frame).assets == ("A", "B")
    frame.to_csv(tmp_path / "p.csv")
    table_ = PriceTable.read_csv(tmp_path / "p.csv")
    assert table_.prices.tolist() == two_assets().prices.tolist()
    runs = backtest(table_, [Policy("hold"), Policy("m", Calendar("monthly"))])
    text = table(runs)
    assert "monthly" not in text  # names are the policies'
    assert text.splitlines()[2].startswith("hold")
    assert markdown(runs).count("\n") == 4
    png = chart(runs, tmp_path / "c.png", "t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "backtest", *args],
        capture_output=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    t = random_walk(n_dates=300, seed=9)
    lines = ["date," + ",".join(t.assets)]
    for d, row in zip(t.dates.astype(str).tolist(), t.prices.tolist(), strict=True):
        lines.append(d + "," + ",".join(repr(x) for x in row))
    path = tmp_path / "prices.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_command_prints_policies_side_by_side_and_writes_a_chart(csv: Path, tmp_path: Path) -> None:
    png = tmp_path / "out.png"
    done = cli(str(csv), "--fee-bps", "10", "--chart", str(png))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert [line.split()[0] for line in lines[2:]] == ["none", "monthly", "band:5%", "smart"]
    assert png.stat().st_size > 1000
    as_json = cli(
        str(csv), "--policy", "q=quarterly", "--format", "json", "--weights", "risk-parity"
    )
    assert as_json.returncode == 0, as_json.stderr
    (row,) = orjson.loads(as_json.stdout)
    assert row["policy"] == "q"
    assert row["rebalances"] == 4  # 300 business days from 2015-01-01: four new quarters


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "sometimes"], "error: policy 'sometimes': not understood"),
        (["--assets", "X0,NOPE"], "error: assets: unknown asset(s) NOPE"),
        (
            ["--start", "2030-01-01"],
            "error: period: 2030-01-01 to the last date holds fewer than two",
        ),
    ],
)
def test_command_rejects_bad_input_with_exit_2(csv: Path, args: list[str], message: str) -> None:
    done = cli(str(csv), *args)
    assert done.returncode == 2
    assert done.stderr.decode().startswith(message)
    assert b"Traceback" not in done.stderr


def test_command_rejects_nan_prices_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "nan.csv"
    bad.write_text("date,A,B\n2024-01-01,1,2\n2024-01-02,,2\n2024-01-03,1,2\n")
    done = cli(str(bad))
    assert done.returncode == 2
    assert done.stderr.decode().startswith("error: prices: A on 2024-01-02 is missing (NaN)")
    missing = cli(str(tmp_path / "none.csv"))
    assert missing.returncode == 2
    assert b"no such file" in missing.stderr
