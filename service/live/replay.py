"""A price history replayed through the live policy objects: one rule, offline and live.

``rebalancer backtest --config`` runs here. The configured rules go to the same
``PolicyRunner`` and ``RebalanceEngine`` the service runs, fed what the service would be fed:
an allocation event that gives the worlds their allocations, then for each date of the price
table one snapshot per world (its positions at that date's close, its cash). The runner is
asked after each snapshot, as the policy loop asks when a snapshot arrives; what it triggers
is planned by the engine; the plan fills at the close exactly as planned (whole lots), its
cost (the ``[costs]`` model) is paid from the world's cash, and the world reports the plan
reached in a snapshot one millisecond later, as an execution node would.

``Book`` is the simulated market (holdings, cash, fills, snapshots). A replay of the same
prices through a running service (``tests/stream/test_policy_parity.py``) uses the same
``Book`` against the real service, so both sides see the same snapshots at the same times.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine import EngineOptions, RebalanceEngine, Work
from ..messages import Position, PositionSnapshot, WeightsTarget
from ..messages.allocation import WorldAllocationsChanged
from ..messages.policy import PolicyRebalance
from ..planner import PlannerOptions
from ..planner.target_weight import AssetKey
from ..policies.calendar import DateArray
from ..policies.costs import CostModel
from ..policies.errors import PolicyError
from ..policies.inputs import FloatArray
from ..policies.measure import label
from ..state.allocations import AllocationState
from ..state.snapshots import SnapshotTable
from .config import PolicyRule, PolicySettings
from .runner import PolicyRunner

DAY_MS = 86_400_000
CLOSE_MS = 16 * 3_600_000
"""A date's close, as a time of the day (UTC): when its snapshot is taken and looked at."""
SEED_STRATEGY = "replay"
"""The strategy a world's positions are held in (unless its weights target names one)."""


def close_ms(date: np.datetime64) -> int:
    """The time (epoch ms, UTC) a date's close is replayed at."""
    return int(date.astype("datetime64[D]").astype(np.int64)) * DAY_MS + CLOSE_MS


def asset_key(column: str) -> AssetKey:
    """A price column's asset: ``venue:symbol``, or ``symbol`` (no venue)."""
    venue, sep, symbol = column.rpartition(":")
    if not symbol:
        raise PolicyError(f"prices: column {column!r} names no symbol")
    return (venue or None, symbol) if sep else (None, column)


@dataclass
class BookWorld:
    """One world of the book: what each strategy holds, the cash, the last plan reached."""

    portfolio_id: str
    world_id: str
    strategy_id: str
    holdings: dict[AssetKey, float] = field(default_factory=dict)
    cash: float = 0.0
    reached: str | None = None


@dataclass(frozen=True)
class Fill:
    """A plan carried out at one close: what it traded and what that cost."""

    plan_id: str
    traded: float
    """Gross notional traded."""
    cost: float


