"""What any instance can tell about every portfolio, built from the topics (SPEC 7).

The worker's ``AllocationState`` holds what this instance owns and is authoritative for it.
The read model is a second copy fed with every changelog record (whoever wrote it) and with
every plan record, so an instance answers reads for portfolios it does not own, and after a
restart, as soon as it has read the topics again. It also keeps the execution nodes' last
heartbeats and their fill reports (each plan's realised cost). It is only ever read by the API.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import msgspec
import orjson
from pydantic import BaseModel, ConfigDict, Field

from ..messages import NodeCounts, NodeHeartbeat, PlanFills
from .allocations import AllocationState, CommandResult
from .realised import RealisedCosts

ALIVE_INTERVALS = 3
"""A node is alive while its last heartbeat is less than this many of its intervals old."""


class PlanSummary(BaseModel):
    """One plan record, without its per-key detail (which can be megabytes)."""

    model_config = ConfigDict(frozen=True)

    plan_id: str
    event_id: str
    portfolio_id: str
    status: str
    worlds: list[str]
    occurred_at: int
    created_at: int
    intents: int
    coalesced_event_ids: list[str]
    held_reason: str | None = None
    turnover: float = 0.0
    """Notional of the keys the plan trades (what its intents carry)."""
    traded_keys: int = 0
    policy: str | None = None
    """The policy that asked for the plan ('command' for an operator's rebalance)."""
    trigger: str | None = None
    """What set the policy off (band, calendar, ..., command); None for allocation events."""


class _Key(msgspec.Struct):
    notional: float = 0.0
    legs: list[msgspec.Raw] = []


class _World(msgspec.Struct):
    deltas: list[_Key] = []


class _Options(msgspec.Struct):
    execution_mode: str = "per_world"


class _Policy(msgspec.Struct):
    policy: str = ""
    trigger: str = ""


class _PlanHeader(msgspec.Struct):
    """The fields of a plan record a summary needs; ``per_world`` is left undecoded (its
    keys are the worlds), which keeps reading a large history cheap."""

    plan_id: str
    event_id: str
    portfolio_id: str
    occurred_at: int
    created_at: int
    status: str = "planned"
    per_world: dict[str, _World] = {}
    global_deltas: list[_Key] = []
    options: _Options | None = None
    intent_ids: list[str] = []
    coalesced_event_ids: list[str] = []
    held_reason: str | None = None
    policy: _Policy | None = None

    def traded(self) -> list[_Key]:
        """The keys whose intents the plan publishes (the global view in a shared account)."""
        shared = self.options is not None and self.options.execution_mode == "shared_account"
        keys = (
            self.global_deltas if shared else [k for w in self.per_world.values() for k in w.deltas]
        )
        return [k for k in keys if k.legs]


_plan_header = msgspec.json.Decoder(_PlanHeader)


def plan_summary(value: bytes | None) -> PlanSummary:
    """The summary of a plan record as published; ``ValueError`` if it is not one."""
    if value is None:
        raise ValueError("empty value (null)")
    try:
        head = _plan_header.decode(value)
    except msgspec.MsgspecError as exc:
        raise ValueError(f"not a plan record: {exc}") from None
    held_reason = head.held_reason
    traded = head.traded()
    return PlanSummary(
        plan_id=head.plan_id,
        event_id=head.event_id,
        portfolio_id=head.portfolio_id,
        status=head.status,
        worlds=sorted(head.per_world) if head.per_world else _held_worlds(held_reason),
        occurred_at=head.occurred_at,
        created_at=head.created_at,
        intents=len(head.intent_ids),
        coalesced_event_ids=head.coalesced_event_ids,
        held_reason=held_reason,
        turnover=round(sum(k.notional for k in traded), 8),
        traded_keys=len(traded),
        policy=head.policy.policy if head.policy else None,
        trigger=head.policy.trigger if head.policy else None,
    )


def _held_worlds(reason: str | None) -> list[str]:
    """A held record names its worlds in its reason: ``"<reasons>: worlds a, b"``."""
    _, found, names = (reason or "").rpartition(": worlds ")
    return sorted(n.strip() for n in names.split(",") if n.strip()) if found else []


class CursorError(ValueError):
    """A paging cursor this service did not hand out."""


@dataclass
class PlanHistory:
    """Plan summaries, newest first, by ``(created_at, plan_id)``; a plan id seen again (a
    record published twice) keeps its place and takes the newer status."""

    _order: list[tuple[int, str]] = field(default_factory=list)
    _by_id: dict[str, PlanSummary] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, summary: PlanSummary) -> None:
        known = self._by_id.get(summary.plan_id)
        self._by_id[summary.plan_id] = summary
        if known is None:
            bisect.insort(self._order, (summary.created_at, summary.plan_id))
        elif known.created_at != summary.created_at:  # keep its first place
            self._by_id[summary.plan_id] = summary.model_copy(
                update={"created_at": known.created_at}
            )

    def get(self, plan_id: str) -> PlanSummary | None:
        return self._by_id.get(plan_id)

    def oldest_first(self) -> list[PlanSummary]:
        """Every plan, oldest first."""
        return [self._by_id[plan_id] for _, plan_id in self._order]

    def page(
        self,
        *,
        portfolio: str | None = None,
        world: str | None = None,
        status: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[PlanSummary], str | None]:
        """Up to ``limit`` plans matching the filters, newest first, after ``cursor``; and the
        cursor of the next page (None on the last)."""
        end = len(self._order)
        if cursor is not None:
            end = bisect.bisect_left(self._order, _decode_cursor(cursor))
        out: list[PlanSummary] = []
        i = end - 1
        while i >= 0 and len(out) < limit:
            plan = self._by_id[self._order[i][1]]
            if (
                (portfolio is None or plan.portfolio_id == portfolio)
                and (world is None or world in plan.worlds)
                and (status is None or plan.status == status)
            ):
                out.append(plan)
            i -= 1
        more = i >= 0 and len(out) == limit
        return out, (_encode_cursor(self._order[i + 1]) if more else None)


