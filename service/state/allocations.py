"""The service's own state: current allocations, plans in flight, held work, applied events.

It lives in memory and in a compacted changelog topic the service owns. Keys:

- ``world|{portfolio}|{world}``: a ``WorldState`` (allocation, plan in flight, held change).
- ``portfolio|{portfolio}``: a ``PortfolioState`` (equity, the ids of recently applied events).
- ``pending|{portfolio}``: a ``PendingPlan``, written *before* a plan's intents are published
  and removed (tombstone) once its world states are written. Finding one on restart means the
  plan may be half published: it is republished as it was, never re-planned on positions that
  may have moved since.
- ``proposal|{portfolio}|{plan_id}``: a ``ProposedPlan`` awaiting approval (its record, as
  proposed, and the terms its approval is checked against); removed when it is approved,
  rejected or expires.
- ``dead_letters|{topic}|{partition}``: the offset up to which the input partition's bad
  records have been dead-lettered, so a restart that reads them again does not repeat them.
- ``policy|{portfolio}|{world}``: a ``PolicyMemory`` (``policy_memory``): the period a live
  policy last looked at the world in and its mark samples, so a restart or a new owner repeats
  no check.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any, Literal

import orjson
from pydantic import Field, ValidationError

from ..errors import describe
from ..messages._types import EpochMs, LotSize, Message, Name, NonNegative, Ratio
from ..messages.policy import PolicyRebalance
from .policy_memory import PolicyMemory

APPLIED_EVENTS_KEPT = 2_000
"""How many recent event ids a portfolio remembers, to recognise re-delivered events."""

POLICY_TRIGGERS_KEPT = 64
"""How many recent policy triggers a world remembers (for cooldowns and trade limits)."""


class HoldReason(StrEnum):
    """Why a world's changes wait. The values are the strings the changelog and the held
    plan records carry, so the enum changes no stored byte."""

    PLAN_IN_FLIGHT = "plan_in_flight"
    """The world's last plan is neither reached by its positions nor past the settle
    timeout: planning again now would plan from positions still moving."""
    STALE_SNAPSHOTS = "stale_snapshots"
    """A snapshot of the world is older than ``max_snapshot_age_ms``: its positions may be
    out of date."""
    PAUSED = "paused"
    """An operator paused the world or its portfolio: changes wait until ``resume``."""
    HALTED = "halted"
    """An operator halted the world or its portfolio: nothing is published until
    ``resume``."""
    AWAITING_APPROVAL = "awaiting_approval"
    """The world's change was planned and proposed (approval mode): it waits for an
    approver; later changes join it, which makes the proposal expire when approved."""


TradingMode = Literal["active", "reduce-only", "paused", "halted"]
"""How freely a portfolio or world trades; the stricter of the two applies to a world.
``reduce-only`` holds nothing: its changes are planned, and only what shrinks exposure is
published (the rest is held, listed in the plan record)."""

STRICTNESS: dict[str, int] = {"active": 0, "reduce-only": 1, "paused": 2, "halted": 3}

COMMANDS_KEPT = 100
"""Applied or refused commands a portfolio's state remembers (``GET /v1/commands/{id}``)."""


class TradingState(Message):
    """A portfolio's or a world's trading mode, and the command that set it."""

    mode: TradingMode = "active"
    command_id: Name | None = None
    by: Name | None = None
    reason: str | None = None
    since: EpochMs | None = None
    latched_by_flatten: bool = Field(
        default=False, description="Halted by a flatten: only an explicit resume lifts it."
    )


class CommandResult(Message):
    """What became of an operator's command: applied (with its effect) or refused (why)."""

    command_id: Name
    action: Name
    world_id: Name | None
    outcome: Literal["applied", "refused"]
    detail: str
    requested_by: Name
    reason: str
    requested_at: EpochMs
    decided_at: EpochMs


class InFlight(Message):
    """A published plan not yet reached by the positions."""

    plan_id: Name
    event_ids: list[Name]
    strategies: list[Name] = Field(description="Strategies whose snapshots must report it.")
    planned_at: EpochMs


