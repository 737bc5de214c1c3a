"""The policy layer (SPEC 6): when to rebalance, to what weights, at what cost.

Pure functions and small frozen dataclasses, one idea per module, callable from the service
with current weights and prices and from the backtester over a whole history:

- ``calendar``: cadences as period numbers; ``triggers``: drift bands, calendar, hybrid,
  cooldowns and trade limits; ``regimes``: volatility regimes.
- ``weights``: equal, Kelly, risk parity; ``risk``: volatility targeting, drawdown protection.
- ``costs``: cost model and cost/benefit gate; ``pacing``: pacing and slicing.
"""

from .calendar import CADENCES, Cadence, due, period_starts
from .costs import CostGate, CostModel, GateDecision, tracking_error
from .errors import PolicyError
from .pacing import front_loaded, pace, pace_quantity, slice_intent, slice_quantity
from .regimes import DEFAULT_REGIMES, Regime, VolatilityRegimes, realized_volatility
from .risk import (
    DrawdownProtection,
    DrawdownState,
    VolatilityTarget,
    drawdown,
    portfolio_volatility,
    volatility_target,
)
from .triggers import (
    PRESETS,
    Calendar,
    DriftBand,
    Hybrid,
    Market,
    Never,
    Schedule,
    Throttle,
    ThrottleState,
    Trigger,
    drift,
    outside_band,
    preset_band,
    worlds_out_of_band,
)
from .weights import (
    Allocator,
    EqualWeight,
    Kelly,
    RiskParity,
    cap_and_fill,
    equal_weights,
    estimate,
    kelly_weights,
    risk_contributions,
    risk_parity_weights,
)

__all__ = [
    "CADENCES",
    "DEFAULT_REGIMES",
    "PRESETS",
    "Allocator",
    "Cadence",
    "Calendar",
    "CostGate",
    "CostModel",
    "DrawdownProtection",
    "DrawdownState",
    "DriftBand",
    "EqualWeight",
    "GateDecision",
    "Hybrid",
    "Kelly",
    "Market",
    "Never",
    "PolicyError",
    "Regime",
    "RiskParity",
    "Schedule",
    "Throttle",
    "ThrottleState",
    "Trigger",
    "VolatilityRegimes",
    "VolatilityTarget",
    "cap_and_fill",
    "drawdown",
    "drift",
    "due",
    "equal_weights",
    "estimate",
    "front_loaded",
    "kelly_weights",
    "outside_band",
    "pace",
    "pace_quantity",
    "period_starts",
    "portfolio_volatility",
    "preset_band",
    "realized_volatility",
    "risk_contributions",
    "risk_parity_weights",
    "slice_intent",
    "slice_quantity",
    "tracking_error",
    "volatility_target",
    "worlds_out_of_band",
]
