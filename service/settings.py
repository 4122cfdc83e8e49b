"""The one settings model: defaults, then a YAML file, then ``TERRITORY_*`` environment variables.

Secrets (``SecretStr`` fields) are read only from the environment; a config file that holds one is
refused. Every problem is reported as a :class:`ConfigError` whose one-line message names the file or
the environment variable, the key, and what is wrong. The connectors' sections (``salesforce``,
``hubspot``) are declared beside their connectors and composed here; their base is
:mod:`connectors.settings`, which also spells the environment variables.
"""

from __future__ import annotations

import contextvars
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import platformdirs
import yaml
from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from connectors.hubspot.settings import HubSpotSettings
from connectors.salesforce.settings import SalesforceSettings
from connectors.settings import ENV_NESTED, ENV_PREFIX, Section, env_name
from connectors.settings import blank_is_unset as _blank_is_unset
from connectors.settings import is_secret as _is_secret
from connectors.sync import DeleteGuard
from monitor.catalog import METRICS
from service.errors import ConfigError
from store.db import CONNECT_TIMEOUT_SECONDS, STATEMENT_TIMEOUT_SECONDS

if typing.TYPE_CHECKING:
    from monitor.drift import Rule as DriftRule

CONFIG_ENV = "TERRITORY_CONFIG"


class DatabaseSettings(Section):
    """Connection pool of the daemon's database (the URL itself is the secret ``database_url``)."""

    pool_size: int = Field(5, ge=1, le=100, description="connections kept open per process")
    connect_timeout_seconds: int = Field(
        CONNECT_TIMEOUT_SECONDS, ge=1, le=300, description="give up connecting after this long"
    )
    statement_timeout_seconds: int = Field(
        STATEMENT_TIMEOUT_SECONDS,
        ge=0,
        le=86_400,
        description="cancel any statement after this long (0: never)",
    )


class LoggingSettings(Section):
    """How the daemon logs: JSON lines for machines, text for a terminal."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class DemoSettings(Section):
    """The generated org that ``territory demo`` loads on the embedded default."""

    accounts: int = Field(5000, ge=1, le=10_000_000)
    reps: int = Field(40, ge=1, le=100_000)
    seed: int = Field(7, ge=0)


class ServerSettings(Section):
    """Where ``territory serve`` listens (in a container: host 0.0.0.0)."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    max_body_bytes: int = Field(
        1_000_000, ge=1024, le=100_000_000, description="larger request bodies are refused (413)"
    )
    body_timeout_seconds: float = Field(30.0, gt=0, le=600, description="a body slower than this gets a 408")
    header_timeout_seconds: float = Field(
        10.0, gt=0, le=600, description="a client slower than this with its headers is disconnected"
    )
    metrics_cache_seconds: float = Field(
        1.0, ge=0, le=60, description="concurrent scrapes within this long share one rendering"
    )


class SchedulerSettings(Section):
    """The scheduled jobs of ``territory serve``, run only by the replica holding the leader lock."""

    enabled: bool = Field(True, description="false: serve HTTP only, never take the leader lock")
    sync_source: Literal["salesforce", "hubspot", "csv"] | None = Field(
        None, description="the CRM the scheduled and webhook syncs read; null: no sync jobs"
    )
    sync_path: Path | None = Field(None, description="the export folder when sync_source is csv")
    sync_enabled: bool = True
    sync_interval_minutes: float = Field(15, gt=0, description="incremental sync of every object")
    snapshot_debounce_seconds: float = Field(
        60, ge=0, description="a sync that changed rows triggers a health snapshot this much later"
    )
    monthly_snapshot_enabled: bool = True
    monthly_snapshot_cron: str = Field(
        "0 2 1 * *", description="crontab (UTC) of the monthly snapshot: 02:00 on the 1st"
    )
    webhook_poll_seconds: float = Field(
        2, gt=0, description="how often the leader drains webhook sync requests (their debounce)"
    )
    misfire_grace_seconds: int = Field(
        3600, ge=1, description="a run missed by up to this much (restart, takeover) still runs, once"
    )
    heartbeat_seconds: float = Field(5, gt=0, description="scheduler heartbeat and leader-lock check")
    heartbeat_max_age_seconds: float = Field(60, gt=0, description="older: /healthz fails")
    shutdown_grace_seconds: float = Field(
        25, gt=0, description="SIGTERM: time to finish the running job before handing it back"
    )


