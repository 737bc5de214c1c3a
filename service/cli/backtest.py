"""``rebalancer backtest``: compare rebalancing policies over a table of prices."""

from __future__ import annotations

import argparse
import sys
from typing import IO

import orjson

from .common import EXIT_OK, Subparsers

CONFIG_REFUSES = ("policy", "weights", "vol_target", "drawdown_limit", "assets")
"""Options that pick policies on the command line: with ``--config`` the rules do."""
CONFIG_COSTS = ("fee_bps", "half_spread_bps", "fixed_cost")


def cmd_backtest(args: argparse.Namespace, out: IO[bytes]) -> int:
    if args.config is not None:
        return cmd_backtest_config(args, out)
    from ..backtest import Backtest, Policy, PriceTable, chart, markdown, table
    from ..backtest.spec import DEFAULT_POLICIES, parse
    from ..policies import CostModel, DrawdownProtection, EqualWeight, Kelly, RiskParity
    from ..policies.risk import VolatilityTarget
    from ..policies.weights import Allocator

    prices = PriceTable.read_csv(args.prices)
    if args.assets:
        prices = prices.select([a.strip() for a in args.assets.split(",") if a.strip()])
    weights: Allocator
    if args.weights in (None, "equal"):
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


def cmd_backtest_config(args: argparse.Namespace, out: IO[bytes]) -> int:
    """The rules of a service configuration over the prices, through the live policy objects."""
    from ..backtest import PriceTable
    from ..backtest.metrics import compute
    from ..errors import InputError
    from ..live.replay import replay
    from ..policies import CostModel
    from ..settings import load_settings

    given = [f"--{o.replace('_', '-')}" for o in CONFIG_REFUSES if getattr(args, o) is not None]
    given += [f"--{o.replace('_', '-')}" for o in CONFIG_COSTS if getattr(args, o)]
    given += ["--start"] if args.start else []
    given += ["--end"] if args.end else []
    if given:
        raise InputError(
            f"backtest --config: {', '.join(given)} cannot be combined with --config; the "
            "configuration's [[policies.rules]], [planner] and [costs] decide (trim the CSV "
            "to choose dates)"
        )
    settings = load_settings(args.config)
    prices = PriceTable.read_csv(args.prices)
    c = settings.costs
    costs = CostModel(
        fee_bps=c.fee_bps, half_spread_bps=c.half_spread_bps, fixed_per_trade=c.fixed_per_trade
    )
    run = replay(
        settings.policies,
        prices,
        planner=settings.planner,
        costs=costs,
        initial_equity=args.initial_equity,
    )
    traded = sum(r.traded for r in run.rebalances)
    metrics = compute(
        run.dates,
        run.equity,
        turnover=traded / float(run.equity[0]),
        rebalances=len(run.rebalances),
        total_cost=sum(r.cost for r in run.rebalances),
    )
    summary = {
        "start": str(run.dates[0]),
        "end": str(run.dates[-1]),
        **metrics.as_dict(),
        "evaluations": run.outcomes,
    }
    if args.format == "json":
        body = {"summary": summary, "rebalances": [r.as_dict() for r in run.rebalances]}
        out.write(orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        out.write(b"\n")
        return EXIT_OK
    lines = [f"{k}: {v}" for k, v in summary.items()]
    rows = [("date", "world", "policy", "trigger", "traded", "cost", "weights after")]
    for r in run.rebalances:
        weights = ", ".join(f"{a} {w:.4f}" for a, w in r.weights.items())
        rows.append(
            (r.date, r.world_id, r.policy, r.trigger, f"{r.traded:.2f}", f"{r.cost:.2f}", weights)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines.append("")
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:4], widths[:4], strict=True)]
        cells += [c.rjust(w) for c, w in zip(row[4:6], widths[4:], strict=True)]
        lines.append("  ".join([*cells, row[6]]))
    out.write(("\n".join(lines) + "\n").encode())
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
        "--config",
        metavar="FILE",
        help="run the [[policies.rules]] of this service configuration instead, through the "
        "live policy runner and engine (columns named venue:symbol, or symbol)",
    )
    bt.add_argument(
        "--policy",
        action="append",
        metavar="SPEC",
        help="a policy to run (repeat for several; default: none, monthly, band:5%%, smart)",
    )
    bt.add_argument("--assets", help="comma-separated subset of the table's columns")
    bt.add_argument(
        "--weights", choices=["equal", "kelly", "risk-parity"], help="targets (default: equal)"
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
