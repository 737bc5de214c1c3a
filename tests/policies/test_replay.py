"""A price history through the live policy runner and engine (``service.live.replay``): the
rebalance dates and the equity curve agree with the backtester's for the same rule, and what
a replay reports is what its book did."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from service.backtest import Backtest, Policy, PriceTable
from service.live.config import PolicySettings
from service.live.replay import asset_key, close_ms, replay
from service.planner import PlannerOptions
from service.policies import Calendar, CostModel, DriftBand, EqualWeight, Hybrid, PolicyError
from service.policies.triggers import Trigger

HALF = [
    {"venue": "v", "symbol": "X", "weight": 0.5},
    {"venue": "v", "symbol": "Y", "weight": 0.5},
]
FINE_LOTS = PlannerOptions(lot_size_by_symbol={"X": 1e-6, "Y": 1e-6})


def prices(n: int = 160, seed: int = 1) -> PriceTable:
    rng = np.random.default_rng(seed)
    dates = np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-01-01") + n)
    walk = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (n, 2)), axis=0))
    return PriceTable(dates, ("v:X", "v:Y"), walk)


def rules(trigger: dict[str, Any], **target: Any) -> PolicySettings:
    rule = {
        "name": "r",
        "worlds": ["a"],
        "trigger": trigger,
        "target": {"kind": "weights", "weights": HALF, "base": "holdings", **target},
    }
    return PolicySettings.model_validate({"enabled": True, "rules": [rule]})


@pytest.mark.parametrize(
    ("config", "trigger"),
    [
        ({"kind": "calendar", "every": "monthly"}, Calendar("monthly")),
        (
            {"kind": "band", "mode": "absolute", "threshold": 0.02},
            DriftBand(0.02, mode="absolute"),
        ),
        (
            {"kind": "band", "mode": "relative", "threshold": 0.05},
            DriftBand(0.05, mode="relative"),
        ),
        (
            {"kind": "hybrid", "every": "weekly", "mode": "absolute", "threshold": 0.01},
            Hybrid(Calendar("weekly"), DriftBand(0.01, mode="absolute")),
        ),
    ],
)
def test_the_live_rule_rebalances_when_the_backtester_does(
    config: dict[str, Any], trigger: Trigger
) -> None:
    table = prices()
    live = replay(rules(config), table, planner=FINE_LOTS)
    (offline,) = Backtest(initial_equity=1_000_000.0).run(
        table, [Policy("p", trigger, weights=EqualWeight())]
    )
    assert len(live.rebalances) >= 3  # the comparison has something to compare
    # the backtester lists its initial allocation first; the replay seeds it
    assert [r.date for r in live.rebalances] == [str(d) for d in offline.trade_dates[1:]]
    assert live.equity == pytest.approx(offline.equity, rel=1e-7)
    for r in live.rebalances:
        assert r.weights == pytest.approx({"v:X": 0.5, "v:Y": 0.5}, abs=1e-6)
        assert r.traded > 0
        assert r.cost == 0


def test_costs_are_paid_from_the_worlds_cash() -> None:
    table = prices()
    costs = CostModel(fee_bps=10, half_spread_bps=5, fixed_per_trade=1.0)
    run = replay(
        rules({"kind": "calendar", "every": "monthly"}), table, planner=FINE_LOTS, costs=costs
    )
    free = replay(rules({"kind": "calendar", "every": "monthly"}), table, planner=FINE_LOTS)
    assert [r.date for r in run.rebalances] == [r.date for r in free.rebalances]
    for r in run.rebalances:
        keys = 2  # both assets trade at every rebalance of a two-asset half/half world
        assert r.cost == pytest.approx(r.traded * 15e-4 + keys * 1.0)
    paid = sum(r.cost for r in run.rebalances)
    assert free.equity[-1] - run.equity[-1] == pytest.approx(paid, rel=0.05)
    assert run.equity[-1] < free.equity[-1]


def test_evaluations_are_counted_and_dates_are_closes() -> None:
    run = replay(rules({"kind": "calendar", "every": "monthly"}), prices(n=70), planner=FINE_LOTS)
    assert [r.date for r in run.rebalances] == ["2024-02-01", "2024-03-01"]
    # the first close's calendar look triggers too, and finds the seeded world on target:
    # a plan with nothing to trade, so no rebalance
    assert run.outcomes["triggered"] == 3
    assert sum(run.outcomes.values()) >= 70  # every close is looked at
    assert close_ms(np.datetime64("1970-01-02")) == 86_400_000 + 16 * 3_600_000


def test_columns_name_assets_and_bad_input_is_refused() -> None:
    assert asset_key("binance:BTCUSDT") == ("binance", "BTCUSDT")
    assert asset_key("BTCUSDT") == (None, "BTCUSDT")
    with pytest.raises(PolicyError, match=r"target asset\(s\) v:X, v:Y have no column"):
        replay(
            rules({"kind": "calendar"}),
            PriceTable(prices().dates, ("X", "Y"), prices().prices),
        )
    with pytest.raises(PolicyError, match=r"no \[\[policies.rules\]\]"):
        replay(PolicySettings(), prices())
    with pytest.raises(PolicyError, match="initial equity"):
        replay(rules({"kind": "calendar"}), prices(), initial_equity=0.0)


# --------------------------------------------------------------------------------------------
# rebalancer backtest --config
# --------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
[policies]
enabled = true

[[policies.rules]]
name = "half"
worlds = ["a"]
trigger = { kind = "hybrid", every = "weekly", mode = "absolute", threshold = 0.01 }
target = { kind = "weights", base = "holdings", weights = [
  { venue = "v", symbol = "X", weight = 0.5 },
  { venue = "v", symbol = "Y", weight = 0.5 },
] }

[planner.lot_size_by_symbol]
X = 0.000001
Y = 0.000001

[costs]
fee_bps = 10.0
"""


