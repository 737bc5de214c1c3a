"""What every subcommand shares: exit codes, reading input, logging for long runs."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..errors import InputError

EXIT_OK, EXIT_BAD_INPUT, EXIT_STATE, EXIT_BROKER = 0, 2, 3, 4

Command = Callable[[argparse.Namespace, IO[bytes]], int]
"""A subcommand: parsed arguments and standard output in, exit code out."""

Subparsers = Any
"""``argparse``'s subparsers action (its class is private)."""


def read_source(source: str) -> bytes:
    """A file's bytes, or standard input's for ``-``."""
    if source == "-":
        return sys.stdin.buffer.read()
    path = Path(source)
    if not path.is_file():
        raise InputError(f"{source}: no such file")
    return path.read_bytes()


def log_to_stderr(level: str) -> None:
    """Log lines for the long-running commands (run, execute)."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
