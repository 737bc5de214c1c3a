"""``rebalancer schemas``: write, or check, the JSON Schemas of the messages."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import IO

from .common import EXIT_OK, Subparsers


def cmd_schemas(args: argparse.Namespace, out: IO[bytes]) -> int:
    from .. import schemas

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


def register(sub: Subparsers) -> None:
    schemas = sub.add_parser("schemas", help="write (or --check) the JSON Schemas of messages")
    schemas.add_argument("--out", help="directory (default: schemas/ of this checkout)")
    schemas.add_argument("--check", action="store_true", help="fail if the files are stale")
    schemas.set_defaults(run=cmd_schemas)