def backtest_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REBALANCER_")}
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "backtest", *args],
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    table = prices()
    lines = ["date," + ",".join(table.assets)]
    for d, row in zip(table.dates.astype(str).tolist(), table.prices.tolist(), strict=True):
        lines.append(d + "," + ",".join(repr(x) for x in row))
    csv = tmp_path / "prices.csv"
    csv.write_text("\n".join(lines) + "\n")
    config = tmp_path / "rules.toml"
    config.write_text(CONFIG)
    return config, csv


def test_backtest_config_runs_the_configured_rules(files: tuple[Path, Path]) -> None:
    config, csv = files
    done = backtest_cli(str(csv), "--config", str(config), "--format", "json")
    assert done.returncode == 0, done.stderr
    body = orjson.loads(done.stdout)
    settings = PolicySettings.model_validate(tomllib.loads(CONFIG)["policies"])
    expected = replay(settings, prices(), planner=FINE_LOTS, costs=CostModel(fee_bps=10.0))
    assert [r["date"] for r in body["rebalances"]] == [r.date for r in expected.rebalances]
    assert len(body["rebalances"]) >= 3
    assert [r["weights"] for r in body["rebalances"]] == [r.weights for r in expected.rebalances]
    assert body["summary"]["rebalances"] == len(expected.rebalances)
    assert body["summary"]["total_cost"] == pytest.approx(sum(r.cost for r in expected.rebalances))
    assert body["summary"]["evaluations"]["triggered"] >= len(expected.rebalances)
    as_table = backtest_cli(str(csv), "--config", str(config))
    assert as_table.returncode == 0, as_table.stderr
    text = as_table.stdout.decode()
    assert expected.rebalances[0].date in text
    assert "v:X 0.5000" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "monthly"], "error: backtest --config: --policy cannot be combined"),
        (["--fee-bps", "3"], "error: backtest --config: --fee-bps cannot be combined"),
    ],
)
def test_backtest_config_refuses_command_line_policies(
    files: tuple[Path, Path], args: list[str], message: str
) -> None:
    config, csv = files
    done = backtest_cli(str(csv), "--config", str(config), *args)
    assert done.returncode == 2
    assert done.stderr.decode().startswith(message)


def test_backtest_config_names_a_bad_rule(files: tuple[Path, Path], tmp_path: Path) -> None:
    _, csv = files
    bad = tmp_path / "bad.toml"
    bad.write_text(CONFIG.replace("threshold = 0.01", "threshold = -1"))
    done = backtest_cli(str(csv), "--config", str(bad))
    assert done.returncode == 2
    assert "policies.rules.0.trigger" in done.stderr.decode()