class ScenarioSettings(Section):
    """A scenario of the operator's, beside the built-in ones (docs/rebalancer.md, "Scenarios")."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="what --scenario calls it")
    bands: dict[str, float] = Field(default_factory=dict, description="metric: tolerance of its band")
    limits: dict[str, float] = Field(
        default_factory=lambda: {"utilization": 1.0}, description="metric: its maximum (a max rule)"
    )
    tier_ranges: dict[str, str] = Field(
        default_factory=dict, description='tier: "MIN:MAX" accounts a territory (MAX may be empty)'
    )
    max_moves_per_territory: int | None = Field(None, ge=0)
    max_moves: int | None = Field(None, ge=0)
    move_weight: Literal["none", "arr", "tenure"] = "none"
    secondary: Literal["none", "travel", "industry_fit", "strategic_spread"] = "none"
    neighbours: list[str] = Field(default_factory=list, description='"REGION:REGION" pairs that share')
    tenure_lock_months: int = Field(6, ge=0)
    deal_lock_probability: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _a_scenario(self) -> ScenarioSettings:
        self.scenario()  # a metric the rebalancer cannot balance, a bad range: named here, at load
        return self

    def scenario(self) -> Any:
        """The ``rebalancer.problem.Scenario`` these settings describe (ValueError naming what is wrong)."""
        from rebalancer.problem import Band, Limit, MoveWeight, Scenario, Secondary, TierRange

        ranges = []
        for tier, span in self.tier_ranges.items():
            low, sep, high = span.partition(":")
            if not sep or not low.strip().isdigit() or (high.strip() and not high.strip().isdigit()):
                raise ValueError(f"tier_ranges.{tier}: expected MIN:MAX (MAX may be empty), got {span!r}")
            ranges.append(TierRange(tier, int(low), int(high) if high.strip() else None))
        pairs = []
        for pair in self.neighbours:
            a, sep, b = pair.partition(":")
            if not sep or not a.strip() or not b.strip():
                raise ValueError(f"neighbours: expected REGION:REGION, got {pair!r}")
            pairs.append((a.strip(), b.strip()))
        return Scenario(
            self.name,
            tuple(Band(m, t) for m, t in self.bands.items()),
            tuple(Limit(m, v) for m, v in self.limits.items()),
            tier_ranges=tuple(ranges),
            max_moves_per_territory=self.max_moves_per_territory,
            max_moves=self.max_moves,
            move_weight=MoveWeight(self.move_weight),
            secondary=Secondary(self.secondary),
            neighbours=tuple(pairs),
            tenure_lock_months=self.tenure_lock_months,
            deal_lock_probability=self.deal_lock_probability,
        )


class RebalancerSettings(Section):
    """The daemon's own proposals (docs/rebalancer.md): after a snapshot whose drift rules fire."""

    auto_propose: bool = Field(True, description="propose after a snapshot with fired drift events")
    scenario: str = Field("revenue", description="the scenario the daemon (and the demo) proposes with")
    time_limit_seconds: float = Field(60, gt=0, le=3600, description="the solver's time limit")
    waves: int = Field(3, ge=1, le=12, description="waves of a proposal, 30 days apart")
    scenarios: list[ScenarioSettings] = Field(
        default_factory=list,
        description="the operator's scenarios, beside revenue, strategic, growth, geography",
    )

    @model_validator(mode="after")
    def _known_scenario(self) -> RebalancerSettings:
        names = [s.name for s in self.scenarios]
        if len(set(names)) != len(names):
            raise ValueError(f"scenarios: a name is used twice ({', '.join(sorted(names))})")
        if self.scenario == "revenue" and not names:
            return self  # the default: no need to load the rebalancer to check it
        from rebalancer.scenarios import SCENARIO_NAMES

        clash = sorted(set(names) & set(SCENARIO_NAMES))
        if clash:
            raise ValueError(f"scenarios: {', '.join(clash)} is a built-in scenario's name")
        if self.scenario not in (*SCENARIO_NAMES, *names):
            raise ValueError(
                f"scenario: {self.scenario!r} is neither built in ({', '.join(SCENARIO_NAMES)}) "
                "nor one of rebalancer.scenarios"
            )
        return self

    def all_scenarios(self, rules: Any) -> dict[str, Any]:
        """The built-in scenarios (their bands from the drift ``rules``) and the configured ones, by name."""
        from rebalancer.scenarios import builtin_scenarios

        return builtin_scenarios(rules) | {s.name: s.scenario() for s in self.scenarios}


