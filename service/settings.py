"""Configuration: defaults in code, ``config/default.toml``, an optional file, then env vars.

Precedence, highest first: ``REBALANCER_*`` environment variables (nested keys with ``__``,
e.g. ``REBALANCER_PLANNER__FLIP_POLICY=direct_flip``), the file named by
``REBALANCER_CONFIG_FILE``, ``config/default.toml`` of this checkout, the defaults below.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import InputError, describe
from .live.config import PolicySettings
from .messages._types import MAX_AMOUNT, Name
from .planner import PlannerOptions, ScaleRule

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "default.toml"


class Topics(BaseModel):
    """Topic names (SPEC 2 defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    snapshots: str = Field(default="portfolio.snapshots", min_length=1)
    allocations: str = Field(default="allocations.events", min_length=1)
    intents: str = Field(default="execution.deltas", min_length=1)
    plans: str = Field(default="rebalance.plans", min_length=1)
    dead_letters: str = Field(default="rebalancer.dlq", min_length=1)
    changelog: str = Field(default="rebalancer.state", min_length=1)
    nodes: str = Field(
        default="rebalancer.nodes",
        min_length=1,
        description="Execution nodes' heartbeats (compacted, keyed by node id).",
    )
    notifications: str = Field(default="rebalancer.notifications", min_length=1)


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class Security(BaseModel):
    """How every Kafka client of the project connects: the service, its readers, producer and
    admin, the execution node, the demo. Secrets are ``SecretStr``: printed as ``**********``
    in logs, errors and ``repr``; only the client that sends them reads them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = Field(
        default=None, description="Required with SASL_PLAINTEXT and SASL_SSL."
    )
    username: str | None = Field(default=None, min_length=1)
    password: SecretStr | None = None
    ca_file: FilePath | None = Field(
        default=None, description="PEM file of the CAs that sign the brokers' certificates."
    )
    cert_file: FilePath | None = Field(
        default=None, description="PEM client certificate (mutual TLS), with key_file."
    )
    key_file: FilePath | None = None
    key_password: SecretStr | None = None

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @model_validator(mode="after")
    def _complete(self) -> Security:
        if self.sasl:
            missing = [
                name
                for name, value in (
                    ("sasl_mechanism", self.sasl_mechanism),
                    ("username", self.username),
                    ("password", self.password),
                )
                if value is None
            ]
            if missing:
                raise ValueError(f"protocol {self.protocol} needs {', '.join(missing)}")
        elif self.sasl_mechanism or self.username or self.password:
            raise ValueError(
                f"sasl_mechanism, username and password need a SASL protocol, not {self.protocol}"
            )
        files = self.ca_file or self.cert_file or self.key_file
        if files and not self.tls:
            raise ValueError(
                f"ca_file, cert_file and key_file need SSL or SASL_SSL, not {self.protocol}"
            )
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS)")
        return self


Role = Literal["viewer", "operator", "approver", "admin"]


class ApiToken(BaseModel):
    """A bearer token the API accepts, by the SHA-256 of the token (never the token itself):
    ``printf %s "$TOKEN" | sha256sum``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    role: Role
    sha256: str = Field(
        pattern=r"^[0-9a-fA-F]{64}$",
        description="Hex SHA-256 of the token (64 hex digits), not the token.",
    )

    @model_validator(mode="after")
    def _lower(self) -> ApiToken:
        object.__setattr__(self, "sha256", self.sha256.lower())
        return self


class ApiSettings(BaseModel):
    """The operator API (``/v1``): who may call it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: list[ApiToken] = Field(
        default_factory=list,
        description="Accepted bearer tokens, by SHA-256, each with a name and a role. With "
        "none, the API serves only a loopback address, where every request is admin.",
    )
    max_body_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1_024,
        description="Larger request bodies are refused with 413 (a 200,000-row planning "
        "request is about 25 MB).",
    )

    @model_validator(mode="after")
    def _unique(self) -> ApiSettings:
        names = [t.name for t in self.tokens]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"tokens: the names {', '.join(doubled)} are used more than once")
        hashes = [t.sha256 for t in self.tokens]
        if len(set(hashes)) < len(hashes):
            raise ValueError("tokens: two tokens have the same sha256 (one token, two names?)")
        return self


class ApprovalScope(BaseModel):
    """A portfolio, or one of its worlds, whose plans need approval."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    portfolio: Name
    world: Name | None = None


class ApprovalSettings(BaseModel):
    """Approval mode: plans proposed, published only once an approver approves them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    required: list[ApprovalScope] = Field(
        default_factory=list,
        description="Portfolios and worlds whose plans need approval (commands "
        "require-approval and waive-approval change it at run time).",
    )
    ttl_ms: int | None = Field(
        default=None,
        gt=0,
        description="A proposal not approved within this expires (unset: the intents' "
        "planner.intent_ttl_ms; it cannot be longer, or an approval would publish expired "
        "intents).",
    )
    four_eyes: list[Name] = Field(
        default_factory=list,
        description="Portfolios where a plan cannot be approved by the token whose command "
        "produced it.",
    )


class CostSettings(BaseModel):
    """What trading costs, for estimates (the dashboard's cost per plan)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fee_bps: float = Field(default=0.0, ge=0, le=10_000, description="Fee, bps of notional.")
    half_spread_bps: float = Field(
        default=0.0, ge=0, le=10_000, description="Half the bid-ask spread, bps of notional."
    )
    fixed_per_trade: float = Field(
        default=0.0, ge=0, le=1e12, allow_inf_nan=False, description="Per traded key."
    )


def repeated_scope(scopes: Iterable[tuple[str, str | None]]) -> tuple[int, str] | None:
    """The first ``(portfolio, world)`` scope given a second time: its index, and its name
    as an error says it (``portfolio 'p' world 'w'``); None when each is given once."""
    seen: set[tuple[str, str | None]] = set()
    for i, (portfolio, world) in enumerate(scopes):
        if (portfolio, world) in seen:
            return i, f"portfolio {portfolio!r}" + (f" world {world!r}" if world else "")
        seen.add((portfolio, world))
    return None


class PacingScope(BaseModel):
    """Pacing for one portfolio, or one of its worlds, instead of the section's own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    portfolio: Name
    world: Name | None = None
    max_step_share: float | None = Field(
        default=None,
        gt=0,
        le=1_000,
        allow_inf_nan=False,
        description="As the section's; unset turns pacing off for this scope.",
    )
    steps: int = Field(default=3, ge=2, le=100)
    ratio: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)


class PacingSettings(BaseModel):
    """Pacing: a large allocation move spread over front-loaded steps, each its own plan,
    each planned once the previous one is reached. Off unless ``max_step_share`` is set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_step_share: float | None = Field(
        default=None,
        gt=0,
        le=1_000,
        allow_inf_nan=False,
        description="A move of a world larger than this share of its current allocation "
        "(|after - before| / before, or the largest strategy weight's move over it) is "
        "paced; unset: never.",
    )
    steps: int = Field(default=3, ge=2, le=100, description="How many steps a paced move has.")
    ratio: float | None = Field(
        default=None,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="Each step this times the previous one (geometric); unset: linear "
        "(steps, steps - 1, ..., 1 over their sum).",
    )
    scopes: list[PacingScope] = Field(
        default_factory=list,
        description="Per portfolio or world settings; a world's wins over its portfolio's, "
        "which wins over the section's.",
    )

    @model_validator(mode="after")
    def _unique_scopes(self) -> PacingSettings:
        repeated = repeated_scope((s.portfolio, s.world) for s in self.scopes)
        if repeated is not None:
            i, where = repeated
            raise ValueError(f"scopes.{i}: {where} has its pacing already")
        return self


Volatility = Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)]


