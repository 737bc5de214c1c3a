"""The ``policies`` section of the settings: which policy watches which world, and how.

Off by default. Each rule names a portfolio, the worlds it watches (each evaluated on its
own), a trigger and a target; a world is watched by at most one rule, so two policies never
pull it in different directions. Everything is checked when the settings load, and an error
names the key (``policies.rules.0.trigger.threshold: ...``).
"""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..messages._types import Name
from ..messages.policy import AllocationTarget, WeightsTarget
from ..policies.calendar import Cadence, cadence
from ..policies.regimes import DEFAULT_REGIMES
from ..state.allocations import POLICY_TRIGGERS_KEPT
from ..state.policy_memory import MARK_LABELS_KEPT, MARK_SAMPLES_KEPT

Threshold = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Cadenced(_Config):
    every: Cadence = "monthly"

    @field_validator("every", mode="before")
    @classmethod
    def _cadence(cls, value: object) -> object:
        return cadence(value) if isinstance(value, str) else value


class BandTrigger(_Config):
    """Act whenever the world (or one of its assets) is out of band."""

    kind: Literal["band"]
    mode: Literal["absolute", "relative"] = "absolute"
    threshold: Threshold


class CalendarTrigger(_Cadenced):
    """Act once per calendar period (UTC), whatever the drift."""

    kind: Literal["calendar"]


class HybridTrigger(_Cadenced):
    """Look once per calendar period (the first time the world can be measured in it) and
    act only if it is out of band then."""

    kind: Literal["hybrid"]
    mode: Literal["absolute", "relative"] = "absolute"
    threshold: Threshold


class RegimeLevel(_Cadenced):
    """One volatility regime: from which annualized volatility, its cadence and band."""

    name: Name
    from_volatility: Threshold
    band: Threshold


class RegimeTrigger(_Config):
    """A hybrid whose cadence and band follow the volatility regime of the world's assets
    (an equal-weight basket of their marks, sampled every ``sample_ms``)."""

    kind: Literal["regime"]
    mode: Literal["absolute", "relative"] = "relative"
    window: int = Field(
        default=30,
        ge=2,
        le=MARK_SAMPLES_KEPT - 1,
        description="Returns in the volatility window (its samples are kept in the changelog).",
    )
    sample_ms: int = Field(default=86_400_000, gt=0, description="Spacing of mark samples.")
    periods_per_year: float = Field(default=365.0, gt=0, allow_inf_nan=False)
    regimes: tuple[RegimeLevel, ...] = Field(
        default=tuple(
            RegimeLevel(
                name=r.name, from_volatility=r.from_volatility, every=r.cadence, band=r.band
            )
            for r in DEFAULT_REGIMES
        ),
        min_length=1,
    )

    @model_validator(mode="after")
    def _increasing(self) -> RegimeTrigger:
        starts = [r.from_volatility for r in self.regimes]
        if any(b <= a for a, b in itertools.pairwise(starts)):
            raise ValueError(f"regimes: from_volatility must increase, got {starts}")
        return self


TriggerConfig = Annotated[
    BandTrigger | CalendarTrigger | HybridTrigger | RegimeTrigger, Field(discriminator="kind")
]


class TargetAsset(_Config):
    """One asset a risk-based target weighs (``venue`` may be left out)."""

    venue: Name | None = None
    symbol: Name


class VolTargetOverlay(_Config):
    """Scale the weights so the world's estimated volatility is ``target_volatility``
    (annualised), never to a total above ``max_leverage`` (at most 1: a policy does not
    borrow). ``window``: returns in its estimate (default: the target's window)."""

    target_volatility: float = Field(gt=0, allow_inf_nan=False)
    max_leverage: float = Field(default=1.0, gt=0, le=1)
    window: int | None = Field(
        default=None,
        ge=2,
        le=MARK_SAMPLES_KEPT - 1,
        description="Returns in its estimate (its samples are kept in the changelog).",
    )


class DrawdownGuardOverlay(_Config):
    """Cut exposure to ``floor`` once the world's holdings are down more than ``limit`` from
    their peak over the sampled window; restore it as they recover."""

    limit: float = Field(gt=0, lt=1)
    floor: float = Field(default=0.5, ge=0, le=1)


Overlay = Literal["vol_target", "drawdown_guard"]
_KELLY_ONLY = ("risk_free", "risk_tolerance", "cap", "max_exposure")