class WritebackSettings(Section):
    """How approved moves are written to the CRM the scheduler syncs from (docs/approval.md)."""

    enabled: bool = Field(True, description="false: the daemon writes nothing; `territory apply` still can")
    opportunities: Literal["follow", "stay"] = Field(
        "follow", description="the old owner's open opportunities of a moved account follow it, or stay"
    )
    chunk_size: int = Field(200, ge=1, le=2000, description="moves per transaction and CRM round")
    max_attempts: int = Field(
        8, ge=1, le=100, description="claims of a proposal's job before moves still pending are failed"
    )
    poll_seconds: float = Field(
        60, gt=0, description="how often the leader looks for due write-back (after approvals, wave dates)"
    )


class WebhookSettings(Section):
    """Inbound CRM webhooks; the HubSpot client secret comes from the environment only."""

    hubspot_client_secret: SecretStr | None = Field(
        None, description="the HubSpot app's client secret; unset: /webhooks/hubspot answers 503"
    )
    public_url: str | None = Field(
        None, description="the URL HubSpot calls (signed as sent); unset: the request's own URL"
    )


class SlackSettings(Section):
    """Slack approvals; the tokens and the signing secret come from the environment only."""

    channel: str | None = Field(None, description="channel id proposals are posted to; unset: CLI only")
    approvers: list[str] = Field(default_factory=list, description="Slack user ids who may decide")
    approver_groups: list[str] = Field(
        default_factory=list, description="Slack user group ids whose members may decide"
    )
    expiry_days: int = Field(14, gt=0, description="a proposal not decided in this many days expires")
    bot_token: SecretStr | None = Field(None, description="xoxb- bot token (environment only)")
    signing_secret: SecretStr | None = Field(
        None, description="request signing secret; unset: POST /slack/actions answers 503"
    )
    app_token: SecretStr | None = Field(None, description="xapp- app-level token: Socket Mode when set")
    api_url: str = Field("https://slack.com/api/", description="the Slack Web API's base URL")


class TouchesSettings(Section):
    """Expected touches a quarter per account of each tier: the workload model (docs/metrics.md)."""

    strategic: float = Field(12, ge=0)
    growth: float = Field(6, ge=0)
    core: float = Field(2, ge=0)


class MetricsSettings(Section):
    """How the territory-health metrics are computed."""

    touches: TouchesSettings = Field(default_factory=TouchesSettings)
    max_territories: int | None = Field(
        None, ge=1, description="territories with per-territory Prometheus series; null: all of them"
    )

    def touches_per_tier(self) -> dict[str, float]:
        """Touches a quarter by tier name, as ``monitor.metrics.territory_metrics`` takes them."""
        return {k: float(v) for k, v in self.touches.model_dump().items()}


