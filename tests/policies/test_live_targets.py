"""Live risk-based targets, pure: the mark samples, the glue from samples to the backtester's
allocators and overlays, their settings, and the runner's answers before and after the
estimate is ready."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from service.engine import RebalanceEngine
from service.live.config import PolicySettings, RiskTarget
from service.live.estimate import (
    Estimating,
    RiskWeights,
    holdings_drawdown,
    risk_weights,
    samples_needed,
)
from service.live.outlook import outlook
from service.live.runner import Evaluation, PolicyRunner, _weights_target
from service.live.sampling import Sample, asset_returns, basket_returns
from service.messages import PolicyRebalance
from service.planner import PlannerOptions
from service.policies.errors import PolicyError
from service.policies.measure import holdings
from service.policies.risk import (
    DrawdownProtection,
    DrawdownState,
    VolatilityTarget,
    drawdown,
    portfolio_volatility,
    volatility_target,
)
from service.policies.weights import EqualWeight, Kelly, RiskParity, estimate
from service.settings import Settings
from service.state.allocations import AllocationState
from service.state.policy_memory import (
    MARK_LABELS_KEPT,
    MARK_SAMPLES_KEPT,
    MarkSamples,
    PolicyMemory,
    TargetMemory,
)
from tests.engine.test_engine import Harness, event
from tests.engine.test_policy_engine import snap
from tests.policies.test_policy_memory import changelog

NOW = 1_700_000_000_000
HOUR = 3_600_000
ASSETS = [{"venue": "v", "symbol": s} for s in ("X", "Y", "Z")]
LABELS = ["v:X", "v:Y", "v:Z"]


def target(kind: str = "kelly", **fields: Any) -> RiskTarget:
    return RiskTarget.model_validate(
        {"kind": kind, "assets": ASSETS, "window": 8, "sample_ms": HOUR, **fields}
    )


def path(n: int, seed: int = 7) -> list[dict[str, float]]:
    """``n`` marks of X, Y, Z: random walks with different drifts and volatilities."""
    rng = np.random.default_rng(seed)
    drift = np.array([0.004, 0.002, 0.001])
    vol = np.array([0.02, 0.01, 0.015])
    steps = 1 + drift + vol * rng.standard_normal((n - 1, 3))
    prices = np.vstack([np.ones(3), np.cumprod(steps, axis=0)]) * np.array([100.0, 50.0, 20.0])
    return [dict(zip(LABELS, row.tolist(), strict=True)) for row in prices]


def samples_of(marks: list[dict[str, float]]) -> list[Sample]:
    return [(NOW + i * HOUR, m) for i, m in enumerate(marks)]


def matrix(samples: list[Sample]) -> np.ndarray:
    return asset_returns(samples, LABELS)


# -- the samples ------------------------------------------------------------------------------


def test_samples_keep_a_bounded_window_at_their_spacing() -> None:
    s = MarkSamples()
    for t, marks in [
        (NOW, {"a": 1.0}),
        (NOW + HOUR, {"a": 2.0, "b": float("nan"), "c": -1.0}),
        (NOW + 2 * HOUR, {"a": 3.0}),
        (NOW + 3 * HOUR, {"a": 4.0}),
    ]:
        if s.times:
            assert s.taken(t - 1, marks, HOUR, 3) is None  # too soon
            assert not s.due(t - 1, HOUR)
        taken = s.taken(t, marks, HOUR, 3)
        assert taken is not None
        s = taken
    assert s.samples() == [
        (NOW + HOUR, {"a": 2.0}),  # bad marks are left out
        (NOW + 2 * HOUR, {"a": 3.0}),
        (NOW + 3 * HOUR, {"a": 4.0}),
    ]


def test_the_target_assets_are_the_labels_kept_first() -> None:
    many = {f"v:A{i:03}": 1.0 for i in range(MARK_LABELS_KEPT + 6)}
    mine = ["v:A069", "v:A068"]  # after the first 64 by label
    s = MarkSamples().taken(NOW, many, HOUR, 3, first=mine)
    assert s is not None
    assert len(s.labels) == MARK_LABELS_KEPT
    assert set(mine) <= set(s.labels)
    assert s.labels == sorted(s.labels)


def test_returns_between_samples() -> None:
    samples: list[Sample] = [(0, {"a": 1.0, "b": 2.0}), (1, {"a": 1.1}), (2, {"a": 1.21, "b": 3.0})]
    r = asset_returns(samples, ["a"])
    assert r.shape == (2, 1)
    assert r[:, 0] == pytest.approx([0.1, 0.1])
    assert asset_returns(samples, ["a", "b"]).shape == (0, 2)  # b misses in every pair
    assert basket_returns(samples) == pytest.approx([0.1, 0.1])


# -- settings ---------------------------------------------------------------------------------


def rule(target: dict[str, Any]) -> dict[str, Any]:
    return {"name": "r", "worlds": ["a"], "trigger": {"kind": "calendar"}, "target": target}


@pytest.mark.parametrize(
    ("fields", "where", "message"),
    [
        ({"kind": "kelly", "assets": []}, "target.kelly.assets", "at least 1"),
        (
            {"kind": "kelly", "assets": ASSETS, "window": 1},
            "target.kelly.window",
            "greater than or equal to 2",
        ),
        ({"kind": "equal", "assets": ASSETS, "cap": 0.5}, "target.equal", "cap: only a kelly"),
        ({"kind": "risk_parity", "assets": ASSETS, "window": 3}, "target.risk_parity", "window"),
        (
            {"kind": "kelly", "assets": [ASSETS[0], ASSETS[0]]},
            "target.kelly",
            "assets.1: v:X is named twice",
        ),
        (
            {
                "kind": "equal",
                "assets": ASSETS,
                "vol_target": {"target_volatility": 0.1, "max_leverage": 2},
            },
            "target.equal.vol_target.max_leverage",
            "less than or equal to 1",
        ),
        (
            {"kind": "equal", "assets": ASSETS, "drawdown_guard": {"limit": 1.5}},
            "target.equal.drawdown_guard.limit",
            "less than 1",
        ),
        ({"kind": "markowitz", "assets": ASSETS}, "target", "kind"),
        (  # the policy memory keeps at most 1,000 samples of at most 64 assets
            {"kind": "kelly", "assets": ASSETS, "window": MARK_SAMPLES_KEPT},
            "target.kelly.window",
            "less than or equal to 999",
        ),
        (
            {
                "kind": "equal",
                "assets": ASSETS,
                "vol_target": {"target_volatility": 0.1, "window": MARK_SAMPLES_KEPT},
            },
            "target.equal.vol_target.window",
            "less than or equal to 999",
        ),
        (
            {"kind": "equal", "assets": [{"symbol": f"S{i}"} for i in range(65)]},
            "target.equal.assets",
            "at most 64",
        ),
    ],
)
def test_risk_target_settings_are_checked_with_the_key_named(
    fields: dict[str, Any], where: str, message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        PolicySettings.model_validate({"enabled": True, "rules": [rule(fields)]})
    text = str(info.value)
    assert f"rules.0.{where}" in text
    assert message in text


def test_risk_targets_from_the_environment_and_not_in_a_shared_account(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import orjson

    payload = rule({"kind": "risk_parity", "assets": ASSETS, "window": 20})
    monkeypatch.setenv("REBALANCER_POLICIES__ENABLED", "true")
    monkeypatch.setenv("REBALANCER_POLICIES__RULES", orjson.dumps([payload]).decode())
    loaded = Settings()
    found = loaded.policies.rules[0].target
    assert isinstance(found, RiskTarget)
    assert (found.kind, found.window, found.annualised_by) == ("risk_parity", 20, 365.0)
    monkeypatch.setenv("REBALANCER_PLANNER__EXECUTION_MODE", "shared_account")
    with pytest.raises(ValidationError, match=r"policies.rules.0.target: risk_parity targets"):
        Settings()


# -- the glue: the backtester's functions on the samples -------------------------------------


def test_not_ready_until_a_full_window_of_samples() -> None:
    t = target()
    assert samples_needed(t) == 9
    samples = samples_of(path(9))
    early = risk_weights(t, samples[:8], {}, DrawdownState())
    assert early == Estimating(8, 9)
    assert early.detail == "8 of 9 mark samples"
    assert isinstance(risk_weights(t, samples, {}, DrawdownState()), RiskWeights)
    assert samples_needed(target("equal")) == 0  # equal weights alone need no estimate
    plain = risk_weights(target("equal"), [], {}, DrawdownState())
    assert isinstance(plain, RiskWeights)
    assert plain.weights == pytest.approx([1 / 3] * 3)


@pytest.mark.parametrize("kind", ["kelly", "risk_parity", "equal"])
def test_each_method_is_the_backtesters_allocator_on_the_sampled_returns(kind: str) -> None:
    samples = samples_of(path(20))
    t = target(kind, window=8, periods_per_year=8760.0)
    found = risk_weights(t, samples, {}, DrawdownState())
    assert isinstance(found, RiskWeights)
    r = matrix(samples)[-8:]
    expected = {
        "kelly": Kelly(lookback=8, periods_per_year=8760.0),
        "risk_parity": RiskParity(lookback=8, periods_per_year=8760.0),
        "equal": EqualWeight(),
    }[kind].target(r)
    assert found.weights == pytest.approx(expected, abs=1e-12)
    assert found.samples == (9 if kind != "equal" else 1)
    assert found.last_at == samples[-1][0]


def test_kelly_parameters_reach_the_function() -> None:
    samples = samples_of(path(20))
    t = target(risk_tolerance=0.2, cap=0.3, max_exposure=0.5, risk_free=0.01)
    found = risk_weights(t, samples, {}, DrawdownState())
    assert isinstance(found, RiskWeights)
    kelly = Kelly(8, 0.01, 0.2, 0.3, 0.5, periods_per_year=365 * 24)
    assert found.weights == pytest.approx(kelly.target(matrix(samples)[-8:]), abs=1e-12)


def test_vol_target_is_the_backtesters_overlay() -> None:
    samples = samples_of(path(30))
    t = target("risk_parity", vol_target={"target_volatility": 0.05, "window": 12})
    assert samples_needed(t) == 13
    found = risk_weights(t, samples, {}, DrawdownState())
    assert isinstance(found, RiskWeights)
    r = matrix(samples)[-12:]
    ppy = 365 * 24
    overlay = VolatilityTarget(RiskParity(8, ppy), 0.05, 1.0, 12, ppy)
    assert found.weights == pytest.approx(overlay.target(r), abs=1e-12)
    assert found.before_overlays == pytest.approx(RiskParity(8, ppy).target(r[-8:]), abs=1e-12)
    _, cov = estimate(r, ppy)
    assert portfolio_volatility(found.weights, cov) == pytest.approx(0.05)


def test_the_drawdown_guard_cuts_on_the_holdings_drawdown_and_restores_with_them() -> None:
    marks = [{"v:X": p, "v:Y": 50.0, "v:Z": 20.0} for p in (100, 110, 120, 90, 80, 100, 120)]
    samples = samples_of(marks)
    qty = {"v:X": 1.0, "v:Y": 2.0, "v:Z": 0.0}
    # 1 X + 2 Y: 200, 210, 220, 190, 180, 200, 220; at 180 it is 18.2 % under 220
    assert holdings_drawdown(samples[:5], qty) == pytest.approx(1 - 180 / 220)
    assert holdings_drawdown(samples[:5], qty) == pytest.approx(
        drawdown([200.0, 210, 220, 190, 180])[-1]
    )
    assert holdings_drawdown(samples, {"v:X": 0.0}) == 0.0  # nothing held
    t = target("equal", window=4, drawdown_guard={"limit": 0.15, "floor": 0.4})
    assert samples_needed(t) == 5
    cut = risk_weights(t, samples[:5], qty, DrawdownState())
    assert isinstance(cut, RiskWeights)
    assert cut.drawdown == pytest.approx(1 - 180 / 220)
    guard = DrawdownProtection(0.15, 0.4)
    state, exposure = guard.step(DrawdownState(), 1 - 180 / 220)
    assert (cut.exposure, cut.guard) == (pytest.approx(0.4), state)
    assert exposure == pytest.approx(0.4)
    assert cut.weights == pytest.approx([0.4 / 3] * 3)
    assert cut.before_overlays == pytest.approx([1 / 3] * 3)
    # part way back (200 of a 220 peak in the window): linear from the trough
    back = risk_weights(t, samples[:6], qty, cut.guard)
    assert isinstance(back, RiskWeights)
    assert back.exposure == pytest.approx(guard.step(state, 1 - 200 / 220)[1])
    assert 0.4 < (back.exposure or 0) < 1
    # scaling the holdings (the guard's own trade) does not move the drawdown
    half = {k: q / 2 for k, q in qty.items()}
    assert holdings_drawdown(samples[:5], half) == pytest.approx(cut.drawdown)


def test_flat_marks_give_kelly_no_edge_and_all_cash() -> None:
    flat = [{"v:X": 100.0, "v:Y": 50.0, "v:Z": 20.0}] * 10
    found = risk_weights(target("kelly"), samples_of(flat), {}, DrawdownState())
    assert isinstance(found, RiskWeights)
    assert found.weights.tolist() == [0.0, 0.0, 0.0]  # no edge: all cash


def test_vol_target_of_tiny_weights_stays_within_its_cap() -> None:
    # a Kelly of tiny risk tolerance gives subnormal weights: scaling them by cap / gross
    # overflowed to inf (and 0 x inf to NaN) before the weights were brought to gross 1 first
    cov = np.diag([0.04, 0.09, 0.01])
    out = volatility_target([1e-320, 0.0, 2e-320], cov, 0.5, 0.5)
    assert np.isfinite(out).all()
    assert out.sum() == pytest.approx(0.5)
    assert out[1] == 0.0


def test_weights_that_are_not_numbers_are_refused() -> None:
    from service.live.estimate import _clean

    assert _clean(np.array([0.6, 0.6])).tolist() == [0.5, 0.5]
    assert _clean(np.array([-1e-17, 0.2])).tolist() == [0.0, 0.2]
    with pytest.raises(PolicyError, match="weights: the policy function gave"):
        _clean(np.array([0.5, np.nan]))


# -- invariants -------------------------------------------------------------------------------


@settings(deadline=None)
@given(
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(["kelly", "risk_parity", "equal"]),
    vol=st.none() | st.floats(0.01, 2.0),
    leverage=st.floats(0.1, 1.0),
    guard=st.none() | st.tuples(st.floats(0.01, 0.9), st.floats(0.0, 1.0)),
    tolerance=st.floats(0.0, 5.0),
)
def test_weights_are_long_only_at_most_one_and_within_the_leverage_cap(
    seed: int,
    kind: str,
    vol: float | None,
    leverage: float,
    guard: tuple[float, float] | None,
    tolerance: float,
) -> None:
    fields: dict[str, Any] = {"window": 8}
    if kind == "kelly":
        fields["risk_tolerance"] = tolerance
    if vol is not None:
        fields["vol_target"] = {"target_volatility": vol, "max_leverage": leverage}
    if guard is not None:
        fields["drawdown_guard"] = {"limit": guard[0], "floor": guard[1]}
    t = target(kind, **fields)
    samples = samples_of(path(12, seed))
    found = risk_weights(t, samples, {"v:X": 1.0, "v:Y": 1.0}, DrawdownState())
    assert isinstance(found, RiskWeights)
    w = found.weights
    assert (w >= 0).all()
    assert w.sum() <= 1 + 1e-12
    if vol is not None:
        assert w.sum() <= leverage * (1 + 1e-12)
    if guard is not None:
        assert found.exposure is not None
        assert guard[1] - 1e-12 <= found.exposure <= 1
    # the concrete target the event carries accepts them
    concrete, audit = _weights_target(t, found)
    assert [x.weight for x in concrete.weights] == pytest.approx(w.tolist())
    assert audit.method == kind


# -- the runner: estimating, then triggered with the function's weights ----------------------


class Rig:
    """World a at 0.5 of 1,000 equity holding 1 X, 1 Y, 1 Z."""

    def __init__(self, trigger: dict[str, Any], target: dict[str, Any]) -> None:
        self.h = Harness(planner=PlannerOptions())
        self.marks = path(40)
        self.price(0, NOW - 10_000)
        self.h.send(
            event(world_alloc_before={"a": 0.5}, world_alloc_after={"a": 0.5}, total_equity=1e3),
            NOW - 10_000,
        )
        policies = PolicySettings.model_validate(
            {
                "enabled": True,
                "check_interval_ms": 60_000,
                "rules": [{"name": "risk", "worlds": ["a"], "trigger": trigger, "target": target}],
            }
        )
        self.runner = PolicyRunner(policies, self.h.engine)

    def price(self, i: int, as_of: int) -> None:
        m = self.marks[i]
        rows = [(s, 1.0, m[f"v:{s}"]) for s in ("X", "Y", "Z")]
        self.h.snapshots.apply(snap("s1", rows, as_of=as_of))

    def at(self, i: int) -> Evaluation:
        """Evaluate at sample ``i``'s marks and time, and write what the evaluation changed of
        the world's policy memory to the state, as the policy loop does."""
        return self.check(NOW + i * HOUR, i)

    def check(self, now: int, i: int | None = None) -> Evaluation:
        if i is not None:
            self.price(i, now)
        (evaluation,) = self.runner.evaluate(now, lambda _: True)
        if evaluation.memory is not None:
            for work in self.h.engine.remember([evaluation.memory]):
                self.h.run(work)
        return evaluation

    def samples(self) -> list[Sample]:
        kept = self.h.state.policy_memory("default", "a").target
        return kept.samples.samples() if kept is not None else []


