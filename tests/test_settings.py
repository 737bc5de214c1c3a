"""Configuration: the TOML defaults, overrides from a file and from REBALANCER_* variables."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from service.errors import InputError
from service.live.config import PolicySettings
from service.planner import PlannerOptions
from service.settings import DEFAULT_CONFIG, Settings, Topics, load_settings


def test_default_toml_states_the_code_defaults() -> None:
    data = tomllib.loads(DEFAULT_CONFIG.read_text())
    assert PlannerOptions.model_validate(data["planner"]) == PlannerOptions()
    assert PolicySettings.model_validate(data["policies"]) == PolicySettings()
    sections = {"planner", "topics", "policies"}
    defaults = {
        name: field.default for name, field in Settings.model_fields.items() if name not in sections
    }
    stated = {k: v for k, v in data.items() if k not in sections}
    assert stated == {k: v for k, v in defaults.items() if v is not None}
    assert Topics.model_validate(data["topics"]) == Topics()


def test_environment_overrides_nested_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REBALANCER_PLANNER__MIN_TRADE_NOTIONAL", "25")
    monkeypatch.setenv("REBALANCER_PLANNER__LOT_SIZE_BY_SYMBOL", '{"BTCUSDT": 0.001}')
    settings = load_settings()
    assert settings.planner.min_trade_notional == 25.0
    assert settings.planner.lot_size_by_symbol == {"BTCUSDT": 0.001}
    assert settings.planner.flip_policy == "flatten_then_open"


def test_environment_wins_over_a_config_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[planner]\nflip_policy = "direct_flip"\nmin_trade_notional = 5.0\n')
    monkeypatch.setenv("REBALANCER_CONFIG_FILE", str(config))
    monkeypatch.setenv("REBALANCER_PLANNER__MIN_TRADE_NOTIONAL", "7")
    settings = load_settings()
    assert settings.planner.flip_policy == "direct_flip"
    assert settings.planner.min_trade_notional == 7.0


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("REBALANCER_PLANNER__MIN_TRADE_NOTIONAL", "-1", "planner.min_trade_notional"),
        ("REBALANCER_PLANNER__SCALE_RULE", "weird", "planner.scale_rule"),
        ("REBALANCER_PLANNER__QTY_DECIMALS", "40", "planner.qty_decimals"),
        ("REBALANCER_PLANNER__LOT_SIZE_BY_SYMBOL", '{"X": 0}', "planner.lot_size_by_symbol.X"),
        ("REBALANCER_PLANNER__LOT_SIZE_BY_SYMBOL", "{not json", "config:"),
    ],
)
def test_bad_configuration_names_the_key(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(InputError, match=expected):
        load_settings()


def test_missing_or_malformed_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[planner\n")
    monkeypatch.setenv("REBALANCER_CONFIG_FILE", str(broken))
    with pytest.raises(InputError, match="config:"):
        load_settings()
