"""Configuration: the TOML defaults, overrides from a file and from REBALANCER_* variables."""

from __future__ import annotations

import tomllib
from pathlib import Path

import orjson
import pytest

from service.app import approval_rules, cost_gates, pacing_rules, planner_choice
from service.engine.options import PaceRule
from service.errors import InputError
from service.live.config import PolicySettings
from service.planner import PlannerOptions
from service.settings import (
    DEFAULT_CONFIG,
    ApiSettings,
    ApprovalSettings,
    CostSettings,
    ExecutionSettings,
    NotificationSettings,
    PacingSettings,
    PlannerChoiceSettings,
    Security,
    Settings,
    SlicingSettings,
    Topics,
    load_settings,
)


def test_default_toml_states_the_code_defaults() -> None:
    data = tomllib.loads(DEFAULT_CONFIG.read_text())
    assert PlannerOptions.model_validate(data["planner"]) == PlannerOptions()
    assert PolicySettings.model_validate(data["policies"]) == PolicySettings()
    assert Security.model_validate(data["security"]) == Security()
    assert ApiSettings.model_validate(data["api"]) == ApiSettings()
    assert ApprovalSettings.model_validate(data["approval"]) == ApprovalSettings()
    assert CostSettings.model_validate(data["costs"]) == CostSettings()
    assert ExecutionSettings.model_validate(data["execution"]) == ExecutionSettings()
    assert NotificationSettings.model_validate(data["notifications"]) == NotificationSettings()
    assert PacingSettings.model_validate(data["pacing"]) == PacingSettings()
    assert SlicingSettings.model_validate(data["slicing"]) == SlicingSettings()
    assert PlannerChoiceSettings.model_validate(data["planners"]) == PlannerChoiceSettings()
    sections = {
        "planner",
        "planners",
        "topics",
        "policies",
        "security",
        "api",
        "approval",
        "costs",
        "execution",
        "notifications",
        "pacing",
        "slicing",
    }
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


def _rule(**fields: object) -> dict[str, object]:
    return {
        "name": "r",
        "worlds": ["a"],
        "trigger": {"kind": "band", "threshold": 0.05},
        "target": {"kind": "allocation"},
        **fields,
    }


def test_policies_are_off_by_default_and_load_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().policies.enabled is False
    monkeypatch.setenv("REBALANCER_POLICIES__ENABLED", "true")
    monkeypatch.setenv("REBALANCER_POLICIES__RULES", orjson.dumps([_rule()]).decode())
    policies = load_settings().policies
    assert policies.enabled is True
    (rule,) = policies.rules
    assert (rule.name, rule.worlds, rule.trigger.kind, rule.target.kind) == (
        "r",
        ("a",),
        "band",
        "allocation",
    )


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([], r"policies: rules: policies are enabled but no rule is configured"),
        (
            [_rule(trigger={"kind": "band", "threshold": -0.1})],
            r"policies\.rules\.0\.trigger\.threshold: Input should be greater than or equal to 0",
        ),
        (
            [_rule(trigger={"kind": "hybrid", "every": "fortnightly", "threshold": 0.1})],
            r"policies\.rules\.0\.trigger\.every: cadence: unknown cadence 'fortnightly'",
        ),
        ([_rule(trigger={"kind": "whim"})], r"policies\.rules\.0\.trigger: Input tag 'whim'"),
        ([_rule(max_trades=65)], r"policies\.rules\.0\.max_trades: Input should be less"),
        ([_rule(name="has space")], r"policies\.rules\.0\.name: String should match pattern"),
        (
            [_rule(), _rule(name="s", worlds=["b", "a"])],
            r"policies: rules\.1\.worlds: world 'a' of portfolio 'default' is already watched",
        ),
        ([_rule(), _rule()], r"policies: rules\.1\.name: 'r' is used by another rule"),
        (
            [_rule(target={"kind": "weights", "weights": [{"venue": "v", "symbol": "X"}]})],
            r"policies\.rules\.0\.target\.weights\.0\.weight: Field required",
        ),
        (
            [_rule(cost_gate={"max_cost_to_benefit": 1.0})],
            r"policies\.rules\.0\.cost_gate\.volatility: Field required",
        ),
        (
            [_rule(cost_gate={"volatility": 0.5, "max_cost_to_benefit": -1})],
            r"policies\.rules\.0\.cost_gate\.max_cost_to_benefit: Input should be greater",
        ),
        (
            [_rule(cost_gate={"volatility": 0.5, "volatility_by_symbol": {"X": 0}})],
            r"policies\.rules\.0\.cost_gate\.volatility_by_symbol\.X: Input should be greater",
        ),
    ],
)
def test_bad_policies_are_refused_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, rules: list[dict[str, object]], expected: str
) -> None:
    monkeypatch.setenv("REBALANCER_POLICIES__ENABLED", "true")
    monkeypatch.setenv("REBALANCER_POLICIES__RULES", orjson.dumps(rules).decode())
    with pytest.raises(InputError, match=expected):
        load_settings()