class Book:
    """The simulated market of a replay: worlds' holdings and cash, at one table's prices.

    Every world can trade every asset of the table; a world's snapshot lists them all (held
    or not) so that each has a mark."""

    def __init__(
        self,
        assets: Sequence[str],
        rules: Sequence[PolicyRule],
        costs: CostModel,
    ) -> None:
        self.keys = [asset_key(a) for a in assets]
        self.costs = costs
        self.worlds: dict[tuple[str, str], BookWorld] = {}
        for rule in rules:
            target = rule.target
            strategy = target.strategy_id if isinstance(target, WeightsTarget) else SEED_STRATEGY
            for world_id in rule.worlds:
                self.worlds[(rule.portfolio_id, world_id)] = BookWorld(
                    rule.portfolio_id, world_id, strategy
                )
        self.rules = {(r.portfolio_id, w): r for r in rules for w in r.worlds}
        tradable = set(self.keys)
        for rule in rules:
            if isinstance(rule.target, WeightsTarget):
                missing = [
                    label((w.venue, w.symbol))
                    for w in rule.target.weights
                    if (w.venue, w.symbol) not in tradable
                ]
                if missing:
                    raise PolicyError(
                        f"rule {rule.name!r}: target asset(s) {', '.join(missing)} have no "
                        "column in the prices (name columns venue:symbol, or symbol)"
                    )

    def allocations(self) -> dict[str, dict[str, float]]:
        """Each portfolio's worlds, an equal share of its equity each."""
        out: dict[str, dict[str, float]] = {}
        for portfolio_id, world_id in self.worlds:
            out.setdefault(portfolio_id, {})[world_id] = 0.0
        for worlds in out.values():
            for world_id in worlds:
                worlds[world_id] = 1.0 / len(worlds)
        return out

    def allocation_events(self, equity: float, at_ms: int) -> list[WorldAllocationsChanged]:
        """The events that give the worlds their allocations of ``equity`` (one per portfolio)."""
        return [
            WorldAllocationsChanged(
                type="world_allocations_changed",
                event_id=f"replay:{portfolio_id}:start",
                portfolio_id=portfolio_id,
                occurred_at=at_ms,
                total_equity=equity,
                world_alloc_before=allocs,
                world_alloc_after=allocs,
            )
            for portfolio_id, allocs in sorted(self.allocations().items())
        ]

    def seed(self, equity: float, prices: FloatArray) -> None:
        """Buy each world's starting positions at the first close: its weights target's
        weights if it has fixed ones, else an equal split over the table's assets."""
        marks = dict(zip(self.keys, prices.tolist(), strict=True))
        for (portfolio_id, world_id), world in self.worlds.items():
            value = equity * self.allocations()[portfolio_id][world_id]
            target = self.rules[(portfolio_id, world_id)].target
            if isinstance(target, WeightsTarget):
                weights = {(w.venue, w.symbol): w.weight for w in target.weights}
            else:
                weights = {k: 1.0 / len(self.keys) for k in self.keys}
            world.holdings = {k: value * w / marks[k] for k, w in weights.items()}
            world.cash = value - math.fsum(value * w for w in weights.values())

    def snapshot(self, world: BookWorld, prices: FloatArray, as_of: int) -> PositionSnapshot:
        """The world's snapshot at a close: every asset of the table with its mark."""
        return PositionSnapshot(
            world_id=world.world_id,
            strategy_id=world.strategy_id,
            as_of=as_of,
            cash=world.cash,
            converged_plan_id=world.reached,
            positions=[
                Position(venue=k[0], symbol=k[1], qty=world.holdings.get(k, 0.0), mark=p)
                for k, p in zip(self.keys, prices.tolist(), strict=True)
            ],
        )

    def fill(self, intents: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Fill]:
        """Carry out a plan's intents at their marks; each world's fill (by portfolio and
        world). Costs are paid from the world's cash, as are the trades."""
        traded: dict[tuple[str, str], list[float]] = {}
        plans: dict[tuple[str, str], str] = {}
        for intent in intents:
            key = (str(intent["portfolio_id"]), str(intent["world_id"]))
            world = self.worlds[key]
            asset = (intent["venue"], intent["symbol"])
            delta = float(intent["delta_qty"])
            mark = float(intent["mark"])
            world.holdings[asset] = world.holdings.get(asset, 0.0) + delta
            world.cash -= delta * mark
            traded.setdefault(key, []).append(abs(delta) * mark)
            plans[key] = str(intent["plan_id"])
        out = {}
        for key, notionals in traded.items():
            cost = self.costs.cost(np.asarray(notionals)) if notionals else 0.0
            self.worlds[key].cash -= cost
            self.worlds[key].reached = plans[key]
            out[key] = Fill(plans[key], math.fsum(notionals), cost)
        return out

    def value(self, world: BookWorld, prices: FloatArray) -> float:
        held = (
            world.holdings.get(k, 0.0) * p for k, p in zip(self.keys, prices.tolist(), strict=True)
        )
        return math.fsum(held) + world.cash

    def weights(self, world: BookWorld, prices: FloatArray) -> dict[str, float]:
        """The world's weights (value of each asset held over the world's value)."""
        total = self.value(world, prices)
        return {
            label(k): world.holdings.get(k, 0.0) * p / total
            for k, p in zip(self.keys, prices.tolist(), strict=True)
            if world.holdings.get(k, 0.0) != 0.0
        }


@dataclass(frozen=True)
class Rebalance:
    """One correction the policies triggered, as carried out."""

    date: str
    portfolio_id: str
    world_id: str
    policy: str
    trigger: str
    reason: str
    plan_id: str
    traded: float
    cost: float
    weights: dict[str, float]
    """The world's weights right after the fill, by asset label."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "date": self.date,
            "portfolio_id": self.portfolio_id,
            "world_id": self.world_id,
            "policy": self.policy,
            "trigger": self.trigger,
            "reason": self.reason,
            "plan_id": self.plan_id,
            "traded": self.traded,
            "cost": self.cost,
            "weights": self.weights,
        }


@dataclass(frozen=True)
class Replay:
    """What the rules did over the history: their rebalances and the equity curve."""

    dates: DateArray
    equity: FloatArray
    """Total value of every replayed world at each close, after that close's trades."""
    rebalances: list[Rebalance]
    outcomes: dict[str, int]
    """How many evaluations ended how (``triggered``, ``in_band``, ``not_due``...)."""