def test_the_runner_estimates_then_triggers_with_the_functions_weights() -> None:
    spec = {
        "kind": "kelly",
        "assets": ASSETS,
        "window": 8,
        "sample_ms": HOUR,
        "risk_tolerance": 0.5,
    }
    rig = Rig({"kind": "band", "mode": "absolute", "threshold": 0.01}, spec)
    for i in range(8):
        ev = rig.at(i)
        assert ev.outcome == "estimating"
        assert ev.event is None
        assert ev.detail == f"kelly: {i + 1} of 9 mark samples, not ready"
    # a check between two samples adds none
    between = rig.check(NOW + 7 * HOUR + 1)
    assert between.detail == "kelly: 8 of 9 mark samples, not ready"
    assert between.memory is None
    ready = rig.at(8)
    assert ready.outcome == "triggered", ready.detail
    ev = ready.event
    assert ev is not None
    sampled = rig.samples()
    assert [t for t, _ in sampled] == [NOW + i * HOUR for i in range(9)]
    expected = Kelly(8, risk_tolerance=0.5, periods_per_year=8760.0).target(matrix(sampled))
    assert ev.target.kind == "weights"
    assert [w.weight for w in ev.target.weights] == pytest.approx(expected.tolist(), abs=1e-12)
    assert ev.targets == pytest.approx(dict(zip(LABELS, expected.tolist(), strict=True)))
    assert ev.estimate is not None
    assert (ev.estimate.method, ev.estimate.samples, ev.estimate.sample_ms) == ("kelly", 9, HOUR)
    assert (ev.estimate.first_sample_at, ev.estimate.last_sample_at) == (NOW, NOW + 8 * HOUR)
    assert "kelly weights from 9 mark samples" in ev.reason
    # the engine plans it like any weights target
    work = rig.h.send(ev, NOW + 8 * HOUR + 1)
    assert work.intents
    # a read of the portfolio on any instance does not estimate: it says who does
    policies = rig.runner.settings
    seen = outlook(policies.rules[0], "a", rig.h.state, rig.h.snapshots, policies, NOW)
    assert seen.status == "unmeasured"
    assert "estimated from mark samples by the instance that owns" in seen.detail