class PacedStep(Message):
    """One step of a paced move: where the world's allocation and strategy weights go."""

    alloc_after: Ratio | None = None
    strategy_after: dict[Name, Ratio] | None = None


class Pacing(Message):
    """A held change that is a step of a paced move (``[pacing]``): which step it is, and
    the steps after it. Kept in the changelog state, so a restarted or new owner goes on
    with the next step instead of planning the whole move again."""

    step: int = Field(ge=2, description="This step's number (the first is planned at once).")
    steps: int = Field(ge=2, description="How many steps the move has in all.")
    remaining: list[PacedStep] = Field(
        default_factory=list, description="The steps after this one, in order."
    )

    def final(self, held: HeldChange) -> PacedStep:
        """Where the whole move ends: the last remaining step, or ``held`` itself."""
        if self.remaining:
            return self.remaining[-1]
        return PacedStep(alloc_after=held.alloc_after, strategy_after=held.strategy_after)


class HeldChange(Message):
    """Allocation changes waiting for a world's plan in flight or for fresh snapshots.

    Later changes coalesce into it: the newest world allocation wins, strategy weights merge.
    A policy's correction waits here too (``policy``) and is planned on release, measured
    then; an external change that joins it replaces it (the world's target moved), and a
    newer policy event replaces an older one.
    """

    event_ids: list[Name]
    reason: HoldReason
    since: EpochMs
    alloc_after: Ratio | None = None
    strategy_after: dict[Name, Ratio] | None = None
    alloc_before: Ratio | None = Field(
        default=None, description="The first held event's before, for a world not yet known."
    )
    strategy_before: dict[Name, Ratio] | None = None
    total_equity: NonNegative | None = None
    occurred_at: EpochMs
    policy: PolicyRebalance | None = None
    min_trade_notional: NonNegative | None = Field(
        default=None, description="The held events' own minimum notional (the latest given)."
    )
    lot_size_by_symbol: dict[Name, LotSize] | None = Field(
        default=None, description="The held events' own lot sizes (later events win)."
    )
    requested_by: Name | None = Field(
        default=None,
        description="Who asked for the change, when a command or a policy did (four-eyes).",
    )
    pacing: Pacing | None = Field(
        default=None,
        description="Set when the change is the next step of a paced move: it waits for the "
        "previous step's plan to be reached (reason plan_in_flight).",
    )

    def final_alloc(self) -> float | None:
        """The world allocation the change ends at (a paced move's last step's)."""
        if self.pacing is None:
            return self.alloc_after
        return self.pacing.final(self).alloc_after


class WorldState(Message):
    """What the service knows of one world."""

    portfolio_id: Name
    world_id: Name
    alloc: Ratio | None = None
    strategy_alloc: dict[Name, Ratio] = Field(default_factory=dict)
    in_flight: InFlight | None = None
    held: HeldChange | None = None
    policy_triggers: list[EpochMs] = Field(
        default_factory=list,
        description="When policy events for this world were accepted, oldest first.",
    )
    trading: TradingState = Field(default_factory=TradingState)
    approval: bool | None = Field(
        default=None,
        description="Whether the world's plans need approval, as a command set it (null: "
        "the portfolio's setting, else the configuration, decides).",
    )
    proposal: Name | None = Field(
        default=None, description="The plan proposed for the world, awaiting approval."
    )
    reached_notified: Name | None = Field(
        default=None,
        description="The plan in flight whose 'reached' notification was published (so a "
        "restart does not publish it again).",
    )


class PortfolioState(Message):
    """Portfolio-wide state: equity and the recently applied events."""

    portfolio_id: Name
    total_equity: NonNegative | None = None
    applied_event_ids: list[Name] = Field(default_factory=list)
    trading: TradingState = Field(default_factory=TradingState)
    commands: list[CommandResult] = Field(
        default_factory=list, description="The latest commands decided, oldest first."
    )
    approval: bool | None = Field(
        default=None,
        description="Whether the portfolio's plans need approval, as a command set it (null: "
        "the configuration decides).",
    )