class RuleSettings(Section):
    """One drift rule: band (fraction around the org mean), max (a ceiling) or above_mean (a fraction)."""

    enabled: bool = True
    metric: str = Field(description="one of monitor.catalog.METRICS")
    kind: Literal["band", "max", "above_mean"]
    threshold: float = Field(ge=0)
    consecutive: int = Field(1, ge=1, description="snapshots in breach before the rule fires")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; one of {', '.join(METRICS)}")
        return value


class NamedRuleSettings(RuleSettings):
    """An additional drift rule, named by the operator."""

    name: str = Field(min_length=1)


class RulesSettings(Section):
    """The drift rules: the five defaults of the field's practice, plus any ``extra`` ones."""

    potential_band: RuleSettings = Field(
        default_factory=lambda: RuleSettings(metric="potential", kind="band", threshold=0.15)
    )
    arr_band: RuleSettings = Field(
        default_factory=lambda: RuleSettings(metric="arr", kind="band", threshold=0.20)
    )
    accounts_band: RuleSettings = Field(
        default_factory=lambda: RuleSettings(metric="accounts", kind="band", threshold=0.25)
    )
    utilization_max: RuleSettings = Field(
        default_factory=lambda: RuleSettings(metric="utilization", kind="max", threshold=1.0)
    )
    quota_outperformer: RuleSettings = Field(
        default_factory=lambda: RuleSettings(metric="quota_attainment", kind="above_mean", threshold=0.30)
    )
    extra: list[NamedRuleSettings] = Field(default_factory=list)

    def drift_rules(self) -> list[DriftRule]:
        """The enabled rules as ``monitor.drift.Rule`` values, the named ones first."""
        from monitor.drift import Rule, RuleKind  # pandas-heavy; only commands that measure need it

        named = [(name, getattr(self, name)) for name in type(self).model_fields if name != "extra"]
        named += [(rule.name, rule) for rule in self.extra]
        return [
            Rule(name, r.metric, RuleKind(r.kind), r.threshold, r.consecutive)
            for name, r in named
            if r.enabled
        ]


class SyncSettings(Section):
    """The CRM sync engine: how far back each incremental read starts, batch size, the rep roster."""

    lookback_seconds: int = Field(
        300, ge=0, le=86_400, description="re-read this much before the saved watermark (late commits)"
    )
    batch_size: int = Field(
        5000,
        ge=1,
        le=1_000_000,
        description="rows per batch (one transaction each); a first load into an empty table reads 50,000",
    )
    roster: Path | None = Field(
        None, description="CSV of capacity, home location, quota, region, team per owner id or email"
    )
    max_delete_share: float = Field(
        0.10, ge=0, le=1, description="a full export deleting more of an object's live rows is refused"
    )
    allow_mass_delete: bool = Field(False, description="let full exports delete past max_delete_share")

    def delete_guard(self, allow: bool = False) -> DeleteGuard:
        """The mass-delete guard of these settings; ``allow`` is the CLI's --allow-mass-delete."""
        return DeleteGuard(self.max_delete_share, self.allow_mass_delete or allow)


_config_file: contextvars.ContextVar[tuple[Path, dict[str, Any]] | None] = contextvars.ContextVar(
    "territory_config_file", default=None
)


class Settings(BaseSettings):
    """Everything the daemon can be told; build it with :func:`load_settings`, once, in ``main()``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED,
        extra="forbid",
        validate_default=True,
    )

    database_url: SecretStr | None = Field(
        None, description="PostgreSQL URL; unset means the embedded PostgreSQL in data_dir"
    )
    data_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("territory-monitor")),
        description="where the embedded PostgreSQL and generated files live",
    )
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    demo: DemoSettings = Field(default_factory=DemoSettings)
    hubspot: HubSpotSettings = Field(default_factory=HubSpotSettings)
    salesforce: SalesforceSettings = Field(default_factory=SalesforceSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    rebalancer: RebalancerSettings = Field(default_factory=RebalancerSettings)
    writeback: WritebackSettings = Field(default_factory=WritebackSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)

    @field_validator("*", mode="before")
    @classmethod
    def _blank_secret(cls, value: Any, info: ValidationInfo) -> Any:
        return _blank_is_unset(cls, value, info)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments win over the environment, which wins over the config file."""
        loaded = _config_file.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if loaded is not None:
            sources.append(_YamlSource(settings_cls, loaded[1]))
        return tuple(sources)