def test_stale_snapshots_add_no_sample() -> None:
    spec = {"kind": "risk_parity", "assets": ASSETS, "window": 4, "sample_ms": HOUR}
    rig = Rig({"kind": "calendar", "every": "daily"}, spec)
    assert rig.at(0).outcome == "estimating"
    later = NOW + 10 * HOUR  # the last snapshot is older than max_snapshot_age_ms by then
    ev = rig.check(later)
    assert ev.outcome == "stale"
    assert ev.memory is None
    assert [t for t, _ in rig.samples()] == [NOW]


# -- the documented examples load -------------------------------------------------------------


def toml_blocks(path: str) -> list[str]:
    from pathlib import Path

    text = (Path(__file__).parents[2] / path).read_text()
    return [part.split("```", 1)[0] for part in text.split("```toml\n")[1:]]


def test_the_documented_risk_target_examples_are_valid_settings() -> None:
    import tomllib

    docs = toml_blocks("docs/live-policies.md")
    (kelly,) = [b for b in docs if 'kind = "kelly"' in b]
    (overlays,) = [b for b in docs if "[policies.rules.target.vol_target]" in b]
    (readme,) = [b for b in toml_blocks("README.md") if "risk_parity" in b]
    for text in (kelly + overlays, readme):
        loaded = tomllib.loads(text)
        policies = PolicySettings.model_validate({"enabled": True, **loaded["policies"]})
        found = policies.rules[0].target
        assert isinstance(found, RiskTarget)
        assert found.overlays == ("vol_target", "drawdown_guard")