class ApprovalTerms(Message):
    """What a proposed plan's approval is checked against, and what it then writes."""

    requested_by: Name | None = Field(
        description="The token whose command, or the policy, that produced the plan "
        "(null for allocation events): under four-eyes it cannot approve the plan."
    )
    proposed_at: EpochMs
    deadline: EpochMs = Field(description="Expires unless approved before (approval.ttl_ms).")
    basis: dict[Name, str] = Field(
        description="Per world, a digest of what the plan was made from: its allocations, "
        "the changes it carries out, the portfolio's equity and its positions."
    )
    worlds: list[WorldState] = Field(
        description="The planned worlds as publishing the plan leaves them (allocations, "
        "plan in flight); applied to the worlds as they are when it is approved."
    )


class ProposedPlan(Message):
    """A plan awaiting approval: its record as proposed (published byte for byte on
    approval) and the terms of its approval."""

    portfolio_id: Name
    record: dict[str, Any]
    terms: ApprovalTerms


class PendingPlan(Message):
    """A plan being published: its record, and the state to write once it is out."""

    portfolio_id: Name
    record: dict[str, Any]
    worlds: list[WorldState]
    portfolio: PortfolioState
    proposal: ApprovalTerms | None = Field(
        default=None, description="Set when the plan is proposed, not published (approval)."
    )
    closes_proposal: bool = Field(
        default=False, description="The plan is an approved proposal, removed with it."
    )


def world_key(portfolio_id: str, world_id: str) -> bytes:
    return f"world|{portfolio_id}|{world_id}".encode()


def portfolio_key(portfolio_id: str) -> bytes:
    return f"portfolio|{portfolio_id}".encode()


def pending_key(portfolio_id: str) -> bytes:
    return f"pending|{portfolio_id}".encode()


def proposal_key(portfolio_id: str, plan_id: str) -> bytes:
    return f"proposal|{portfolio_id}|{plan_id}".encode()


def dead_letters_key(topic: str, partition: int) -> bytes:
    return f"dead_letters|{topic}|{partition}".encode()


Record = tuple[bytes, bytes | None]
"""A changelog record: key and value (None is a tombstone)."""


def encode(state: Message) -> bytes:
    return orjson.dumps(state.model_dump(mode="json"))


class ChangelogError(ValueError):
    """A changelog record that cannot be read. Skipping it would make the service forget a
    world (or a half-published plan), so the service stops and says which record it is."""


