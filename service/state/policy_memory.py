"""What the live policies remember of a world between checks, kept in the changelog.

A hybrid or regime rule looks at a world once per calendar period; a regime rule, and a
risk-based target (``kelly``, ``risk_parity``, ``equal`` with overlays), sample the world's
marks over a window; a drawdown guard remembers the trough it cut at. Kept in memory only, a
restart or a new owner of the portfolio would look again in a period already looked at, start
a window empty (no trigger for ``window + 1`` samples) and forget a cut. So the owner writes it
to the changelog under ``policy|{portfolio}|{world}`` (one record per watched world,
compacted: only the latest is kept), and every instance reads it back with the rest of the
state.

Each set of samples (a regime's, a target's) is stored by column (the asset labels once, then
per sample its time and the marks in label order), and bounded: at most ``MARK_SAMPLES_KEPT``
samples and ``MARK_LABELS_KEPT`` assets, which the rules' windows and target assets are
validated against.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from ..messages._types import EpochMs, Message, Name, Price

MARK_SAMPLES_KEPT = 1_000
"""The most mark samples a world's policy memory keeps (a window of up to 999 returns)."""

MARK_LABELS_KEPT = 64
"""The most assets whose marks one set of a world's samples keeps (1,000 x 64 marks)."""

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
    def of(cls, samples: Sequence[Sample], first: Collection[str] = ()) -> MarkSamples:
        """From ``(time, {label: mark})`` samples, oldest first (the newest ``MARK_SAMPLES_KEPT``
        kept, and at most ``MARK_LABELS_KEPT`` labels: those in ``first``, then by label)."""
        kept = list(samples)[-MARK_SAMPLES_KEPT:]
        labels = sorted({label for _, marks in kept for label in marks})
        if len(labels) > MARK_LABELS_KEPT:
            ranked = sorted(labels, key=lambda name: name not in first)
            labels = sorted(ranked[:MARK_LABELS_KEPT])
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

    def due(self, now_ms: int, every_ms: int) -> bool:
        """Whether a sample taken now would be kept (none yet, or the last ``every_ms`` old)."""
        return not self.times or now_ms - self.times[-1] >= every_ms

    def taken(
        self,
        now_ms: int,
        marks: Mapping[str, float],
        every_ms: int,
        keep: int,
        first: Collection[str] = (),
    ) -> MarkSamples | None:
        """These samples with one taken now, if the last is at least ``every_ms`` old (None
        when no sample is due), the oldest dropped beyond ``keep``. Marks that are not
        positive finite numbers are left out of the sample (``first``: as in ``of``)."""
        if not self.due(now_ms, every_ms):
            return None
        clean = {k: float(m) for k, m in marks.items() if math.isfinite(m) and m > 0}
        return MarkSamples.of([*self.samples(), (now_ms, clean)][-keep:], first)


class TargetMemory(Message):
    """A risk-based target's mark samples, at the spacing they were taken at (samples of
    another spacing are not its window), and its drawdown guard's trough."""

    sample_ms: int = Field(gt=0, description="The spacing the samples were taken at.")
    samples: MarkSamples = Field(default_factory=MarkSamples)
    trough: float = Field(
        default=0.0,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="The drawdown guard's deepest drawdown since it cut (0: not cut).",
    )


class PolicyMemory(Message):
    """What the policies remember of one world: the last look, the regime's mark samples,
    a risk-based target's samples and guard (absent in memories written before they were
    kept: those load as none yet)."""

    portfolio_id: Name
    world_id: Name
    looked: PolicyLook | None = None
    samples: MarkSamples = Field(default_factory=MarkSamples)
    target: TargetMemory | None = None


def policy_key(portfolio_id: str, world_id: str) -> bytes:
    return f"policy|{portfolio_id}|{world_id}".encode()


__all__ = [
    "MARK_LABELS_KEPT",
    "MARK_SAMPLES_KEPT",
    "MarkSamples",
    "PolicyLook",
    "PolicyMemory",
    "Sample",
    "TargetMemory",
    "policy_key",
]