class CostAwareSettings(BaseModel):
    """The cost-aware planner: its base planner's plan without the keys whose cost
    (``[costs]``) is above ``max_cost_to_benefit`` x the tracking error their trade removes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: Literal["proportional", "target_weight"] = "proportional"
    max_cost_to_benefit: float = Field(default=1.0, ge=0, le=1e6, allow_inf_nan=False)
    volatility: Volatility = Field(description="Annualized volatility of every key (0.6: 60%).")
    volatility_by_symbol: dict[Name, Volatility] = Field(default_factory=dict)


class PlannerChoiceRule(BaseModel):
    """The planner of a portfolio's plans, or of one of its worlds'."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    portfolio: Name = "default"
    world: Name | None = Field(default=None, description="Unset: the whole portfolio.")
    planner: Literal["proportional", "target_weight", "cost_aware"]
    scale_rule: ScaleRule | None = Field(
        default=None, description="The proportional planner's rule here (default: planner's)."
    )
    cost_aware: CostAwareSettings | None = Field(
        default=None, description="Required with planner cost_aware, refused otherwise."
    )

    @model_validator(mode="after")
    def _complete(self) -> PlannerChoiceRule:
        if (self.planner == "cost_aware") != (self.cost_aware is not None):
            raise ValueError("cost_aware: settings go with planner cost_aware, and only with it")
        base = self.cost_aware.base if self.cost_aware is not None else self.planner
        if self.scale_rule is not None and base != "proportional":
            raise ValueError(f"scale_rule: applies to the proportional planner, not {base}")
        return self