class AllocationState:
    """All portfolios' state, rebuilt by replaying the changelog."""

    def __init__(self) -> None:
        self.worlds: dict[tuple[str, str], WorldState] = {}
        self.portfolios: dict[str, PortfolioState] = {}
        self.pending: dict[str, bytes] = {}
        """Write-ahead plans by portfolio, as written: parsed only if a restart needs one."""
        self.proposals: dict[tuple[str, str], bytes] = {}
        """Plans awaiting approval by (portfolio, plan id), as written: parsed when used."""
        self.dead_lettered: dict[tuple[str, int], int] = {}
        """Per input (topic, partition): records below this offset were dead-lettered already
        where they were bad."""
        self.policy_memories: dict[tuple[str, str], PolicyMemory] = {}
        """What the live policies remember of each watched world (``policy_memory``)."""

    def apply(self, key: bytes, value: bytes | None) -> None:
        """Apply one changelog record (last write per key wins)."""
        kind, _, rest = key.decode(errors="replace").partition("|")
        try:
            if kind == "world":
                portfolio_id, _, world_id = rest.partition("|")
                if value is None:
                    self.worlds.pop((portfolio_id, world_id), None)
                else:
                    self.worlds[(portfolio_id, world_id)] = WorldState.model_validate_json(value)
            elif kind == "portfolio":
                if value is None:
                    self.portfolios.pop(rest, None)
                else:
                    self.portfolios[rest] = PortfolioState.model_validate_json(value)
            elif kind == "pending":
                if value is None:
                    self.pending.pop(rest, None)
                else:
                    self.pending[rest] = value
            elif kind == "proposal":
                portfolio_id, _, plan_id = rest.partition("|")
                if value is None:
                    self.proposals.pop((portfolio_id, plan_id), None)
                else:
                    self.proposals[(portfolio_id, plan_id)] = value
            elif kind == "dead_letters":
                self._apply_dead_letters(key, rest, value)
            elif kind == "policy":
                portfolio_id, _, world_id = rest.partition("|")
                if value is None:
                    self.policy_memories.pop((portfolio_id, world_id), None)
                else:
                    memory = PolicyMemory.model_validate_json(value)
                    self.policy_memories[(portfolio_id, world_id)] = memory
            else:
                raise ChangelogError(f"unknown changelog key {key!r}")
        except ValidationError as exc:
            raise ChangelogError(f"changelog record {key!r}: {describe(exc)}") from None
        except orjson.JSONDecodeError as exc:
            raise ChangelogError(f"changelog record {key!r}: not JSON ({exc})") from None

    def _apply_dead_letters(self, key: bytes, rest: str, value: bytes | None) -> None:
        topic, _, partition = rest.rpartition("|")
        if not topic or not partition.isdigit():
            raise ChangelogError(f"changelog key {key!r} is not 'dead_letters|topic|partition'")
        slot = (topic, int(partition))
        if value is None:
            self.dead_lettered.pop(slot, None)
            return
        offset = orjson.loads(value)
        if not isinstance(offset, int) or offset < 0:
            raise ChangelogError(f"changelog record {key!r}: {value[:40]!r} is not an offset")
        self.dead_lettered[slot] = offset

    def pending_plan(self, portfolio_id: str) -> PendingPlan:
        """The portfolio's write-ahead plan, parsed (``ChangelogError`` if unreadable)."""
        try:
            return PendingPlan.model_validate_json(self.pending[portfolio_id])
        except ValidationError as exc:
            raise ChangelogError(f"pending plan of {portfolio_id!r}: {describe(exc)}") from None

    def proposal(self, portfolio_id: str, plan_id: str) -> ProposedPlan | None:
        """A plan of the portfolio awaiting approval, parsed (``ChangelogError`` if
        unreadable); None if there is none by that id."""
        raw = self.proposals.get((portfolio_id, plan_id))
        if raw is None:
            return None
        try:
            return ProposedPlan.model_validate_json(raw)
        except ValidationError as exc:
            raise ChangelogError(
                f"proposal {plan_id!r} of {portfolio_id!r}: {describe(exc)}"
            ) from None

    def apply_all(self, records: Iterable[Record]) -> None:
        for key, value in records:
            self.apply(key, value)

    def world(self, portfolio_id: str, world_id: str) -> WorldState:
        return self.worlds.get(
            (portfolio_id, world_id), WorldState(portfolio_id=portfolio_id, world_id=world_id)
        )

    def policy_memory(self, portfolio_id: str, world_id: str) -> PolicyMemory:
        """What the live policies remember of the world (nothing yet: an empty memory)."""
        return self.policy_memories.get(
            (portfolio_id, world_id), PolicyMemory(portfolio_id=portfolio_id, world_id=world_id)
        )

    def portfolio(self, portfolio_id: str) -> PortfolioState:
        return self.portfolios.get(portfolio_id, PortfolioState(portfolio_id=portfolio_id))

    def portfolio_worlds(self, portfolio_id: str) -> list[WorldState]:
        return [s for (p, _), s in sorted(self.worlds.items()) if p == portfolio_id]

    def trading_mode(self, ws: WorldState) -> TradingMode:
        """The stricter of the world's and its portfolio's trading modes."""
        portfolio = self.portfolio(ws.portfolio_id).trading.mode
        return max(portfolio, ws.trading.mode, key=STRICTNESS.__getitem__)

    def was_applied(self, portfolio_id: str, event_id: str) -> bool:
        return event_id in self.portfolio(portfolio_id).applied_event_ids

    @staticmethod
    def with_applied(portfolio: PortfolioState, event_ids: Iterable[str]) -> PortfolioState:
        """The portfolio state with ``event_ids`` remembered as applied."""
        kept = [*portfolio.applied_event_ids, *event_ids][-APPLIED_EVENTS_KEPT:]
        return portfolio.model_copy(update={"applied_event_ids": kept})