def test_an_estimate_the_policy_function_refuses_is_no_estimate() -> None:
    # Y moves exactly against X: some long-only mix of them is riskless, risk parity refuses
    r = [0.01, -0.02, 0.015, -0.005, 0.02]
    x, y = [100.0], [50.0]
    for step in r:
        x.append(x[-1] * (1 + step))
        y.append(y[-1] * (1 - step))
    samples: list[Sample] = [
        (NOW + i * HOUR, {"v:X": a, "v:Y": b}) for i, (a, b) in enumerate(zip(x, y, strict=True))
    ]
    spec = {"kind": "risk_parity", "assets": ASSETS[:2], "window": 5, "sample_ms": HOUR}
    t = RiskTarget.model_validate(spec)
    with pytest.raises(PolicyError, match="riskless"):
        risk_weights(t, samples, {}, DrawdownState())
    rig = Rig({"kind": "calendar", "every": "daily"}, spec)
    kept = TargetMemory(sample_ms=HOUR, samples=MarkSamples.of(samples))
    memory = PolicyMemory(portfolio_id="default", world_id="a", target=kept)
    held = holdings(rig.h.snapshots.positions(["a"]), "a")
    found = rig.runner.estimate(t, memory, held)
    assert isinstance(found, str)
    assert found.startswith("risk_parity: cov: risk parity did not converge")