class PlannerChoiceSettings(BaseModel):
    """Planners chosen per portfolio or world (``planner`` options apply to all of them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    choice: list[PlannerChoiceRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> PlannerChoiceSettings:
        repeated = repeated_scope((rule.portfolio, rule.world) for rule in self.choice)
        if repeated is not None:
            i, where = repeated
            raise ValueError(f"choice.{i}: {where} has a planner already")
        return self


class SlicingSettings(BaseModel):
    """Slicing: an intent above ``max_slice_notional`` is published as slices, in whole lots,
    which execution nodes trade one after the other. Off unless it is set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_slice_notional: float | None = Field(
        default=None,
        gt=0,
        le=MAX_AMOUNT,
        allow_inf_nan=False,
        description="The largest notional of one slice; unset: intents are not sliced.",
    )


class ExecutionSettings(BaseModel):
    """The execution nodes (``rebalancer execute``): their HTTP endpoints and heartbeats."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    http_host: str = Field(
        default="127.0.0.1", description="Where a node serves /metrics, /healthz and /readyz."
    )
    http_port: int = Field(
        default=8081, ge=0, le=65535, description="Its port (0: a free one, logged)."
    )
    heartbeat_interval_ms: int = Field(
        default=5_000,
        ge=10,
        le=3_600_000,
        description="A node publishes its heartbeat on topics.nodes this often; the service "
        "shows it alive while its last heartbeat is less than three intervals old.",
    )


class Webhook(BaseModel):
    """A receiver of notifications: signed JSON (``format = "json"``) or a Slack incoming
    webhook's ``{"text": ...}`` (``format = "slack"``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://[^\s]+$", description="http:// or https:// URL.")
    secret: SecretStr = Field(
        description="Signs every request (X-Rebalancer-Signature); never logged or published."
    )
    format: Literal["json", "slack"] = "json"
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Names the webhook in logs, metrics, dead letters and its consumer group "
        "(default: 'webhook-<n>', its place in the list). Keep it when reordering the list, "
        "or the webhook starts over from the topic's newest notifications.",
    )


class NotificationSettings(BaseModel):
    """Notifications: every plan, hold, approval decision, reached plan and command goes to
    ``topics.notifications``; each webhook gets them in order per portfolio, retried with
    exponential backoff, dead-lettered when undeliverable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    webhooks: list[Webhook] = Field(default_factory=list)
    max_attempts: int = Field(
        default=12, ge=1, description="Attempts per notification and webhook, at most."
    )
    max_elapsed_ms: int = Field(
        default=300_000,
        gt=0,
        description="No new attempt starts this long after the first; the notification is "
        "then dead-lettered and the webhook moves on.",
    )
    backoff_initial_ms: int = Field(default=500, gt=0, description="The first retry's wait.")
    backoff_max_ms: int = Field(default=30_000, gt=0, description="The longest wait.")
    timeout_ms: int = Field(default=10_000, gt=0, description="Per request.")

    def names(self) -> list[str]:
        """Each webhook's name (its own, or 'webhook-<n>')."""
        return [w.name or f"webhook-{i}" for i, w in enumerate(self.webhooks)]

    @model_validator(mode="after")
    def _unique_names(self) -> NotificationSettings:
        names = self.names()
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"webhooks: the names {', '.join(doubled)} are used more than once")
        return self