def test_a_rules_cost_gate_is_off_by_default_and_loads_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REBALANCER_POLICIES__ENABLED", "true")
    gate = {"max_cost_to_benefit": 0.5, "volatility": 0.6, "volatility_by_symbol": {"X": 0.9}}
    rules = [_rule(), _rule(name="g", worlds=["b"], cost_gate=gate)]
    monkeypatch.setenv("REBALANCER_POLICIES__RULES", orjson.dumps(rules).decode())
    monkeypatch.setenv("REBALANCER_COSTS__FIXED_PER_TRADE", "5")
    settings = load_settings()
    plain, gated = settings.policies.rules
    assert plain.cost_gate is None
    assert gated.cost_gate is not None
    assert gated.cost_gate.volatility_by_symbol == {"X": 0.9}
    (built,) = cost_gates(settings).items()
    assert built[0] == "g"
    assert (built[1].ratio, built[1].costs.fixed_per_trade, built[1].vol("X")) == (0.5, 5.0, 0.9)


def test_planners_are_chosen_per_portfolio_and_world(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().planners.choice == []
    choice = [
        {"portfolio": "p", "planner": "proportional", "scale_rule": "bounded"},
        {"portfolio": "p", "world": "w", "planner": "target_weight"},
        {
            "portfolio": "p",
            "world": "c",
            "planner": "cost_aware",
            "cost_aware": {"base": "target_weight", "volatility": 0.5},
        },
    ]
    monkeypatch.setenv("REBALANCER_PLANNERS__CHOICE", orjson.dumps(choice).decode())
    monkeypatch.setenv("REBALANCER_PLANNER__MIN_NOTIONAL_BY_VENUE", '{"binance": 10}')
    settings = load_settings()
    assert settings.planner.min_notional_by_venue == {"binance": 10.0}
    built = planner_choice(settings)
    assert built.by_portfolio["p"].scale_rule == "bounded"
    assert built.by_world[("p", "w")].planner.name == "target_weight"
    assert built.by_world[("p", "c")].planner.name == "cost_aware"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"REBALANCER_PLANNERS__CHOICE": '[{"planner": "cost_aware"}]'},
            r"planners\.choice\.0: cost_aware: settings go with planner cost_aware",
        ),
        (
            {
                "REBALANCER_PLANNERS__CHOICE": '[{"planner": "target_weight", '
                '"scale_rule": "bounded"}]'
            },
            r"planners\.choice\.0: scale_rule: applies to the proportional planner",
        ),
        (
            {"REBALANCER_PLANNERS__CHOICE": '[{"planner": "fancy"}]'},
            r"planners\.choice\.0\.planner: Input should be",
        ),
        (
            {
                "REBALANCER_PLANNERS__CHOICE": '[{"planner": "proportional"}, '
                '{"planner": "target_weight"}]'
            },
            r"planners: choice\.1: portfolio 'default' has a planner already",
        ),
        (
            {
                "REBALANCER_PLANNERS__CHOICE": '[{"planner": "target_weight"}]',
                "REBALANCER_PLANNER__EXECUTION_MODE": "shared_account",
                "REBALANCER_PLANNER__ALLOW_SHARED_ACCOUNT": "true",
            },
            r"planners\.choice\.0\.planner: target_weight plans per world",
        ),
        (
            {"REBALANCER_PLANNER__MIN_NOTIONAL_BY_VENUE": '{"binance": -1}'},
            r"planner\.min_notional_by_venue\.binance: Input should be greater",
        ),
    ],
)
def test_bad_planner_choices_are_refused_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InputError, match=expected):
        load_settings()


