"""The ``rebalancer`` command: offline planning and schema generation.

Bad input exits with code 2 and one line per problem on stderr, naming the field.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from .errors import InputError
from .planner import MultiWorldProportionalRebalancer, PlannerOptions, PlanningError
from .policies.errors import PolicyError
from .report import render
from .request import parse_request
from .runtime import tune_allocator
from .settings import load_settings

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def _read(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    path = Path(source)
    if not path.is_file():
        raise InputError(f"{source}: no such file")
    return path.read_bytes()


def plan_one(raw: bytes, defaults: PlannerOptions, now_ms: int, with_intents: bool) -> Any:
    """Plan one request and return the JSON-ready output."""
    context = parse_request(raw, defaults=defaults, now_ms=now_ms)
    try:
        plan = MultiWorldProportionalRebalancer().plan(context)
    except PlanningError as exc:
        raise InputError(str(exc)) from None
    record = plan.record()
    if with_intents:
        return {**record, "intents": plan.intents()}
    return record


def _cmd_plan(args: argparse.Namespace, out: IO[bytes]) -> int:
    settings = load_settings(args.config)
    now_ms = args.now if args.now is not None else int(time.time() * 1000)
    option = orjson.OPT_INDENT_2 if args.pretty and not args.jsonl else 0
    raw = _read(args.file)
    if not args.jsonl:
        result = plan_one(raw, settings.planner, now_ms, args.with_intents)
        if args.format == "text":
            out.write(render(result).encode())
        else:
            out.write(orjson.dumps(result, option=option) + b"\n")
        return EXIT_OK
    if args.format == "text":
        raise InputError("--format text cannot be combined with --jsonl")
    failed = 0
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            result = plan_one(line, settings.planner, now_ms, args.with_intents)
        except InputError as exc:
            failed += 1
            result = {"error": {"line": number, "class": "InputError", "message": str(exc)}}
            print(f"line {number}: {exc}", file=sys.stderr)
        out.write(orjson.dumps(result) + b"\n")
    return EXIT_BAD_INPUT if failed else EXIT_OK


def _cmd_schemas(args: argparse.Namespace, out: IO[bytes]) -> int:
    from . import schemas

    directory = Path(args.out) if args.out else schemas.SCHEMA_DIR
    if args.check:
        problems = schemas.stale(directory)
        if problems:
            print(
                f"schemas in {directory} are stale: {', '.join(problems)}; "
                "run 'rebalancer schemas' to regenerate",
                file=sys.stderr,
            )
            return 1
        print(f"schemas in {directory} match the models", file=sys.stderr)
        return EXIT_OK
    for path in schemas.write(directory):
        print(f"wrote {path}", file=sys.stderr)
    return EXIT_OK


def _cmd_backtest(args: argparse.Namespace, out: IO[bytes]) -> int:
    from .backtest import Backtest, Policy, PriceTable, chart, markdown, table
    from .backtest.spec import DEFAULT_POLICIES, parse
    from .policies import CostModel, DrawdownProtection, EqualWeight, Kelly, RiskParity
    from .policies.risk import VolatilityTarget
    from .policies.weights import Allocator

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


def _cmd_run(args: argparse.Namespace, out: IO[bytes]) -> int:
    import asyncio
    import logging

    from .app import RebalancerApp

    settings = load_settings(args.config)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(RebalancerApp(settings).run())
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace, out: IO[bytes]) -> int:
    from .demo import main as demo

    return demo(sys.stdout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rebalancer", description="Centralized rebalancing: plan allocation changes."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    plan = sub.add_parser(
        "plan",
        help="plan a request (ours or QMTL's) and print the plan as JSON",
        description="Read a planning request as JSON and print the plan. Accepts our shape "
        "({event, snapshots, current?, options?}) and QMTL's /rebalancing/plan body.",
    )
    plan.add_argument("file", help="request file, or - for standard input")
    plan.add_argument(
        "--jsonl", action="store_true", help="one request per line in, one plan per line out"
    )
    plan.add_argument(
        "--with-intents", action="store_true", help="add the delta intents under 'intents'"
    )
    plan.add_argument("--pretty", action="store_true", help="indent the output")
    plan.add_argument(
        "--format",
        choices=["json", "text"],
        default="json",
        help="json (default) or a table for people (not with --jsonl)",
    )
    plan.add_argument("--config", help="a TOML file overriding config/default.toml")
    plan.add_argument(
        "--now",
        type=int,
        metavar="MS",
        help="epoch ms for intents of requests without occurred_at (default: the clock)",
    )
    plan.set_defaults(run=_cmd_plan)

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
    bt.set_defaults(run=_cmd_backtest)

    run = sub.add_parser(
        "run",
        help="run the stream service (embedded broker when bootstrap_servers is unset)",
        description="Consume allocation events and snapshots, publish intents and plans. "
        "Stops cleanly on SIGTERM/SIGINT.",
    )
    run.add_argument("--config", help="a TOML file overriding config/default.toml")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.set_defaults(run=_cmd_run)

    demo = sub.add_parser(
        "demo", help="run the service on the embedded broker through a two-world scenario"
    )
    demo.set_defaults(run=_cmd_demo)

    schemas = sub.add_parser("schemas", help="write (or --check) the JSON Schemas of messages")
    schemas.add_argument("--out", help="directory (default: schemas/ of this checkout)")
    schemas.add_argument("--check", action="store_true", help="fail if the files are stale")
    schemas.set_defaults(run=_cmd_schemas)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    tune_allocator()
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args, sys.stdout.buffer)
    except (InputError, PolicyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        return EXIT_OK
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
