"""What the engine decided, as data: the edges carry a ``Work`` out and report its outcome."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from functools import cached_property
from typing import Any

from ..planner import Plan
from ..planner.intents import intents_from_record
from ..state.allocations import HoldReason, Record

Json = dict[str, Any]


class Outcome(Enum):
    """What became of an event (or of held changes on release)."""

    PLANNED = "planned"
    """A plan to publish; worlds of the same event may be held as well (``held_worlds``)."""
    HELD = "held"
    """Every world of the event waits (``held_reasons`` says why): only a held record and
    the held changes are written."""
    DUPLICATE = "duplicate"
    """The event was applied before: nothing to do, not even a commit of state."""
    SUPERSEDED = "superseded"
    """A policy event measured before its world's latest plan: recorded as applied, dropped
    (what it measured has moved)."""
    DROPPED = "dropped"
    """A held policy correction that cannot be planned on release: freed, not planned
    (``why`` says why)."""
    REFUSED = "refused"
    """Held changes that cannot be planned on release: they stay held and are tried again
    (``why`` says why); nothing is written."""
    SKIPPED = "skipped"
    """A policy correction its cost gate skipped: its record published (no intents), its
    world freed."""
    RESUMED = "resumed"
    """A plan found half published on restart, to be finished as it was."""
    PROPOSED = "proposed"
    """A plan that needs approval: its record published as proposed (no intents), its
    worlds holding their change for the approver."""
    EXPIRED = "expired"
    """A proposal not approved within ``approval.ttl_ms``: its record published as
    expired, its change dropped."""
    REACHED = "reached"
    """Worlds whose plan in flight the positions reached: their notification published and
    the fact remembered in their state (``WorldState.reached_notified``), so a restart does
    not notify it again."""
    REMEMBERED = "remembered"
    """What live policies looked at (the period, the mark samples) written to the worlds'
    policy memory (``state.policy_memory``), so a restart or a new owner repeats no check."""
    COMMANDED = "commanded"
    """An operator's command decided: applied or refused (``why`` says which and what), its
    result and any new trading state written."""


@dataclass(frozen=True)
class Held:
    """The worlds of one event that wait, why, and the held plan record that says so."""

    worlds: list[str]
    reasons: list[HoldReason]
    """The distinct reasons of the held worlds, sorted (as the record's ``held_reason``)."""
    record: Json


@dataclass(frozen=True)
class Work:
    """What the edges must do, in this order: write ``pending`` to the changelog, publish
    ``intents``, publish ``records`` (plan and held records), write ``state`` to the changelog
    (which clears ``pending``), then commit the event's offset. Each step is acknowledged
    before the next, so a crash at any point leaves either nothing published or a write-ahead
    from which the plan is finished as it was."""

    outcome: Outcome
    portfolio_id: str | None = None
    """The portfolio the work writes for (its allocation partition is the one whose
    transaction carries it under exactly-once); None for work that writes nothing."""
    state: list[Record] = field(default_factory=list)
    records: list[Json] = field(default_factory=list)
    plan: Plan | None = None
    intents_from: Json | None = None
    """The plan record whose intents are to be published (see ``intents``)."""
    pending: Record | None = None
    held_worlds: list[str] = field(default_factory=list)
    held_reasons: list[HoldReason] = field(default_factory=list)
    """Why ``held_worlds`` wait: the distinct reasons, sorted."""
    planned_worlds: list[str] = field(default_factory=list)
    before_mismatches: int = 0
    """Worlds whose ``world_alloc_before`` differs from the state's (planned from the state)."""
    why: str | None = None
    """Why the outcome is ``DROPPED`` or ``REFUSED``."""
    notifications: list[Any] = field(default_factory=list)
    """Notifications that no record of this work implies (a plan reached); published with
    the ones derived from ``records`` (``notices.of_work``)."""

    @classmethod
    def holding(cls, held: Held, state: list[Record]) -> Work:
        """Work that only holds: the held record published, the held state written."""
        return cls(
            Outcome.HELD,
            portfolio_id=held.record["portfolio_id"],
            state=state,
            records=[held.record],
            held_worlds=held.worlds,
            held_reasons=held.reasons,
        )

    def with_held(self, held: Held | None) -> Work:
        """This plan's work, with the worlds of its event that wait: their held record goes
        out before the plan record."""
        if held is None:
            return self
        return replace(
            self,
            records=[held.record, *self.records],
            held_worlds=held.worlds,
            held_reasons=held.reasons,
        )

    @property
    def duplicate(self) -> bool:
        return self.outcome is Outcome.DUPLICATE

    @property
    def superseded(self) -> bool:
        return self.outcome is Outcome.SUPERSEDED

    @property
    def dropped(self) -> str | None:
        """Why a held policy correction was dropped on release, if it was."""
        return self.why if self.outcome is Outcome.DROPPED else None

    @property
    def refused(self) -> str | None:
        """Why held changes could not be planned on release, if they could not."""
        return self.why if self.outcome is Outcome.REFUSED else None

    @property
    def has_intents(self) -> bool:
        return self.intents_from is not None and bool(self.intents_from["intent_ids"])

    @cached_property
    def intents(self) -> list[Json]:
        """The intents of ``intents_from``, made when first asked for: the service asks
        while the write-ahead is in flight."""
        return [] if self.intents_from is None else intents_from_record(self.intents_from)