class RiskTarget(_Config):
    """Weights computed live by a policy function from the marks the service samples:
    ``kelly``, ``risk_parity`` or ``equal`` over ``assets``, with optional overlays.

    Every ``sample_ms`` the assets' marks are sampled; the estimate uses the last ``window``
    returns between samples (``periods_per_year`` annualises them; by default the samples in
    a 365-day year). The weights are fractions of the world's allocation x total equity.
    """

    kind: Literal["kelly", "risk_parity", "equal"]
    assets: tuple[TargetAsset, ...] = Field(min_length=1, max_length=MARK_LABELS_KEPT)
    window: int = Field(
        default=30,
        ge=2,
        le=MARK_SAMPLES_KEPT - 1,
        description="Returns in the estimate (its samples are kept in the changelog).",
    )
    sample_ms: int = Field(default=86_400_000, gt=0, description="Spacing of mark samples.")
    periods_per_year: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    risk_free: float = Field(default=0.0, allow_inf_nan=False)
    risk_tolerance: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    cap: float = Field(default=1.0, gt=0, le=1)
    max_exposure: float = Field(default=1.0, ge=0, le=1)
    strategy_id: Name = "policy"
    vol_target: VolTargetOverlay | None = None
    drawdown_guard: DrawdownGuardOverlay | None = None

    @model_validator(mode="after")
    def _consistent(self) -> RiskTarget:
        keys = [(a.venue, a.symbol) for a in self.assets]
        for i, key in enumerate(keys):
            if key in keys[:i]:
                raise ValueError(f"assets.{i}: {key[0] or ''}:{key[1]} is named twice")
        if self.kind != "kelly":
            for name in _KELLY_ONLY:
                if name in self.model_fields_set:
                    raise ValueError(f"{name}: only a kelly target takes it, not {self.kind}")
        if self.kind == "risk_parity" and self.window <= len(self.assets):
            raise ValueError(
                f"window: risk parity over {len(self.assets)} assets needs more returns than "
                f"assets (a window of at least {len(self.assets) + 1}), got {self.window}"
            )
        return self

    @property
    def annualised_by(self) -> float:
        """Periods per year of the sample returns."""
        return self.periods_per_year or 365 * 86_400_000 / self.sample_ms

    @property
    def overlays(self) -> tuple[Overlay, ...]:
        """The overlays configured, in the order they apply."""
        out: list[Overlay] = []
        if self.vol_target is not None:
            out.append("vol_target")
        if self.drawdown_guard is not None:
            out.append("drawdown_guard")
        return tuple(out)


RuleTarget = Annotated[AllocationTarget | WeightsTarget | RiskTarget, Field(discriminator="kind")]
"""A fixed target (an allocation, weights) or weights computed live (``RiskTarget``)."""


Volatility = Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)]


class CostGateConfig(_Config):
    """Skip a correction whose cost (``[costs]``: fee, half spread, fixed per traded key) is
    above ``max_cost_to_benefit`` x its expected benefit: the annualized tracking error it
    removes, each key assumed to move with its ``volatility`` (annualized, uncorrelated)."""

    max_cost_to_benefit: float = Field(default=1.0, ge=0, le=1e6, allow_inf_nan=False)
    volatility: Volatility = Field(description="Annualized volatility of every key (0.6: 60%).")
    volatility_by_symbol: dict[Name, Volatility] = Field(
        default_factory=dict, description="Per symbol, over volatility."
    )


class PolicyRule(_Config):
    """One policy: a trigger and a target for some worlds of a portfolio, with limits."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Used in event ids.")
    portfolio_id: Name = "default"
    worlds: tuple[Name, ...] = Field(min_length=1)
    trigger: TriggerConfig
    target: RuleTarget
    cooldown_ms: int = Field(default=0, ge=0, description="Least time between two triggers.")
    max_trades: int | None = Field(default=None, ge=1, le=POLICY_TRIGGERS_KEPT)
    per: Cadence = "daily"
    cost_gate: CostGateConfig | None = Field(
        default=None, description="Off by default: every correction is carried out."
    )

    @field_validator("per", mode="before")
    @classmethod
    def _per(cls, value: object) -> object:
        return cadence(value) if isinstance(value, str) else value

    @field_validator("worlds")
    @classmethod
    def _distinct(cls, worlds: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(worlds)) != len(worlds):
            raise ValueError(f"a world is named twice in {list(worlds)}")
        return worlds


class PolicySettings(_Config):
    """The live policy runner: off unless ``enabled``."""

    enabled: bool = False
    check_interval_ms: int = Field(
        default=60_000, gt=0, description="Every rule is evaluated this often (and on snapshots)."
    )
    max_snapshot_age_ms: int = Field(
        default=300_000,
        gt=0,
        description="A world whose oldest snapshot is older than this is not evaluated.",
    )
    rules: tuple[PolicyRule, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> PolicySettings:
        if self.enabled and not self.rules:
            raise ValueError("rules: policies are enabled but no rule is configured")
        names: set[str] = set()
        watched: dict[tuple[str, str], str] = {}
        for i, rule in enumerate(self.rules):
            if rule.name in names:
                raise ValueError(f"rules.{i}.name: {rule.name!r} is used by another rule")
            names.add(rule.name)
            for world in rule.worlds:
                other = watched.setdefault((rule.portfolio_id, world), rule.name)
                if other != rule.name:
                    raise ValueError(
                        f"rules.{i}.worlds: world {world!r} of portfolio "
                        f"{rule.portfolio_id!r} is already watched by rule {other!r}"
                    )
        return self
