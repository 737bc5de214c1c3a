"""What the live policies remember of a world between checks, kept in the changelog.

A hybrid or regime rule looks at a world once per calendar period, and a regime rule (and any
rule that estimates from marks) samples the world's marks over a window. Kept in memory only,
a restart or a new owner of the portfolio would look again in a period already looked at, and
start the window empty. So the owner writes it to the changelog under
``policy|{portfolio}|{world}`` (one record per watched world, compacted: only the latest is
kept), and every instance reads it back with the rest of the state.

The samples are stored by column (the asset labels once, then per sample its time and the
marks in label order), and bounded: at most ``MARK_SAMPLES_KEPT`` samples and
``MARK_LABELS_KEPT`` assets, which the rules' windows are validated against.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from ..messages._types import EpochMs, Message, Name, Price

MARK_SAMPLES_KEPT = 1_000
"""The most mark samples a world's policy memory keeps (a window of up to 999 returns)."""

MARK_LABELS_KEPT = 64
"""The most assets whose marks a world's samples keep (1,000 x 64 marks: well under 1 MB)."""

Label = Annotated[str, StringConstraints(min_length=1, max_length=401)]
"""An asset's label, ``venue:symbol`` (``policies.measure.label``)."""

Sample = tuple[int, dict[str, float]]
"""One sample: its time and the marks taken then, by asset label."""


class PolicyLook(Message):
    """The calendar period a hybrid or regime rule last looked at the world in."""

    cadence: Name
    period: int = Field(ge=0, description="The period's number (``runner.period``).")


class MarkSamples(Message):
    """A world's mark samples, oldest first, by column."""

    labels: list[Label] = Field(default_factory=list, max_length=MARK_LABELS_KEPT)
    times: list[EpochMs] = Field(default_factory=list, max_length=MARK_SAMPLES_KEPT)
    marks: list[list[Price | None]] = Field(
        default_factory=list,
        max_length=MARK_SAMPLES_KEPT,
        description="Per sample, the mark of each label (null: not sampled then).",
    )

    @model_validator(mode="after")
    def _rectangular(self) -> MarkSamples:
        if len(self.marks) != len(self.times):
            raise ValueError(f"{len(self.times)} times but {len(self.marks)} rows of marks")
        width = len(self.labels)
        for i, row in enumerate(self.marks):
            if len(row) != width:
                raise ValueError(f"marks.{i}: {len(row)} marks for {width} labels")
        if any(b <= a for a, b in zip(self.times, self.times[1:], strict=False)):
            raise ValueError("times must increase")
        return self

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> MarkSamples:
        """From ``(time, {label: mark})`` samples, oldest first (the newest ``MARK_SAMPLES_KEPT``
        kept)."""
        kept = list(samples)[-MARK_SAMPLES_KEPT:]
        labels = sorted({label for _, marks in kept for label in marks})
        return cls(
            labels=labels,
            times=[t for t, _ in kept],
            marks=[[marks.get(label) for label in labels] for _, marks in kept],
        )

    def samples(self) -> list[Sample]:
        """As ``(time, {label: mark})``, oldest first."""
        return [
            (t, {label: m for label, m in zip(self.labels, row, strict=True) if m is not None})
            for t, row in zip(self.times, self.marks, strict=True)
        ]

    def taken(
        self, now_ms: int, marks: Mapping[str, float], every_ms: int, keep: int
    ) -> MarkSamples | None:
        """These samples with one taken now, if the last is at least ``every_ms`` old (None
        when no sample is due), the oldest dropped beyond ``keep``."""
        if self.times and now_ms - self.times[-1] < every_ms:
            return None
        return MarkSamples.of([*self.samples(), (now_ms, dict(marks))][-keep:])


class PolicyMemory(Message):
    """What the policies remember of one world: the last look, the mark samples."""

    portfolio_id: Name
    world_id: Name
    looked: PolicyLook | None = None
    samples: MarkSamples = Field(default_factory=MarkSamples)


def policy_key(portfolio_id: str, world_id: str) -> bytes:
    return f"policy|{portfolio_id}|{world_id}".encode()


__all__ = [
    "MARK_LABELS_KEPT",
    "MARK_SAMPLES_KEPT",
    "MarkSamples",
    "PolicyLook",
    "PolicyMemory",
    "Sample",
    "policy_key",
]