def test_estimating_does_not_use_up_a_hybrid_period() -> None:
    spec = {"kind": "equal", "assets": ASSETS, "window": 4, "sample_ms": HOUR}
    spec["vol_target"] = {"target_volatility": 0.05}
    rig = Rig({"kind": "hybrid", "every": "weekly", "threshold": 0.01}, spec)
    assert [rig.at(i).outcome for i in range(4)] == ["estimating"] * 4
    ready = rig.at(4)  # the same week: its look happens now, once ready
    assert ready.outcome == "triggered", ready.detail
    assert ready.event is not None
    assert ready.event.reason.startswith("out of band")
    assert "equal + vol_target weights from 5 mark samples" in ready.event.reason


# -- the samples and the trough are the world's policy memory: a new owner goes on ----------


def owner(rig: Rig, *, forget: bool = False) -> PolicyRunner:
    """The runner of a new owner (another instance, or this one restarted): the state read back
    from the changelog, the same snapshots; ``forget``: without the policy memories."""
    state = AllocationState()
    state.apply_all(
        (k, v) for k, v in changelog(rig.h.state) if not (forget and k.startswith(b"policy|"))
    )
    engine = RebalanceEngine(state, rig.h.snapshots, rig.h.engine.options)
    return PolicyRunner(rig.runner.settings, engine)


