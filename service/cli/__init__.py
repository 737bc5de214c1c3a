"""The ``rebalancer`` command: the service (``run``), execution nodes (``execute``), the demo,
offline planning (``plan``), backtests, schema generation and the operator API's client
(``ctl``); one module per subcommand.

Bad input exits with code 2 and one line per problem on stderr, naming the field.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import IO

from ..errors import InputError
from ..policies.errors import PolicyError
from ..runtime import tune_allocator
from . import backtest, ctl, execute, plan, run, schemas
from .common import EXIT_BAD_INPUT, EXIT_OK

__all__ = ["build_parser", "main"]


def _cmd_demo(args: argparse.Namespace, out: IO[bytes]) -> int:
    from ..demo import main as demo

    return demo(sys.stdout, ui=args.ui)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rebalancer", description="Centralized rebalancing: plan allocation changes."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    plan.register(sub)
    backtest.register(sub)
    run.register(sub)
    execute.register(sub)
    ctl.register(sub)
    demo = sub.add_parser(
        "demo", help="run the service on the embedded broker through a two-world scenario"
    )
    demo.add_argument(
        "--ui",
        action="store_true",
        help="keep everything running after the scenario, for the dashboard, until Ctrl-C",
    )
    demo.set_defaults(run=_cmd_demo)
    schemas.register(sub)
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
