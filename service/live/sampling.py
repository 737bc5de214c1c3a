"""Mark samples of one world: what the live policies estimate returns, volatility and
drawdowns from.

Snapshots arrive whenever strategies publish; estimates need a regular series. A sampler keeps
at most ``size`` samples, each the marks seen at one moment, taken at most once every
``interval_ms``: the window an estimate or a regime looks at, bounded in memory. Its state is a
plain list of ``(time_ms, {asset label: mark})``, oldest first (``samples``, ``restore``), so
it can be kept elsewhere (a changelog) and put back.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ..policies.inputs import FloatArray

Sample = tuple[int, dict[str, float]]
"""``(time_ms, {asset label: mark})``: the marks seen at one moment."""


class MarkSampler:
    """The last ``size`` mark samples, at least ``interval_ms`` apart."""

    def __init__(self, size: int, interval_ms: int) -> None:
        if size < 1:
            raise ValueError(f"size: {size} must be >= 1")
        if interval_ms <= 0:
            raise ValueError(f"interval_ms: {interval_ms} must be > 0")
        self.size = size
        self.interval_ms = interval_ms
        self._samples: deque[Sample] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def samples(self) -> list[Sample]:
        """The samples, oldest first (copies: changing them changes nothing here)."""
        return [(t, dict(marks)) for t, marks in self._samples]

    def restore(self, samples: Iterable[Sample]) -> None:
        """Start again from ``samples`` (oldest first); only the last ``size`` are kept."""
        self._samples.clear()
        for t, marks in samples:
            self._samples.append((int(t), dict(marks)))

    def due(self, now_ms: int) -> bool:
        """Whether a sample taken now would be kept (none yet, or the last is old enough)."""
        return not self._samples or now_ms - self._samples[-1][0] >= self.interval_ms

    def offer(self, now_ms: int, marks: Mapping[str, float]) -> bool:
        """Keep ``marks`` as the sample of ``now_ms`` if one is due; whether it was kept.
        Marks that are not positive finite numbers are left out of the sample."""
        if not self.due(now_ms):
            return False
        clean = {k: float(v) for k, v in marks.items() if math.isfinite(v) and v > 0}
        self._samples.append((now_ms, clean))
        return True


def asset_returns(samples: Sequence[Sample], labels: Sequence[str]) -> FloatArray:
    """Simple returns of ``labels`` between consecutive samples (rows: sample pairs, oldest
    first; columns: ``labels``). A pair where a label lacks a mark on either side is left out."""
    rows = []
    for (_, before), (_, after) in itertools.pairwise(samples):
        if all(a in before and a in after for a in labels):
            rows.append([after[a] / before[a] - 1.0 for a in labels])
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(labels))


def basket_returns(samples: Sequence[Sample]) -> list[float]:
    """Equal-weight basket returns between consecutive samples, over the labels both have
    (a pair with none in common is left out)."""
    out = []
    for (_, before), (_, after) in itertools.pairwise(samples):
        common = [a for a in after if a in before]
        if common:
            out.append(math.fsum(after[a] / before[a] - 1 for a in common) / len(common))
    return out


__all__ = ["MarkSampler", "Sample", "asset_returns", "basket_returns"]