def weights_of(ev: Evaluation) -> list[float]:
    assert ev.event is not None, ev.detail
    assert ev.event.target.kind == "weights"
    return [w.weight for w in ev.event.target.weights]


def test_a_new_owner_goes_on_with_the_window_and_gives_the_same_weights() -> None:
    spec = {"kind": "risk_parity", "assets": ASSETS, "window": 8, "sample_ms": HOUR}
    rig = Rig({"kind": "band", "mode": "absolute", "threshold": 0.01}, spec)
    assert [rig.at(i).outcome for i in range(8)] == ["estimating"] * 8
    assert len(rig.samples()) == 8  # in the changelog's policy memory
    now = NOW + 8 * HOUR
    rig.price(8, now)
    (mine,) = rig.runner.evaluate(now, lambda _: True)  # the original owner
    (theirs,) = owner(rig).evaluate(now, lambda _: True)  # a new owner, same state
    assert (mine.outcome, theirs.outcome) == ("triggered", "triggered")
    assert weights_of(theirs) == weights_of(mine)
    assert mine.event is not None
    assert theirs.event is not None
    assert theirs.event.estimate == mine.event.estimate
    assert theirs.event.event_id == mine.event.event_id
    expected = RiskParity(8, periods_per_year=8760.0).target(matrix(samples_of(rig.marks[:9])))
    assert weights_of(theirs) == pytest.approx(expected.tolist(), abs=1e-12)
    # the control: an owner without the memory starts the window again
    (forgot,) = owner(rig, forget=True).evaluate(now, lambda _: True)
    assert (forgot.outcome, forgot.detail) == (
        "estimating",
        "risk_parity: 1 of 9 mark samples, not ready",
    )