def _encode_cursor(position: tuple[int, str]) -> str:
    return f"{position[0]}.{position[1]}"


def _decode_cursor(cursor: str) -> tuple[int, str]:
    created, _, plan_id = cursor.partition(".")
    if not created.isdigit() or not plan_id:
        raise CursorError(f"cursor: {cursor[:80]!r} is not a cursor this service handed out")
    return int(created), plan_id


class NodeView(BaseModel):
    """An execution node as its last heartbeat tells it."""

    node_id: str
    venue: str
    alive: bool = Field(
        description="Its last heartbeat is less than three of its intervals old and it did "
        "not say it stopped."
    )
    ready: bool = Field(description="Restored and consuming, at its last heartbeat.")
    stopped: bool = Field(description="Its last heartbeat said it stopped cleanly.")
    last_heartbeat: int = Field(description="When it sent its last heartbeat (epoch ms).")
    started_at: int
    interval_ms: int
    plans: list[str] = Field(description="Plans it is working on (not reached at its venue).")
    counts: NodeCounts
    endpoint: str | None = Field(description="Where it serves /metrics, /healthz, /readyz.")


@dataclass
class NodeBoard:
    """The last heartbeat of every execution node (``topics.nodes``), by node id."""

    beats: dict[str, NodeHeartbeat] = field(default_factory=dict)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """A record of the nodes' topic: a heartbeat, or a tombstone that forgets its node.
        ``ValueError`` if it is neither. An older heartbeat than the one held is ignored."""
        if value is None:
            if key:
                self.beats.pop(key.decode(errors="replace"), None)
            return
        beat = NodeHeartbeat.model_validate_json(value)
        held = self.beats.get(beat.node_id)
        if held is None or beat.sent_at >= held.sent_at:
            self.beats[beat.node_id] = beat

    def views(self, now_ms: int) -> list[NodeView]:
        """Every node, by venue then id, alive or not as of ``now_ms``."""
        return [
            NodeView(
                node_id=b.node_id,
                venue=b.venue,
                alive=not b.stopped and now_ms - b.sent_at < ALIVE_INTERVALS * b.interval_ms,
                ready=b.ready,
                stopped=b.stopped,
                last_heartbeat=b.sent_at,
                started_at=b.started_at,
                interval_ms=b.interval_ms,
                plans=list(b.plans),
                counts=b.counts,
                endpoint=b.endpoint,
            )
            for b in sorted(self.beats.values(), key=lambda b: (b.venue, b.node_id))
        ]


def _kind(value: bytes) -> object:
    """The ``kind`` of a nodes-topic record (heartbeats have none)."""
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    return document.get("kind") if isinstance(document, dict) else None


class ReadModel:
    """The state of every portfolio and the plan history, as the topics tell them."""

    def __init__(self) -> None:
        self.state = AllocationState()
        self.plans = PlanHistory()
        self.nodes = NodeBoard()
        self.realised = RealisedCosts()
        self.changelog_records = 0
        self.plan_records = 0

    def apply_changelog(self, key: bytes, value: bytes | None) -> None:
        """A changelog record, whoever wrote it. Raises ``ChangelogError`` as the worker's
        state does (the service stops rather than show a state it cannot read)."""
        self.state.apply(key, value)
        self.changelog_records += 1

    def apply_plan(self, value: bytes | None) -> None:
        """A record of the plan topic (``ValueError`` if it is not a plan record)."""
        self.plans.add(plan_summary(value))
        self.plan_records += 1

    def apply_node(self, key: bytes | None, value: bytes | None) -> None:
        """A record of the nodes' topic: a heartbeat, a fill report (``PlanFills``, told by
        its ``kind``) or a tombstone of either (``ValueError`` if it is none of these)."""
        name = None if key is None else key.decode(errors="replace")
        if value is None:
            if name is None or not self.realised.forget(name):
                self.nodes.apply(key, value)
            return
        if _kind(value) == "plan_fills":
            self.realised.apply(name, PlanFills.model_validate_json(value))
        else:
            self.nodes.apply(key, value)

    def command(self, command_id: str) -> tuple[str, CommandResult] | None:
        """A decided command, with its portfolio, by id (the latest ``COMMANDS_KEPT`` per
        portfolio are kept)."""
        for portfolio_id, portfolio in self.state.portfolios.items():
            for decided in reversed(portfolio.commands):
                if decided.command_id == command_id:
                    return portfolio_id, decided
        return None

    def portfolio_ids(self) -> list[str]:
        state = self.state
        return sorted({p for p, _ in state.worlds} | set(state.portfolios))
