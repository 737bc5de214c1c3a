"""What the reads show of the live policies: a world's drift against each rule's band, and
when the rule looks next; measured as the runner measures."""

from __future__ import annotations

import pytest

from service.live.outlook import next_period_start, outlook, world_outlooks
from service.live.runner import DAY_MS
from tests.policies.test_policy_runner import BAND, NOW, Rig, settings


def look(rig: Rig, now: int) -> dict[str, object]:
    (rule,) = rig.runner.rules
    found = outlook(rule, "a", rig.h.state, rig.h.snapshots, rig.runner.settings, now)
    return found.model_dump()


def test_a_band_rule_shows_the_drift_the_runner_would_act_on() -> None:
    rig = Rig(settings(BAND))
    rig.price(120.0, NOW)  # 240 of a measured 1,040: 0.2308 against 0.2, inside 0.05
    inside = look(rig, NOW)
    assert inside["status"] == "in_band"
    assert inside["weights"] == pytest.approx({"world": 240 / 1_040})
    assert inside["targets"] == {"world": 0.2}
    assert inside["drift"] == pytest.approx({"world": 240 / 1_040 - 0.2})
    assert (inside["equity"], inside["equity_source"]) == (1_040.0, "measured")
    assert (inside["band"], inside["band_mode"], inside["out_of_band"]) == (0.05, "absolute", [])
    assert inside["next_check_at"] == NOW + 60_000
    assert rig.at(NOW).outcome == "in_band"  # the runner agrees
    rig.price(150.0, NOW + 1)
    out = look(rig, NOW + 1)
    assert (out["status"], out["out_of_band"]) == ("out_of_band", ["world"])
    assert rig.at(NOW + 1).outcome == "triggered"


def test_a_calendar_rule_looks_next_at_the_start_of_the_next_period() -> None:
    rig = Rig(settings({"kind": "calendar", "every": "monthly"}))
    rig.price(100.0, NOW)
    due = look(rig, NOW)
    assert (due["status"], due["band"], due["next_check_at"]) == ("calendar", None, NOW + 60_000)
    rig.triggers(NOW)  # rebalanced this month (November 2023)
    after = look(rig, NOW + DAY_MS)
    december = 1_701_388_800_000  # 2023-12-01 00:00 UTC
    assert after["next_check_at"] == december


def test_a_world_that_cannot_be_measured_says_why() -> None:
    rig = Rig(settings(BAND))
    rig.price(None, NOW)
    found = look(rig, NOW)
    assert (found["status"], found["detail"]) == ("unmeasured", "no mark for v:X")


@pytest.mark.parametrize(
    ("cadence", "now", "start"),
    [
        ("daily", NOW, (NOW // DAY_MS + 1) * DAY_MS),
        ("weekly", NOW, 1_700_438_400_000),  # Tuesday -> Monday 2023-11-20
        ("quarterly", NOW, 1_704_067_200_000),  # 2024-01-01
        ("yearly", NOW, 1_704_067_200_000),
    ],
)
def test_next_period_start(cadence: str, now: int, start: int) -> None:
    assert next_period_start(now, cadence) == start  # type: ignore[arg-type]


def test_no_outlook_when_policies_are_off() -> None:
    off = settings(BAND).model_copy(update={"enabled": False})
    rig = Rig(off)
    assert world_outlooks(off, rig.h.state, rig.h.snapshots, "default", NOW) == {}
    on = Rig(settings(BAND))
    found = world_outlooks(on.runner.settings, on.h.state, on.h.snapshots, "default", NOW)
    assert [o.policy for o in found["a"]] == ["keep"]