class Settings(BaseSettings):
    """Everything the service and CLI can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix="REBALANCER_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    bootstrap_servers: str | None = Field(
        default=None, description="Kafka brokers; unset starts the embedded broker."
    )
    group_id: str = Field(default="rebalancer", min_length=1)
    client_id: str = Field(default="rebalancer", min_length=1)
    security: Security = Security()
    topics: Topics = Topics()
    topic_partitions: int = Field(
        default=3, ge=1, description="Partitions of topics the service creates."
    )
    topic_replication: int = Field(
        default=1, ge=1, description="Replication factor of topics the service creates."
    )
    topic_min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        description="min.insync.replicas of topics the service creates (unset: the broker's "
        "default). With acks=all, a write is acknowledged once this many replicas have it.",
    )

    @model_validator(mode="after")
    def _insync_fits_replication(self) -> Settings:
        wanted = self.topic_min_insync_replicas
        if wanted is not None and wanted > self.topic_replication:
            raise ValueError(
                f"topic_min_insync_replicas: {wanted} is more than topic_replication "
                f"({self.topic_replication}); no write could be acknowledged"
            )
        return self

    compression: Literal["none", "zstd", "lz4", "gzip"] = Field(
        default="zstd", description="Compression of everything the service publishes."
    )
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        default="at_least_once",
        description="at_least_once: a crash may publish a plan's intents again (the same ids "
        "and bytes). exactly_once (Apache Kafka only): a plan's intents, records, state and its "
        "event's offset are one transaction, so read_committed consumers see each once.",
    )
    plan_settle_timeout_ms: int = Field(default=600_000, gt=0)
    max_snapshot_age_ms: int | None = Field(default=None, gt=0)
    max_clock_skew_ms: int = Field(
        default=60_000,
        ge=0,
        le=366 * 86_400_000,
        description="A snapshot dated more than this after its record was published is "
        "dead-lettered (a clock far ahead would make every later snapshot look stale).",
    )
    dead_letter_max_bytes: int = Field(
        default=256 * 1024,
        ge=1_024,
        le=16 * 1024 * 1024,
        description="Original bytes a dead letter keeps of a key or value; longer input is "
        "cut (its size and SHA-256 are kept). The default fits Kafka's 1 MB message size.",
    )
    release_check_interval_ms: int = Field(default=1_000, gt=0)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    api: ApiSettings = ApiSettings()
    approval: ApprovalSettings = ApprovalSettings()
    costs: CostSettings = CostSettings()
    execution: ExecutionSettings = ExecutionSettings()
    notifications: NotificationSettings = NotificationSettings()
    pacing: PacingSettings = PacingSettings()
    slicing: SlicingSettings = SlicingSettings()
    portfolio_id: str = Field(default="default", min_length=1)
    planner: PlannerOptions = PlannerOptions()
    planners: PlannerChoiceSettings = PlannerChoiceSettings()
    policies: PolicySettings = PolicySettings()

    @model_validator(mode="after")
    def _chosen_planners_fit_the_mode(self) -> Settings:
        if self.planner.execution_mode != "shared_account":
            return self
        for i, rule in enumerate(self.planners.choice):
            if rule.planner != "proportional":
                raise ValueError(
                    f"planners.choice.{i}.planner: {rule.planner} plans per world; "
                    "planner.execution_mode shared_account cannot carry it out"
                )
        return self

    @model_validator(mode="after")
    def _approval_within_intents_life(self) -> Settings:
        ttl, life = self.approval.ttl_ms, self.planner.intent_ttl_ms
        if ttl is not None and ttl > life:
            raise ValueError(
                f"approval.ttl_ms: {ttl} is longer than planner.intent_ttl_ms ({life}): a "
                "plan approved that late would publish intents that have expired; raise "
                "planner.intent_ttl_ms or lower approval.ttl_ms"
            )
        return self

    @model_validator(mode="after")
    def _policies_fit_the_planner(self) -> Settings:
        if self.planner.execution_mode != "shared_account" or not self.policies.enabled:
            return self
        for i, rule in enumerate(self.policies.rules):
            if rule.target.kind != "allocation":
                raise ValueError(
                    f"policies.rules.{i}.target: {rule.target.kind} targets are planned per "
                    "world as weights; "
                    "planner.execution_mode shared_account cannot carry them out"
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        files = [p for p in (DEFAULT_CONFIG,) if p.is_file()]
        extra = _config_file.get() or os.environ.get("REBALANCER_CONFIG_FILE")
        if extra:
            files.append(Path(extra))
        # Later files win over earlier ones; pydantic-settings gives the first source priority.
        tomls = [TomlConfigSettingsSource(settings_cls, toml_file=f) for f in reversed(files)]
        return (init_settings, env_settings, *tomls)


_config_file: ContextVar[str | None] = ContextVar("config_file", default=None)


def load_settings(config_file: str | Path | None = None) -> Settings:
    """Load settings, with ``config_file`` (if given) in place of ``REBALANCER_CONFIG_FILE``.

    Raises ``InputError`` naming the offending key on bad configuration.
    """
    if config_file is not None and not Path(config_file).is_file():
        raise InputError(f"config: file {str(config_file)!r} does not exist")
    extra = os.environ.get("REBALANCER_CONFIG_FILE")
    if config_file is None and extra and not Path(extra).is_file():
        raise InputError(f"REBALANCER_CONFIG_FILE: file {extra!r} does not exist")
    token = _config_file.set(None if config_file is None else str(config_file))
    try:
        return Settings()
    except ValidationError as exc:
        raise InputError("config: " + describe(exc)) from None
    except ValueError as exc:  # malformed TOML or environment value
        raise InputError(f"config: {exc}") from None
    finally:
        _config_file.reset(token)
