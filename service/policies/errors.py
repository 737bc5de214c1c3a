"""The one error the policy layer raises for input it cannot use.

It derives from ``ValueError`` like the planner's ``PlanningError``; the CLI turns it into
exit code 2 and its message, which always names the offending input.
"""

from __future__ import annotations


class PolicyError(ValueError):
    """Bad input to a trigger, an allocator, a cost rule or the backtester."""
