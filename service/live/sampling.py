"""Returns between a world's mark samples: what the live policies estimate volatility,
weights and drawdowns from.

Snapshots arrive whenever strategies publish; estimates need a regular series. The samples,
each the marks seen at one moment and at most one per spacing, are the world's policy memory
(``state.policy_memory.MarkSamples``, kept in the changelog); here they are plain
``(time_ms, {asset label: mark})``, oldest first.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from ..policies.inputs import FloatArray
from ..state.policy_memory import Sample


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


__all__ = ["Sample", "asset_returns", "basket_returns"]
