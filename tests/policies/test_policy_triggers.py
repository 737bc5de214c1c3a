"""Triggers (SPEC 6): drift bands, calendars, hybrid, volatility regimes, throttles.

Calendars and volatilities are checked against independent computations with the standard
library (``datetime``, ``statistics``), not against the numpy code they test.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import statistics

import numpy as np
import pytest

from service.policies import (
    DEFAULT_REGIMES,
    Calendar,
    DriftBand,
    Hybrid,
    Market,
    Never,
    PolicyError,
    Throttle,
    VolatilityRegimes,
    drift,
    due,
    outside_band,
    period_starts,
    preset_band,
    realized_volatility,
    worlds_out_of_band,
)
from service.policies.calendar import cadence


def business_days(start: str, end: str) -> list[dt.date]:
    days = np.arange(np.datetime64(start), np.datetime64(end), dtype="datetime64[D]")
    return [d for d in days.tolist() if d.weekday() < 5]


def market(dates: list[dt.date], returns: np.ndarray, assets: tuple[str, ...] = ("A",)) -> Market:
    return Market(dates=np.array(dates, dtype="datetime64[D]"), assets=assets, returns=returns)


# --------------------------------------------------------------------------------------------
# drift bands
# --------------------------------------------------------------------------------------------


def test_drift_absolute_and_relative() -> None:
    w, t = np.array([0.30, 0.45, 0.25]), np.array([0.30, 0.25, 0.45])
    assert drift(w, t, "absolute").tolist() == pytest.approx([0.0, 0.20, 0.20])
    assert drift(w, t, "relative").tolist() == pytest.approx([0.0, 0.8, 0.2 / 0.45])


def test_relative_drift_of_a_zero_target_is_zero_or_infinite() -> None:
    assert drift(np.array([0.0, 0.1]), np.array([0.0, 0.0]), "relative").tolist() == [0, math.inf]


def test_a_weight_exactly_on_the_band_is_inside() -> None:
    # 0.375 vs 0.25 is exactly 50 % relative and exactly 0.125 absolute
    w, t = np.array([0.375, 0.625]), np.array([0.25, 0.75])
    assert not outside_band(w, t, 0.5, "relative")
    assert outside_band(w, t, 0.4999, "relative")
    assert not outside_band(w, t, 0.125, "absolute")
    assert outside_band(w, t, 0.1249, "absolute")


def test_holding_an_asset_whose_target_is_zero_is_out_of_any_relative_band() -> None:
    assert outside_band(np.array([0.01, 0.99]), np.array([0.0, 1.0]), 1e9, "relative")
    assert not outside_band(np.array([0.0, 1.0]), np.array([0.0, 1.0]), 0.0, "relative")


def test_band_on_mappings_names_the_assets_out_of_band() -> None:
    band = DriftBand(0.05, mode="absolute")
    weights = {"BTC": 0.36, "ETH": 0.24, "OTHER": 0.40}
    targets = {"BTC": 0.30, "ETH": 0.25, "OTHER": 0.45}
    assert band.breached(weights, targets)
    assert band.out_of_band(weights, targets) == ["BTC"]
    assert band.drift(weights, targets) == pytest.approx({"BTC": 0.06, "ETH": 0.01, "OTHER": 0.05})


def test_per_asset_thresholds_with_a_default() -> None:
    band = DriftBand({"BTC": 0.10}, mode="absolute", default=0.02)
    assert band.breached({"BTC": 0.38, "ETH": 0.62}, {"BTC": 0.30, "ETH": 0.70})
    assert band.out_of_band({"BTC": 0.38, "ETH": 0.62}, {"BTC": 0.30, "ETH": 0.70}) == ["ETH"]
    assert band.out_of_band({"BTC": 0.39, "ETH": 0.69}, {"BTC": 0.30, "ETH": 0.70}) == []


def test_per_asset_thresholds_reject_unknown_and_unbanded_assets() -> None:
    with pytest.raises(PolicyError, match="no band for asset 'ETH'"):
        DriftBand({"BTC": 0.1}).thresholds_for(["BTC", "ETH"])
    with pytest.raises(PolicyError, match="unknown asset"):
        DriftBand({"BTC": 0.1, "DOGE": 0.1}).thresholds_for(["BTC"])


@pytest.mark.parametrize("bad", [math.nan, -0.1, math.inf])
def test_band_thresholds_must_be_finite_and_non_negative(bad: float) -> None:
    with pytest.raises(PolicyError, match="threshold"):
        DriftBand(bad)


def test_nan_weight_is_rejected_naming_the_asset() -> None:
    with pytest.raises(PolicyError, match="at ETH is not a finite number"):
        DriftBand(0.05).breached({"BTC": 0.5, "ETH": math.nan}, {"BTC": 0.5, "ETH": 0.5})


def test_unknown_band_mode_is_rejected() -> None:
    with pytest.raises(PolicyError, match="unknown band mode"):
        DriftBand(0.05, mode="sideways")  # type: ignore[arg-type]


def test_presets_follow_the_source_document() -> None:
    targets = {"BTC": 0.30, "ETH": 0.25, "OTHER": 0.45}
    index, vault, bitcoin = (
        preset_band("index"),
        preset_band("stablecoin_vault"),
        preset_band("bitcoin"),
    )
    six_points = {"BTC": 0.36, "ETH": 0.22, "OTHER": 0.42}
    assert index.breached(six_points, targets)  # 6 points > 5
    assert not bitcoin.breached(six_points, targets)  # 6 points <= 7
    assert not vault.breached(six_points, targets)  # <= 10
    assert preset_band("ethereum").threshold == bitcoin.threshold
    with pytest.raises(PolicyError, match="unknown strategy kind"):
        preset_band("meme")


def test_each_world_is_checked_against_its_own_band() -> None:
    bands = {"vault": DriftBand(0.10, mode="absolute"), "index": DriftBand(0.05, mode="absolute")}
    weights = {"vault": {"USDC": 0.58, "DAI": 0.42}, "index": {"BTC": 0.58, "ETH": 0.42}}
    targets = {"vault": {"USDC": 0.5, "DAI": 0.5}, "index": {"BTC": 0.5, "ETH": 0.5}}
    assert worlds_out_of_band(weights, targets, bands) == {"index": ["BTC", "ETH"]}
    with pytest.raises(PolicyError, match="no band for world 'other'"):
        worlds_out_of_band({**weights, "other": {}}, targets, bands)


# --------------------------------------------------------------------------------------------
# calendars
# --------------------------------------------------------------------------------------------


DAYS = business_days("2019-12-20", "2021-03-10")


@pytest.mark.parametrize(
    ("every", "period"),
    [
        ("daily", lambda d: d.toordinal()),
        ("weekly", lambda d: d.isocalendar()[:2]),
        ("biweekly", lambda d: (d - dt.date(1970, 1, 5)).days // 14),
        ("monthly", lambda d: (d.year, d.month)),
        ("quarterly", lambda d: (d.year, (d.month - 1) // 3)),
        ("yearly", lambda d: d.year),
    ],
)
def test_period_starts_are_first_trading_days_of_each_period(every: str, period: object) -> None:
    expected = [i == 0 or period(d) != period(DAYS[i - 1]) for i, d in enumerate(DAYS)]  # type: ignore[operator]
    assert period_starts(DAYS, cadence(every)).tolist() == expected


def test_biweekly_is_every_other_monday_based_week() -> None:
    starts = [d for d, s in zip(DAYS, period_starts(DAYS, "biweekly"), strict=True) if s][1:]
    assert all(d.weekday() == 0 for d in starts[:10])  # no Monday holidays in this stretch
    assert {(b - a).days for a, b in itertools.pairwise(starts[:10])} == {14}


def test_calendar_due_live() -> None:
    assert due(None, "2024-05-03", "monthly")
    assert not due("2024-05-01", "2024-05-31", "monthly")
    assert due("2024-05-31", "2024-06-03", "monthly")
    assert not due("2024-06-03", "2024-06-07", "weekly")
    assert due("2024-06-07", "2024-06-10", "weekly")
    assert Calendar("quarterly").due(dt.date(2024, 3, 29), dt.date(2024, 4, 1))
    with pytest.raises(PolicyError, match="before the last rebalance"):
        due("2024-06-10", "2024-06-07", "weekly")


def test_cadence_names_are_checked() -> None:
    assert cadence("Bi-Weekly") == "biweekly"
    with pytest.raises(PolicyError, match="unknown cadence 'fortnightly'"):
        Calendar("fortnightly")  # type: ignore[arg-type]


def test_bad_dates_are_rejected() -> None:
    with pytest.raises(PolicyError, match="dates"):
        due(None, "not a date", "monthly")


def test_schedules_of_never_calendar_band_and_hybrid() -> None:
    m = market(DAYS, np.zeros((len(DAYS), 2)), assets=("A", "B"))
    monthly = period_starts(DAYS, "monthly")
    assert not Never().schedule(m).checks.any()
    cal = Calendar("monthly").schedule(m)
    assert cal.checks.tolist() == monthly.tolist()
    assert cal.thresholds is None
    band = DriftBand({"A": 0.1, "B": 0.2}).schedule(m)
    assert band.checks.all()
    assert band.thresholds is not None
    assert band.thresholds[5].tolist() == [0.1, 0.2]
    hybrid = Hybrid(Calendar("monthly"), DriftBand(0.05)).schedule(m)
    assert hybrid.checks.tolist() == monthly.tolist()
    assert hybrid.thresholds is not None
    assert float(hybrid.thresholds[0, 0]) == 0.05


# --------------------------------------------------------------------------------------------
# throttles
# --------------------------------------------------------------------------------------------


def test_cooldown_in_calendar_days() -> None:
    t = Throttle(cooldown_days=7)
    assert t.allows([], "2024-01-01")
    assert not t.allows(["2024-01-01"], "2024-01-07")
    assert t.allows(["2024-01-01"], "2024-01-08")


def test_at_most_n_trades_per_period() -> None:
    t = Throttle(max_trades=2, per="monthly")
    assert t.allows(["2024-01-02"], "2024-01-20")
    assert not t.allows(["2024-01-02", "2024-01-10"], "2024-01-31")
    assert t.allows(["2024-01-02", "2024-01-10"], "2024-02-01")
    state = t.start().record("2024-01-02").record("2024-01-10")
    assert not state.allows("2024-01-11")
    assert state.allows("2024-02-01")


def test_throttle_config_is_checked() -> None:
    with pytest.raises(PolicyError, match="cooldown_days"):
        Throttle(cooldown_days=-1)
    with pytest.raises(PolicyError, match="max_trades"):
        Throttle(max_trades=0)


# --------------------------------------------------------------------------------------------
# volatility regimes
# --------------------------------------------------------------------------------------------


def test_realized_volatility_matches_statistics_stdev() -> None:
    rng = np.random.default_rng(7)
    r = rng.normal(0, 0.01, 40)
    vol = realized_volatility(r, window=10, periods_per_year=252)
    assert math.isnan(vol[0])
    for t in range(1, 40):
        window = r[max(0, t - 9) : t + 1].tolist()
        assert vol[t] == pytest.approx(statistics.stdev(window) * math.sqrt(252), rel=1e-12)


def test_realized_volatility_rejects_nan_and_short_windows() -> None:
    with pytest.raises(PolicyError, match="returns: nan at position 2"):
        realized_volatility([0.01, 0.02, math.nan], window=2)
    with pytest.raises(PolicyError, match="window"):
        realized_volatility([0.01, 0.02], window=1)


@pytest.mark.parametrize(
    ("vol", "regime"),
    [
        (0.05, "low"),
        (0.15, "low"),
        (0.2499, "low"),
        (0.25, "medium"),
        (0.3999, "medium"),
        (0.40, "high"),
        (0.60, "extreme"),
        (1.5, "extreme"),
        (math.nan, "low"),
    ],
)
def test_regime_starts_at_its_threshold(vol: float, regime: str) -> None:
    assert VolatilityRegimes().classify(vol).name == regime


def test_default_regimes_follow_the_document_cadences() -> None:
    assert [(r.name, r.from_volatility, r.cadence) for r in DEFAULT_REGIMES] == [
        ("low", 0.15, "monthly"),
        ("medium", 0.25, "biweekly"),
        ("high", 0.40, "weekly"),
        ("extreme", 0.60, "daily"),
    ]


def test_live_regime_from_recent_returns() -> None:
    calm = np.tile([0.002, -0.002], 40)  # ~3 % annualized
    wild = np.tile([0.05, -0.05], 40)  # ~80 %
    regimes = VolatilityRegimes(window=20)
    assert regimes.current(calm).name == "low"
    assert regimes.current(np.concatenate([calm, wild])).name == "extreme"
    assert regimes.current([0.01]).name == "low"


def test_regime_schedule_switches_cadence_and_band_with_volatility() -> None:
    days = business_days("2020-01-01", "2020-12-31")
    n = len(days)
    half = n // 2
    r = np.concatenate(
        [np.tile([0.002, -0.002], half)[:half], np.tile([0.05, -0.05], n)[: n - half]]
    )
    returns = np.stack([r, r], axis=1)
    returns[0] = 0.0
    sched = VolatilityRegimes(window=10).schedule(market(days, returns, ("A", "B")))
    assert sched.label_index is not None
    assert sched.thresholds is not None
    names = [sched.labels[i] for i in sched.label_index.tolist()]
    assert set(names[5:half]) == {"low"}
    assert set(names[half + 12 :]) == {"extreme"}
    monthly = period_starts(days, "monthly")
    assert sched.checks[:half].tolist() == monthly[:half].tolist()
    assert sched.checks[half + 12 :].all()  # daily once extreme
    assert float(sched.thresholds[3, 0]) == 0.05
    assert float(sched.thresholds[-1, 1]) == 0.15


def test_regime_table_is_checked() -> None:
    from service.policies import Regime

    with pytest.raises(PolicyError, match="thresholds must increase"):
        VolatilityRegimes(regimes=(Regime("a", 0.3, "daily", 0.1), Regime("b", 0.2, "daily", 0.1)))
    with pytest.raises(PolicyError, match="band"):
        Regime("a", 0.1, "daily", math.nan)