def test_weights_targets_need_per_world_execution(monkeypatch: pytest.MonkeyPatch) -> None:
    target = {"kind": "weights", "weights": [{"venue": "v", "symbol": "X", "weight": 1.0}]}
    monkeypatch.setenv("REBALANCER_POLICIES__ENABLED", "true")
    monkeypatch.setenv("REBALANCER_POLICIES__RULES", orjson.dumps([_rule(target=target)]).decode())
    monkeypatch.setenv("REBALANCER_PLANNER__EXECUTION_MODE", "shared_account")
    monkeypatch.setenv("REBALANCER_PLANNER__ALLOW_SHARED_ACCOUNT", "true")
    with pytest.raises(InputError, match=r"policies\.rules\.0\.target: weights targets"):
        load_settings()


def test_security_settings_are_checked_and_the_password_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REBALANCER_SECURITY__PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("REBALANCER_SECURITY__PASSWORD", "s3cret-Pa55")
    with pytest.raises(InputError) as caught:
        load_settings()
    message = str(caught.value)
    assert "needs sasl_mechanism, username" in message
    assert "s3cret-Pa55" not in message
    monkeypatch.setenv("REBALANCER_SECURITY", '{"protocol": "SSL", "password": 12345}')
    with pytest.raises(InputError) as caught:
        load_settings()
    assert "12345" not in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"protocol": "PLAINTEXT", "username": "u"}, "need a SASL protocol"),
        ({"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"}, "needs username, password"),
        ({"protocol": "PLAINTEXT", "ca_file": __file__}, "need SSL or SASL_SSL"),
        ({"protocol": "SSL", "cert_file": __file__}, "cert_file and key_file go together"),
        ({"protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"}, "sasl_mechanism"),
    ],
)
def test_incomplete_or_contradictory_security_is_refused(
    fields: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        Security.model_validate(fields)


async def test_every_client_gets_the_security_settings() -> None:
    from consumers.clients import KafkaClients

    security = Security.model_validate(
        {
            "protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "username": "svc",
            "password": "pw-7f3a",
        }
    )
    clients = KafkaClients("127.0.0.1:9092", security)
    assert clients.connection() == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "pw-7f3a",
    }
    assert "pw-7f3a" not in repr(clients)
    producer = clients.producer()
    assert producer.client._security_protocol == "SASL_PLAINTEXT"
    assert producer.client._sasl_plain_password == "pw-7f3a"


def test_approval_loads_from_the_environment_and_becomes_the_engine_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "REBALANCER_APPROVAL__REQUIRED", '[{"portfolio": "p1"}, {"portfolio": "p2", "world": "w"}]'
    )
    monkeypatch.setenv("REBALANCER_APPROVAL__FOUR_EYES", '["p1"]')
    rules = approval_rules(load_settings())
    assert (rules.portfolios, rules.worlds, rules.four_eyes) == (
        {"p1"},
        {("p2", "w")},
        {"p1"},
    )
    assert rules.ttl_ms == PlannerOptions().intent_ttl_ms  # unset: the intents' life
    assert rules.configured("p2", "w")
    assert not rules.configured("p2", "other")


