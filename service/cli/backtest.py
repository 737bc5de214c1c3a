"""``rebalancer backtest``: compare rebalancing policies over a table of prices."""

from __future__ import annotations

import argparse
import sys
from typing import IO

import orjson

from .common import EXIT_OK, Subparsers


def cmd_backtest(args: argparse.Namespace, out: IO[bytes]) -> int:
    from ..backtest import Backtest, Policy, PriceTable, chart, markdown, table
    from ..backtest.spec import DEFAULT_POLICIES, parse
    from ..policies import CostModel, DrawdownProtection, EqualWeight, Kelly, RiskParity
    from ..policies.risk import VolatilityTarget
    from ..policies.weights import Allocator

    prices = PriceTable.read_csv(args.prices)
    if args.assets:
        prices = prices.select([a.strip() for a in args.assets.split(",") if a.strip()])
    weights: Allocator
    if args.weights == "equal":
        weights = EqualWeight()
    elif args.weights == "kelly":
        weights = Kelly(lookback=args.lookback, cap=args.cap)
    else:
        weights = RiskParity(lookback=args.lookback)
    if args.vol_target is not None:
        weights = VolatilityTarget(weights, target_volatility=args.vol_target)
    guard = DrawdownProtection(limit=args.drawdown_limit) if args.drawdown_limit else None
    policies = []
    for spec in args.policy or DEFAULT_POLICIES:
        name, trigger = parse(spec)
        policies.append(Policy(name, trigger, weights=weights, drawdown=guard))
    runs = Backtest(
        costs=CostModel(
            fee_bps=args.fee_bps,
            half_spread_bps=args.half_spread_bps,
            fixed_per_trade=args.fixed_cost,
        ),
        initial_equity=args.initial_equity,
        start=args.start,
        end=args.end,
    ).run(prices, policies)
    if args.format == "json":
        body = [run.summary() for run in runs]
        out.write(orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        out.write(b"\n")
    else:
        out.write((markdown(runs) if args.format == "markdown" else table(runs)).encode())
    if args.chart:
        title = f"{len(prices.assets)} assets, {runs[0].dates[0]} to {runs[0].dates[-1]}"
        print(f"wrote {chart(runs, args.chart, title)}", file=sys.stderr)
    return EXIT_OK


def register(sub: Subparsers) -> None:
    bt = sub.add_parser(
        "backtest",
        help="compare rebalancing policies over a CSV of prices",
        description="Run policies over a price table (CSV: a header row, dates in the first "
        "column, one column of close prices per asset) and print their figures side by side. "
        "Policies: none, a cadence (daily, weekly, biweekly, monthly, quarterly, yearly), "
        "band:5%% (relative drift band), band-abs:5%%, hybrid:monthly:5%%, smart (volatility "
        "regimes); NAME=POLICY names one.",
    )
    bt.add_argument("prices", help="CSV file of close prices, dates by assets")
    bt.add_argument(
        "--policy",
        action="append",
        metavar="SPEC",
        help="a policy to run (repeat for several; default: none, monthly, band:5%%, smart)",
    )
    bt.add_argument("--assets", help="comma-separated subset of the table's columns")
    bt.add_argument(
        "--weights", choices=["equal", "kelly", "risk-parity"], default="equal", help="targets"
    )
    bt.add_argument("--lookback", type=int, default=252, help="returns that feed kelly/risk-parity")
    bt.add_argument("--cap", type=float, default=1.0, help="per-asset cap of kelly weights")
    bt.add_argument("--vol-target", type=float, help="scale weights to this annualized volatility")
    bt.add_argument("--drawdown-limit", type=float, help="halve exposure past this drawdown")
    bt.add_argument("--fee-bps", type=float, default=0.0, help="fee, bps of traded notional")
    bt.add_argument("--half-spread-bps", type=float, default=0.0, help="half spread, bps")
    bt.add_argument("--fixed-cost", type=float, default=0.0, help="fixed cost per traded asset")
    bt.add_argument("--initial-equity", type=float, default=1_000_000.0)
    bt.add_argument("--start", help="first trading date (earlier rows still feed estimates)")
    bt.add_argument("--end", help="last date")
    bt.add_argument(
        "--format", choices=["table", "markdown", "json"], default="table", help="output"
    )
    bt.add_argument("--chart", metavar="PNG", help="also write equity curves and drawdowns here")
    bt.set_defaults(run=cmd_backtest)