def test_a_new_owner_keeps_the_drawdown_guards_cut() -> None:
    # 1 X + 1 Y + 1 Z: 170, 180, 190, 160, 150, 170, 180; a window of 4 returns (5 samples)
    spec = {"kind": "equal", "assets": ASSETS, "window": 4, "sample_ms": HOUR}
    spec["drawdown_guard"] = {"limit": 0.1, "floor": 0.5}
    rig = Rig({"kind": "band", "mode": "absolute", "threshold": 0.01}, spec)
    rig.marks = [{"v:X": x, "v:Y": 50.0, "v:Z": 20.0} for x in (100, 110, 120, 90, 80, 100, 110)]
    outcomes = [rig.at(i).outcome for i in range(6)]
    assert outcomes == ["estimating"] * 4 + ["triggered"] * 2
    kept = rig.h.state.policy_memory("default", "a").target
    assert kept is not None
    assert kept.trough == pytest.approx(1 - 150 / 190)  # cut at 150 under a peak of 190
    now = NOW + 6 * HOUR
    rig.price(6, now)  # 180: 5.3 % under the peak, within the limit, but not back at it
    (mine,) = rig.runner.evaluate(now, lambda _: True)
    (theirs,) = owner(rig).evaluate(now, lambda _: True)
    assert mine.event is not None
    assert theirs.event is not None
    assert mine.event.estimate is not None
    exposure = 0.5 + 0.5 * (1 - (1 - 180 / 190) / (1 - 150 / 190))
    assert mine.event.estimate.exposure == pytest.approx(exposure)
    assert theirs.event.estimate == mine.event.estimate
    assert weights_of(theirs) == pytest.approx([exposure / 3] * 3)
    # the control: an owner whose memory has the samples but not the trough gives the full
    # weights
    uncut = rig.h.state.policy_memory("default", "a")
    assert uncut.target is not None
    uncut = uncut.model_copy(update={"target": uncut.target.model_copy(update={"trough": 0.0})})
    for work in rig.h.engine.remember([uncut]):
        rig.h.run(work)
    (forgot,) = owner(rig).evaluate(now, lambda _: True)
    assert forgot.event is not None
    assert forgot.event.estimate is not None
    assert forgot.event.estimate.exposure == 1.0


