"""Which planner plans a portfolio's or a world's changes (``[[planners.choice]]``).

A plan covers every world its event moves, so it has one planner: the one chosen for all of
them when they agree (a world's own choice, else its portfolio's), else the portfolio's, else
the service's default. A policy correction plans one world: its own choice applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..planner import PlannerOptions, Rebalancer, ScaleRule


@dataclass(frozen=True)
class Chosen:
    """A planner, and the scale rule it plans with (``None``: the configured one)."""

    planner: Rebalancer
    scale_rule: ScaleRule | None = None

    def options(self, options: PlannerOptions) -> PlannerOptions:
        """The planner options with this choice's scale rule."""
        if self.scale_rule is None or self.scale_rule == options.scale_rule:
            return options
        return PlannerOptions.model_validate(
            {**options.model_dump(), "scale_rule": self.scale_rule}
        )


@dataclass(frozen=True)
class PlannerChoice:
    """The configured choices, by portfolio and by (portfolio, world)."""

    by_portfolio: Mapping[str, Chosen] = field(default_factory=dict)
    by_world: Mapping[tuple[str, str], Chosen] = field(default_factory=dict)

    def of(self, portfolio_id: str, world_ids: Iterable[str]) -> Chosen | None:
        """The choice for a plan of ``world_ids``; ``None``: the service's default."""
        portfolio = self.by_portfolio.get(portfolio_id)
        each = [self.by_world.get((portfolio_id, w), portfolio) for w in world_ids]
        if each and all(c is each[0] for c in each):
            return each[0]
        return portfolio