class _YamlSource(PydanticBaseSettingsSource):
    """The parsed config file as a settings source."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _secret_keys(data: Mapping[str, Any], model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted keys of ``data`` that are secret fields of ``model``."""
    found: list[str] = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            continue
        if _is_secret(field.annotation):
            found.append(prefix + key)
        elif (
            isinstance(field.annotation, type)
            and issubclass(field.annotation, BaseModel)
            and isinstance(value, Mapping)
        ):
            found += _secret_keys(value, field.annotation, f"{prefix}{key}.")
    return found


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a YAML config file into a mapping, refusing secrets and anything but a mapping."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raw_bytes = path.read_bytes()[: exc.start]
        line = raw_bytes.count(b"\n") + 1
        column = exc.start - (raw_bytes.rfind(b"\n") + 1) + 1
        raise ConfigError(
            f"{path}: line {line}, column {column}: not UTF-8 (byte 0x{exc.object[exc.start]:02x})"
        ) from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where} not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(data).__name__}")
    secrets = _secret_keys(data, Settings)
    if secrets:
        env = env_name(*secrets[0].split("."))
        raise ConfigError(
            f"{path}: {secrets[0]}: secrets are read only from the environment; remove it and set {env}"
        )
    return data


def _in_mapping(data: Mapping[str, Any], loc: tuple[str | int, ...]) -> bool:
    """Whether the dotted location ``loc`` was given in ``data``."""
    node: Any = data
    for part in loc:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _describe(error: Mapping[str, Any], path: Path | None, data: Mapping[str, Any]) -> str:
    """One line for one validation error: where it came from, the key, what is wrong."""
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc)
    if path is not None and _in_mapping(data, loc):
        origin = str(path)
    else:
        origin = "environment " + env_name(*(str(p) for p in loc))
    if error["type"] == "extra_forbidden":
        return f"{origin}: {key}: unknown key"
    given = error.get("input")
    shown = "" if isinstance(given, Mapping) else f" (got {given!r})"
    return f"{origin}: {key}: {error['msg']}{shown}"


# Variables with our prefix that are not settings: the config file's path, and the test suite's, the
# benchmarks' and the tool installer's own.
NOT_SETTINGS_ENV: tuple[str, ...] = (CONFIG_ENV,)
NOT_SETTINGS_ENV_PREFIXES: tuple[str, ...] = ("TERRITORY_TEST_", "TERRITORY_BENCH_", "TERRITORY_TOOLS_")


def _unknown_environment(environ: Mapping[str, str]) -> str | None:
    """The first ``TERRITORY_`` variable that names no top-level setting, as an error line."""
    fields = Settings.model_fields
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS_ENV:
            continue
        if name.startswith(NOT_SETTINGS_ENV_PREFIXES):
            continue
        key = name.removeprefix(ENV_PREFIX).split(ENV_NESTED, 1)[0].lower()
        if key not in fields:
            return f"environment {name}: {key}: unknown key"
    return None


def load_settings(config_path: Path | None = None) -> Settings:
    """Build the settings from ``config_path`` (or ``$TERRITORY_CONFIG``) and the environment."""
    unknown = _unknown_environment(os.environ)
    if unknown is not None:
        raise ConfigError(unknown)
    if config_path is None and os.environ.get(CONFIG_ENV):
        config_path = Path(os.environ[CONFIG_ENV])
    data = read_config_file(config_path) if config_path is not None else {}
    token = _config_file.set((config_path, data) if config_path is not None else None)
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise ConfigError(_describe(first, config_path, data) + suffix) from None
    finally:
        _config_file.reset(token)
