"""How many examples each property test draws: all of them in ``make test`` and CI, a tenth in
``make test-unit`` (the quick loop while editing).

Hypothesis's ``max_examples`` set on a test overrides the profile, so tests that ask for more
than the default say ``examples(N)``: ``N`` under the default profile, scaled by the loaded
profile's share of the default otherwise.
"""

from __future__ import annotations

import os

from hypothesis import settings

FULL = 100
"""Hypothesis's default number of examples: the ``full`` profile keeps it."""

settings.register_profile("full", max_examples=FULL)
settings.register_profile("quick", max_examples=FULL // 10)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "full"))


def examples(n: int) -> int:
    """``n`` examples under the full profile, proportionally fewer (at least 10) otherwise."""
    share = settings.default.max_examples / FULL
    return n if share >= 1 else max(10, int(n * share))
