"""Benchmark of request parsing (issue 14, item 7): a large planning request end to end.

Run from the README's venv:  .venv/bin/python bench/parse.py [--runs N] [--before TREE]

QMTL-shaped requests of 20,000 and 200,000 position rows (8 worlds x 25 strategies, 4 venues,
2,000 symbols, rows in random order, 90% with a mark; every world moves, half the strategies
get new weights, half the symbols have lot sizes), and one of 200,000 rows in our shape (200
snapshots of 1,000 positions), each timed three ways:

- ``rebalancer plan FILE`` as a subprocess (``python -m service.cli plan FILE``, output to
  /dev/null): interpreter start and imports included, what a user waits for;
- the same command in-process (``service.cli.main``, output to memory) in a worker process,
  timed after one warm-up run of it;
- ``parse_request`` alone, in-process in the same worker, after a warm-up run.

With ``--before TREE`` (a checkout of the code before the change, e.g. ``git worktree add
/tmp/before <commit>``), every measurement is also made on that tree, with the same
interpreter and ``PYTHONPATH`` pointing at each tree in turn; each round measures both trees
one after the other (so a noisy neighbour slows both alike), and the ratio is before's median
over this tree's. Each worker checks that ``service`` comes from its tree. Reported: median,
min and max of ``--runs`` rounds (default 7).
"""

from __future__ import annotations

import argparse
import ast
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent.parent

WORLDS, STRATEGIES, VENUES, SYMBOLS = 8, 25, 4, 2_000


def _positions(rows: int, seed: int) -> list[dict[str, Any]]:
    r = random.Random(seed)
    marks = [round(r.uniform(1, 1000), 2) for _ in range(SYMBOLS)]
    out = []
    for _ in range(rows):
        w, s, y = r.randrange(WORLDS), r.randrange(STRATEGIES), r.randrange(SYMBOLS)
        row: dict[str, Any] = {
            "world_id": f"w{w:02d}",
            "strategy_id": f"s{s:03d}",
            "symbol": f"SYM{y:05d}",
            "venue": f"venue{y % VENUES}",
            "qty": round(r.gauss(0, 10), 3),
        }
        if r.random() < 0.9:
            row["mark"] = marks[y]
        out.append(row)
    return out


def _moves() -> dict[str, Any]:
    strategies = [f"s{s:03d}" for s in range(STRATEGIES)]
    worlds = [f"w{w:02d}" for w in range(WORLDS)]
    before = dict.fromkeys(worlds, 0.1)
    after = {w: 0.1 * (0.5 + 0.1 * i) for i, w in enumerate(worlds)}
    return {
        "total_equity": 1e9,
        "world_alloc_before": before,
        "world_alloc_after": after,
        "strategy_alloc_before_total": {
            w: dict.fromkeys(strategies, before[w] / STRATEGIES) for w in worlds
        },
        "strategy_alloc_after_total": {  # every other strategy gets a new weight
            w: {
                s: after[w] / STRATEGIES * (1.2 if j % 4 else 0.8)
                for j, s in enumerate(strategies)
                if j % 2 == 0
            }
            for w in worlds
        },
        "min_trade_notional": 5.0,
        "lot_size_by_symbol": {f"SYM{y:05d}": 0.001 for y in range(0, SYMBOLS, 2)},
        "occurred_at": 1_764_000_000_000,
    }


def qmtl_request(rows: int, seed: int = 7) -> bytes:
    """QMTL's body with ``rows`` position rows."""
    return orjson.dumps({**_moves(), "positions": _positions(rows, seed)})


