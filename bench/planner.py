"""Benchmark of the planning core and the CLI (issue: planning core).

Run from the README's venv:  .venv/bin/python bench/planner.py [--quick]

1. The core on pre-built columnar input (``PositionTable`` built beforehand, as the stream
   service keeps it): 1k, 10k, 100k and 1M rows over 8 worlds x 25 strategies, 4 venues and
   2,000 symbols, half of them with lot sizes. Every world moves; half the strategies get new
   weights. Median and p90 of repeated runs; growth = time ratio between successive sizes.
2. Turning a plan into its record and intents (the dicts that get serialised).
3. The CLI end to end at 10k rows: ``rebalancer plan FILE`` as a subprocess (interpreter start
   included) and the same work in-process (parse JSON, validate, plan, serialise).

Targets: 10k rows <= 2 ms, 1M rows <= 300 ms, 10x rows costs at most 12x time.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from service.runtime import tune_allocator

tune_allocator()  # as the service and the CLI do at start-up, before the work allocates

from _data import context, portfolio  # noqa: E402

from service.planner import (  # noqa: E402
    MultiWorldProportionalRebalancer,
    PlanningContext,
    ProportionalRebalancer,
)
from service.request import parse_request  # noqa: E402

SIZES = (1_000, 10_000, 100_000, 1_000_000)


def timed(fn: Callable[[], object], repeat: int, rounds: int = 1) -> tuple[float, float]:
    """Median and p90 wall time in ms over ``repeat`` runs, after one warm-up run. With
    several ``rounds`` the median is the best round's (noise from other tenants of the machine
    only ever adds time, as timeit's documentation argues) and p90 is over all samples."""
    fn()
    medians, samples = [], []
    for _ in range(rounds):
        batch = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            batch.append((time.perf_counter() - start) * 1e3)
        medians.append(statistics.median(batch))
        samples += batch
    samples.sort()
    return min(medians), samples[min(len(samples) - 1, int(len(samples) * 0.9))]


ROUNDS = 5


def repeats(rows: int, quick: bool) -> int:
    base = {1_000: 100, 10_000: 100, 100_000: 15, 1_000_000: 5}[rows]
    return max(3, base // 10) if quick else base


def bench_core(quick: bool) -> None:
    print("## Planning core on pre-built columns\n")
    print(f"Best-of-{ROUNDS}-rounds median; p90 over all runs of all rounds.\n")
    print("| rows | keys | planner | median ms | p90 ms | growth vs 10x fewer rows |")
    print("|---:|---:|---|---:|---:|---:|")
    previous: dict[str, float] = {}
    for rows in SIZES:
        ctx = context(portfolio(rows))
        for planner in (ProportionalRebalancer(), MultiWorldProportionalRebalancer()):
            label = "multi-world (+ global)" if planner.with_global else "per-world"
            median, p90 = timed(
                lambda p=planner, c=ctx: p.plan(c), repeats(rows, quick), 2 if quick else ROUNDS
            )
            keys = len(planner.plan(ctx).per_world)
            growth = f"{median / previous[label]:.1f}x" if label in previous else "-"
            previous[label] = median
            print(f"| {rows:,} | {keys:,} | {label} | {median:.2f} | {p90:.2f} | {growth} |")
    print()


def bench_materialise(quick: bool) -> None:
    print("## Plan record and intents (dicts) from a computed plan\n")
    print("| rows | traded keys | intents | median ms |")
    print("|---:|---:|---:|---:|")
    planner = MultiWorldProportionalRebalancer()
    for rows in SIZES[:3]:
        ctx = context(portfolio(rows))

        def materialise(c: PlanningContext = ctx) -> None:
            plan = planner.plan(c)
            plan.record()
            plan.intents()

        plan_only, _ = timed(lambda c=ctx: planner.plan(c), repeats(rows, quick) // 4 + 3)
        both, _ = timed(materialise, repeats(rows, quick) // 4 + 3)
        plan = planner.plan(ctx)
        traded = sum(len(w["deltas"]) for w in plan.record()["per_world"].values())
        print(f"| {rows:,} | {traded:,} | {len(plan.intents()):,} | {both - plan_only:.1f} |")
    print()


def qmtl_request(rows: int) -> bytes:
    """A QMTL-shaped request with ``rows`` position rows."""
    ctx = context(portfolio(rows))
    t = ctx.positions
    positions = [
        {
            "world_id": t.strategies[s][0],
            "strategy_id": t.strategies[s][1],
            "symbol": t.symbols[y],
            "venue": t.venues[v],
            "qty": q,
            "mark": m,
        }
        for s, v, y, q, m in zip(
            t.strategy.tolist(),
            t.venue.tolist(),
            t.symbol.tolist(),
            t.qty.tolist(),
            t.mark.tolist(),
            strict=True,
        )
    ]
    body = {
        "total_equity": ctx.total_equity,
        "world_alloc_before": {c.world_id: c.alloc_before for c in ctx.changes},
        "world_alloc_after": {c.world_id: c.alloc_after for c in ctx.changes},
        "strategy_alloc_before_total": {c.world_id: c.strategy_before for c in ctx.changes},
        "strategy_alloc_after_total": {c.world_id: c.strategy_after for c in ctx.changes},
        "positions": positions,
        "min_trade_notional": ctx.options.min_trade_notional,
        "lot_size_by_symbol": ctx.options.lot_size_by_symbol,
        "occurred_at": 0,
    }
    return orjson.dumps(body)


def bench_cli(quick: bool) -> None:
    rows = 10_000
    raw = qmtl_request(rows)
    print(f"## CLI end to end, {rows:,} rows (request of {len(raw) / 1e6:.1f} MB)\n")

    def in_process() -> None:
        plan = MultiWorldProportionalRebalancer().plan(parse_request(raw))
        orjson.dumps({**plan.record(), "intents": plan.intents()})

    median, p90 = timed(in_process, 10 if quick else 40)
    print("| what | median ms | p90 ms |")
    print("|---|---:|---:|")
    what = "in-process: parse + validate + plan + record + intents + JSON"
    print(f"| {what} | {median:.1f} | {p90:.1f} |")
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        f.write(raw)
        f.flush()
        cli = [sys.executable, "-m", "service.cli", "plan", f.name, "--with-intents"]
        empty = [sys.executable, "-c", "import service.cli"]

        def run(cmd: list[str]) -> None:
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

        median, p90 = timed(lambda: run(cli), 3 if quick else 10)
        print(f"| `rebalancer plan FILE --with-intents` (subprocess) | {median:.1f} | {p90:.1f} |")
        median, p90 = timed(lambda: run(empty), 3 if quick else 10)
        print(f"| of which interpreter start + imports | {median:.1f} | {p90:.1f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (for a smoke run)")
    parser.add_argument(
        "--only", choices=["core", "materialise", "cli"], help="one section (for A/B runs)"
    )
    args = parser.parse_args()
    print(f"Python {platform.python_version()}, {platform.machine()}, {sys.platform}\n")
    sections = {"core": bench_core, "materialise": bench_materialise, "cli": bench_cli}
    for name, run in sections.items():
        if args.only in (None, name):
            run(args.quick)


if __name__ == "__main__":
    main()
