"""``rebalancer run``: the stream service."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import IO, TYPE_CHECKING

from ..errors import InputError
from ..settings import load_settings
from .common import EXIT_BROKER, EXIT_OK, EXIT_STATE, Subparsers, add_log_level, log_to_stderr

if TYPE_CHECKING:
    from consumers.unit_of_work import FaultHook


FAULT_ENV = "REBALANCER_FAULT_KILL_AT"
"""Test hook of the crash tests: SIGKILL ``rebalancer run`` at a named step of the order of
work (``consumers.unit_of_work.Step``)."""


def fault_hook_from_env() -> FaultHook:
    """The crash tests' hook when ``REBALANCER_FAULT_KILL_AT`` names a step, else none."""
    import os
    import signal

    from consumers.unit_of_work import Step, no_faults

    wanted = os.environ.get(FAULT_ENV)
    if wanted is None:
        return no_faults
    steps = [step.value for step in Step]
    if wanted not in steps:
        raise InputError(f"{FAULT_ENV}: expected one of {', '.join(steps)}, got {wanted!r}")

    def kill_at(step: Step) -> None:
        if step == wanted:
            log = logging.getLogger("rebalancer")
            log.error("fault injection: killing this process at %s", step)
            os.kill(os.getpid(), signal.SIGKILL)

    return kill_at


def cmd_run(args: argparse.Namespace, out: IO[bytes]) -> int:
    import asyncio

    from consumers.clients import BrokerUnreachableError

    from ..app import RebalancerApp
    from ..state.allocations import ChangelogError

    settings = load_settings(args.config)
    fault = fault_hook_from_env()
    log_to_stderr(args.log_level)
    try:
        asyncio.run(RebalancerApp(settings, fault=fault).run())
    except ChangelogError as exc:
        print(f"error: the service state cannot be restored: {exc}", file=sys.stderr)
        return EXIT_STATE
    except BrokerUnreachableError as exc:
        print(f"error: cannot use the Kafka brokers: {exc}", file=sys.stderr)
        return EXIT_BROKER
    return EXIT_OK


def register(sub: Subparsers) -> None:
    run = sub.add_parser(
        "run",
        help="run the stream service (embedded broker when bootstrap_servers is unset)",
        description="Consume allocation events and snapshots, publish intents and plans. "
        "Stops cleanly on SIGTERM/SIGINT.",
    )
    run.add_argument("--config", help="a TOML file overriding config/default.toml")
    add_log_level(run)
    run.set_defaults(run=cmd_run)