def test_samples_taken_on_an_evaluation_that_goes_no_further_are_handed_back() -> None:
    spec = {"kind": "kelly", "assets": ASSETS, "window": 8, "sample_ms": HOUR}
    rig = Rig({"kind": "calendar", "every": "daily"}, spec)
    rig.at(0)
    assert rig.check(NOW + 1).memory is None  # no sample due
    # an event of this world's policy published, not applied yet: the world is pending
    sent = PolicyRebalance.model_validate(
        {
            "type": "policy_rebalance",
            "event_id": "policy:risk:a:x",
            "portfolio_id": "default",
            "occurred_at": NOW,
            "world_id": "a",
            "policy": "risk",
            "trigger": "calendar",
            "reason": "test",
            "target": {"kind": "allocation"},
        }
    )
    rig.runner.published(sent, NOW + HOUR)
    early = rig.at(1)
    assert early.outcome == "pending"
    assert early.memory is not None
    assert early.memory.target is not None
    assert early.memory.target.samples.times == [NOW, NOW + HOUR]
    assert [t for t, _ in rig.samples()] == [NOW, NOW + HOUR]


def test_samples_of_another_spacing_are_dropped_and_the_trough_kept() -> None:
    spec = {"kind": "kelly", "assets": ASSETS, "window": 8, "sample_ms": HOUR}
    rig = Rig({"kind": "calendar", "every": "daily"}, spec)
    for i in range(3):
        rig.at(i)
    kept = rig.h.state.policy_memory("default", "a").target
    assert kept is not None
    assert len(kept.samples.times) == 3
    cut = kept.model_copy(update={"trough": 0.3})
    memory = rig.h.state.policy_memory("default", "a").model_copy(update={"target": cut})
    for work in rig.h.engine.remember([memory]):
        rig.h.run(work)
    policies = PolicySettings.model_validate(
        {
            "enabled": True,
            "check_interval_ms": 60_000,
            "rules": [
                {
                    "name": "risk",
                    "worlds": ["a"],
                    "trigger": {"kind": "calendar", "every": "daily"},
                    "target": {**spec, "sample_ms": 2 * HOUR},
                }
            ],
        }
    )
    rig.runner = PolicyRunner(policies, rig.h.engine)
    again = rig.at(3)
    assert again.detail == "kelly: 1 of 9 mark samples, not ready"
    assert again.memory is not None
    assert again.memory.target == TargetMemory(
        sample_ms=2 * HOUR,
        samples=MarkSamples.of([(NOW + 3 * HOUR, rig.marks[3])]),
        trough=0.3,
    )


def test_a_memory_written_before_targets_were_kept_loads_without_them() -> None:
    old = b'{"portfolio_id":"p","world_id":"w","looked":null,"samples":{"labels":["v:X"],'
    old += b'"times":[1],"marks":[[2.0]]}}'
    memory = PolicyMemory.model_validate_json(old)
    assert memory.target is None