def ours_request(rows: int, per_snapshot: int = 1_000, seed: int = 7) -> bytes:
    """Our shape: a world move and ``rows / per_snapshot`` snapshots."""
    moves = _moves()
    event = {
        "type": "world_allocations_changed",
        "event_id": "bench-parse",
        **moves,
    }
    r = random.Random(seed)
    pairs = [(f"w{w:02d}", f"s{s:03d}") for w in range(WORLDS) for s in range(STRATEGIES)]
    snapshots = []
    for i in range(rows // per_snapshot):
        world_id, strategy_id = pairs[i % len(pairs)]
        symbols = r.sample(range(SYMBOLS), per_snapshot)
        snapshots.append(
            {
                "world_id": world_id,
                "strategy_id": strategy_id,
                "as_of": 1_764_000_000_000 - i,
                "positions": [
                    {
                        "symbol": f"SYM{y:05d}",
                        "venue": f"venue{y % VENUES}",
                        "qty": round(r.gauss(0, 10), 3),
                        "mark": round(1 + y / 2, 2),
                    }
                    for y in symbols
                ],
            }
        )
    return orjson.dumps({"event": event, "snapshots": snapshots})


# -- the worker: one tree, one request, in-process timings ---------------------------------

WORKER = """
import io, os, sys, time, contextlib
tree, path, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
import service
assert service.__file__.startswith(tree + os.sep), (service.__file__, tree)
from service.runtime import tune_allocator
tune_allocator()
from service.cli import main
from service.request import parse_request
raw = open(path, "rb").read()

def cli():
    out = io.TextIOWrapper(io.BytesIO())
    with contextlib.redirect_stdout(out):
        assert main(["plan", path, "--now", "0"]) == 0

def parse():
    parse_request(raw, now_ms=0)

times = {"cli": [], "parse": []}
for name, fn in (("cli", cli), ("parse", parse)):
    fn()  # warm-up
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - start)
print(repr(times))
"""


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


def in_process(tree: Path, path: Path, runs: int) -> dict[str, list[float]]:
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(tree), str(path), str(runs)],
        env=_env(tree),
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    times: dict[str, list[float]] = ast.literal_eval(out)
    return times


def cli_subprocess(tree: Path, path: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "service.cli", "plan", str(path), "--now", "0"],
        env=_env(tree),
        cwd=tree,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def startup(tree: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import service.cli"], env=_env(tree), cwd=tree, check=True
    )
    return time.perf_counter() - start


def _fmt(samples: list[float]) -> str:
    ms = sorted(s * 1e3 for s in samples)
    return f"{statistics.median(ms):,.0f} ({ms[0]:,.0f}-{ms[-1]:,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per measurement (default 7)")
    parser.add_argument("--before", type=Path, help="a checkout of the code before the change")
    args = parser.parse_args()
    trees = {"after": HERE}
    if args.before is not None:
        trees = {"before": args.before.resolve(), "after": HERE}
    print(
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores; "
        f"{args.runs} runs each; ms as median (min-max)\n"
    )
    for label, tree in trees.items():
        head = subprocess.run(
            ["git", "-C", str(tree), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        print(f"- {label}: {tree} at {head[:90]}")
    print()
    requests = [
        ("QMTL", 20_000, qmtl_request(20_000)),
        ("QMTL", 200_000, qmtl_request(200_000)),
        ("ours", 200_000, ours_request(200_000)),
    ]
    columns = list(trees)
    header = "| request | rows | MB | what | " + " | ".join(f"{c} ms" for c in columns)
    print(header + (" | before / after |" if len(columns) == 2 else " |"))
    print("|---|---:|---:|---|" + "---:|" * len(columns) + ("---:|" if len(columns) == 2 else ""))
    with tempfile.TemporaryDirectory() as tmp:
        for shape, rows, raw in requests:
            path = Path(tmp) / f"{shape}-{rows}.json"
            path.write_bytes(raw)
            samples = {c: {"subprocess": [], "cli": [], "parse": []} for c in columns}
            for _ in range(args.runs):  # the trees in turn, round after round
                for c in columns:
                    samples[c]["subprocess"].append(cli_subprocess(trees[c], path))
                    for what, times in in_process(trees[c], path, 1).items():
                        samples[c][what] += times
            for what, label in (
                ("subprocess", "`rebalancer plan FILE` (subprocess)"),
                ("cli", "`rebalancer plan FILE` in-process"),
                ("parse", "`parse_request` in-process"),
            ):
                cells = [_fmt(samples[c][what]) for c in columns]
                line = f"| {shape} | {rows:,} | {len(raw) / 1e6:.1f} | {label} | " + " | ".join(
                    cells
                )
                if len(columns) == 2:
                    ratio = statistics.median(samples["before"][what]) / statistics.median(
                        samples["after"][what]
                    )
                    line += f" | {ratio:.1f}x"
                print(line + " |", flush=True)
    starts: dict[str, list[float]] = {c: [] for c in columns}
    for _ in range(args.runs):
        for c in columns:
            starts[c].append(startup(trees[c]))
    cells = " | ".join(_fmt(starts[c]) for c in columns)
    print(f"| - | - | - | interpreter start + `import service.cli` | {cells} |")


if __name__ == "__main__":
    main()