class _Driver:
    """Engine, runner and book together: the service's loop, in memory."""

    def __init__(self, policies: PolicySettings, planner: PlannerOptions, book: Book) -> None:
        self.book = book
        self.state = AllocationState()
        self.snapshots = SnapshotTable()
        self.engine = RebalanceEngine(self.state, self.snapshots, EngineOptions(planner=planner))
        self.runner = PolicyRunner(policies, self.engine)
        self.outcomes: dict[str, int] = {}

    def carry_out(self, work: Work) -> Work:
        """Apply a work's state writes, as the edges do once it is published."""
        if work.pending:
            self.state.apply(*work.pending)
        self.state.apply_all(work.state)
        return work

    def send(self, event: WorldAllocationsChanged | PolicyRebalance, now_ms: int) -> Work:
        return self.carry_out(self.engine.on_event(event, now_ms))

    def look(self, world: BookWorld, now_ms: int) -> list[PolicyRebalance]:
        """Evaluate the rules for a world whose snapshot changed; the events they trigger."""
        for work in self.engine.released_work(now_ms):
            self.carry_out(work)
        for work in self.engine.reached_work(now_ms):
            self.carry_out(work)
        out = []
        memories = []
        for ev in self.runner.evaluate(now_ms, lambda _p: True, [world.world_id]):
            if ev.portfolio_id != world.portfolio_id:
                continue
            self.outcomes[ev.outcome] = self.outcomes.get(ev.outcome, 0) + 1
            if ev.event is not None:
                self.runner.published(ev.event, now_ms)
                out.append(ev.event)
            if ev.memory is not None:
                memories.append(ev.memory)
        for work in self.engine.remember(memories):  # what it looked at, as the loop keeps it
            self.carry_out(work)
        return out


MAX_PLANS_PER_CLOSE = 100
"""A guard: a world replanned more often than this at one close is a bug, not a market."""


def _close(
    driver: _Driver, world: BookWorld, row: FloatArray, date: str, now: int
) -> list[Rebalance]:
    """One world at one close: its snapshot looked at, and every correction it triggers
    planned, filled and reported reached (one millisecond later each), until none is."""
    book = driver.book
    out: list[Rebalance] = []
    driver.snapshots.apply(book.snapshot(world, row, now))
    events = driver.look(world, now)
    while events:
        if len(out) >= MAX_PLANS_PER_CLOSE:
            raise PolicyError(f"world {world.world_id!r} replanned {len(out)} times on {date}")
        event = events.pop(0)
        work = driver.send(event, now)
        fill = book.fill(work.intents).get((event.portfolio_id, event.world_id))
        if fill is None:
            continue
        out.append(
            Rebalance(
                date=date,
                portfolio_id=event.portfolio_id,
                world_id=event.world_id,
                policy=event.policy,
                trigger=event.trigger,
                reason=event.reason,
                plan_id=fill.plan_id,
                traded=fill.traded,
                cost=fill.cost,
                weights=book.weights(world, row),
            )
        )
        now += 1
        driver.snapshots.apply(book.snapshot(world, row, now))
        events.extend(driver.look(world, now))
    return out


def replay(
    policies: PolicySettings,
    prices_table: Any,
    *,
    planner: PlannerOptions | None = None,
    costs: CostModel | None = None,
    initial_equity: float = 1_000_000.0,
    on_close: Callable[[str], None] | None = None,
) -> Replay:
    """Replay a price table (``PriceTable``) through the rules of ``policies``."""
    from ..backtest.prices import as_table

    if not policies.rules:
        raise PolicyError("policies: the configuration has no [[policies.rules]] to replay")
    if not (initial_equity > 0 and math.isfinite(initial_equity)):
        raise PolicyError(f"initial equity must be a positive number, got {initial_equity}")
    table = as_table(prices_table)
    book = Book(table.assets, policies.rules, costs or CostModel())
    driver = _Driver(policies, planner or PlannerOptions(), book)
    start = close_ms(table.dates[0])
    book.seed(initial_equity, table.prices[0])
    for event in book.allocation_events(initial_equity, start - 1):
        driver.send(event, start - 1)
    rebalances: list[Rebalance] = []
    equity = np.empty(len(table), dtype=np.float64)
    for i, date in enumerate(table.dates):
        now = close_ms(date)
        row = table.prices[i]
        for world in book.worlds.values():
            rebalances.extend(_close(driver, world, row, str(date), now))
        equity[i] = math.fsum(book.value(w, row) for w in book.worlds.values())
        if on_close is not None:
            on_close(str(date))
    return Replay(table.dates, equity, rebalances, dict(sorted(driver.outcomes.items())))


__all__ = ["CLOSE_MS", "Book", "Fill", "Rebalance", "Replay", "asset_key", "close_ms", "replay"]