def test_a_proposal_cannot_outlive_its_intents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REBALANCER_APPROVAL__TTL_MS", "600000")
    with pytest.raises(InputError, match=r"approval\.ttl_ms: 600000 is longer than planner"):
        load_settings()
    monkeypatch.setenv("REBALANCER_PLANNER__INTENT_TTL_MS", "600000")
    assert approval_rules(load_settings()).ttl_ms == 600_000


def test_webhooks_load_from_the_environment_and_the_secret_is_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hooks = [
        {"url": "https://hooks.example.com/T0/B0/xyz", "secret": "s3cr3t-value", "format": "slack"},
        {"name": "ops", "url": "http://127.0.0.1:9000/hook", "secret": "other-secret"},
    ]
    monkeypatch.setenv("REBALANCER_NOTIFICATIONS__WEBHOOKS", orjson.dumps(hooks).decode())
    monkeypatch.setenv("REBALANCER_NOTIFICATIONS__MAX_ATTEMPTS", "3")
    s = load_settings()
    n = s.notifications
    assert n.max_attempts == 3
    assert n.names() == ["webhook-0", "ops"]
    assert n.webhooks[0].format == "slack"
    assert n.webhooks[1].format == "json"
    assert n.webhooks[0].secret.get_secret_value() == "s3cr3t-value"
    for shown in (repr(s), str(s), s.model_dump_json(), repr(n.webhooks[0])):
        assert "s3cr3t-value" not in shown
        assert "other-secret" not in shown


def test_bad_webhooks_are_refused_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = [{"url": "ftp://x", "secret": "k"}]
    monkeypatch.setenv("REBALANCER_NOTIFICATIONS__WEBHOOKS", orjson.dumps(bad).decode())
    with pytest.raises(InputError, match=r"notifications\.webhooks\.0\.url"):
        load_settings()
    twice = [{"name": "a", "url": "http://x", "secret": "k"}] * 2
    monkeypatch.setenv("REBALANCER_NOTIFICATIONS__WEBHOOKS", orjson.dumps(twice).decode())
    with pytest.raises(InputError, match="used more than once"):
        load_settings()


def test_pacing_and_slicing_are_off_by_default() -> None:
    settings = load_settings()
    assert pacing_rules(settings).rule("any", "w") is None
    assert settings.slicing.max_slice_notional is None


def test_pacing_and_slicing_load_from_the_environment_and_become_the_engine_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REBALANCER_PACING__MAX_STEP_SHARE", "0.5")
    monkeypatch.setenv("REBALANCER_PACING__STEPS", "4")
    monkeypatch.setenv(
        "REBALANCER_PACING__SCOPES",
        '[{"portfolio": "p", "max_step_share": 0.2, "ratio": 0.5},'
        ' {"portfolio": "p", "world": "w"}]',
    )
    monkeypatch.setenv("REBALANCER_SLICING__MAX_SLICE_NOTIONAL", "25000")
    settings = load_settings()
    rules = pacing_rules(settings)
    assert rules.rule("other", "w") == PaceRule(0.5, 4, None)
    assert rules.rule("p", "v") == PaceRule(0.2, 3, 0.5)
    assert rules.rule("p", "w") is None  # the world's scope turns pacing off there
    assert settings.slicing.max_slice_notional == 25_000


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("REBALANCER_PACING__STEPS", "1", r"pacing\.steps"),
        ("REBALANCER_PACING__MAX_STEP_SHARE", "0", r"pacing\.max_step_share"),
        ("REBALANCER_PACING__RATIO", "1.5", r"pacing\.ratio"),
        ("REBALANCER_SLICING__MAX_SLICE_NOTIONAL", "-1", r"slicing\.max_slice_notional"),
        (
            "REBALANCER_PACING__SCOPES",
            '[{"portfolio": "p"}, {"portfolio": "p"}]',
            r"pacing.*scopes\.1: portfolio 'p' has its pacing already",
        ),
    ],
)
def test_bad_pacing_and_slicing_settings_are_refused_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(InputError, match=message):
        load_settings()
