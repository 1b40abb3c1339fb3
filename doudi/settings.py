"""One settings object: environment (`DOUDI_*`), an optional TOML file, defaults.

Nothing is read at import; call `get_settings()` (cached) or build `Settings()`.
"""

from __future__ import annotations

import os
import tomllib
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The most reasons an alert may carry (`max_reasons`): the alert store keeps up to this many.
MAX_REASONS_LIMIT = 8

# 防止返贫监测范围 (yuan per person per year). Provinces publish theirs each year;
# these defaults follow the national guidance band and are overridable per year.
DEFAULT_MONITORING_LINES: dict[int, float] = {
    2020: 6000.0,
    2021: 6000.0,
    2022: 6600.0,
    2023: 7000.0,
    2024: 7300.0,
    2025: 7600.0,
    2026: 7900.0,
    2027: 8200.0,
}


GATE_FLOOR_METRICS = ("roc_auc", "pr_auc")


def check_floor_lifts(lifts: dict[str, float]) -> dict[str, float]:
    """A floor's margins: at least one of GATE_FLOOR_METRICS, nothing else (a floor with no
    metric would let any model through)."""
    unknown = sorted(set(lifts) - set(GATE_FLOOR_METRICS))
    if not lifts or unknown:
        raise ValueError(f"give margins for {' and/or '.join(GATE_FLOOR_METRICS)}"
                         + (f", not {', '.join(unknown)}" if unknown else ""))
    return {k: float(v) for k, v in lifts.items()}

# How often each feed is expected to bring new rows (`doudi monthly` warns only about a
# `monthly` feed that brought nothing for the month; `sparse` feeds are quiet by nature).
FEED_CADENCES = ("monthly", "sparse")
DEFAULT_FEED_CADENCE: dict[str, str] = {
    "households": "sparse", "persons": "monthly", "medical": "monthly",
    "employment": "monthly", "education": "sparse", "housing": "sparse",
    "disability": "sparse", "disasters": "sparse", "social_assistance": "monthly",
    "income_checks": "sparse", "agriculture": "sparse", "assets": "sparse",
    "divisions": "sparse", "monitoring_events": "monthly",
}


# The caseworker sheet's suggested first step per hardship type (`doudi.contract.RISK_TYPES`
# codes), following the layered, classified assistance: basic living -> 低保/特困, illness ->
# 医疗救助 and 大病保险, schooling -> 教育资助, housing -> 危房改造, work -> 就业帮扶/公益岗位,
# sudden hardship -> 临时救助. A province replaces any entry with its own wording.
DEFAULT_FIRST_STEPS: dict[str, str] = {
    "illness": "协助申请医疗救助，落实大病保险报销",
    "disability": "核实残疾人两项补贴，协助申请",
    "education": "协助申请教育资助",
    "disaster": "协助申请临时救助（受灾人员救助）",
    "accident": "协助申请临时救助",
    "unstable_employment": "就业帮扶，或安排公益岗位",
    "industry_failure": "产业帮扶，协助申请临时救助",
    "labor_shortage": "核实基本生活，协助申请低保/特困供养",
    "housing": "申请农村危房改造",
    "drinking_water": "落实农村供水保障",
    "other": "核实基本生活，协助申请低保/特困供养",
}


class _TomlSource(PydanticBaseSettingsSource):
    """Values from the file named by DOUDI_CONFIG (a `[doudi]` table or top level)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("DOUDI_CONFIG")
        if not path:
            return {}
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"DOUDI_CONFIG points at {p}, which is not a file")
        data = tomllib.loads(p.read_text(encoding="utf-8"))
        return dict(data.get("doudi", data))


class TierSettings(BaseModel):
    """分层: alert tiers by share of in-scope households (caseworker capacity) and risk."""

    red_top_pct: float = Field(1.0, gt=0, le=100, description="Top share of households: red.")
    orange_top_pct: float = Field(3.0, gt=0, le=100, description="Top share: orange (or red).")
    yellow_top_pct: float = Field(5.0, gt=0, le=100, description="Top share: yellow or above.")
    red_min_risk: float = Field(0.5, ge=0, le=1, description="Risk that is red whatever the rank.")
    min_alert_risk: float = Field(
        0.02, ge=0, le=1, description="No model alert below this risk, whatever the rank."
    )


class MonitorSettings(BaseModel):
    """`doudi monitor` (monitoring/, docs/monitoring.md): how much it reads, its bands and
    when it recommends retraining."""

    reference_months: int = Field(
        3, ge=1, le=24, description="The champion's latest training months used as the "
        "drift reference.")
    calibration_months: int = Field(
        3, ge=1, le=24, description="Latest months with final labels whose calibration by "
        "risk band is checked.")
    shap_rows: int = Field(
        2000, ge=100, description="Rows sampled (reference and now, each) for mean |SHAP|.")
    psi_moderate: float = Field(0.1, gt=0, description="PSI at or above this: moderate drift.")
    psi_major: float = Field(0.25, gt=0, description="PSI at or above this: major drift.")
    max_major_features: int = Field(
        3, ge=1, description="Retrain when this many features or more are in major drift.")
    band_ratio_min: float = Field(
        0.8, gt=0, description="Retrain when the top 5% band's observed / predicted rate on "
        "final labels is below this ...")
    band_ratio_max: float = Field(1.25, gt=0, description="... or above this.")
    precision_drop: float = Field(
        0.2, gt=0, lt=1, description="Retrain when this month's estimated precision at "
        "capacity is this share below that of the latest month with final labels.")
    after_monthly: bool = Field(
        True, description="`doudi monthly` runs the monitor after scoring. Off: schedule "
        "`doudi monitor` on its own (a very large roll, where it would lengthen the job).")


def _spark_value(value: Any) -> Any:
    """A Spark property as Spark reads it: TOML's true/4/0.5 become "true"/"4"/"0.5"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int | float) else value


class SparkSettings(BaseModel):
    """The `spark` engine (features/spark.py, docs/features.md "Engine"): where the
    SparkSession runs and any Spark properties passed to it."""

    master: str = Field(
        "local[2]", min_length=1, description="Spark master URL: local[N] on one machine, "
        "spark://host:7077, yarn, k8s://...; ignored under spark-submit (its --master).")
    conf: dict[str, Annotated[str, BeforeValidator(_spark_value)]] = Field(
        default_factory=dict, description="Spark properties for the session, e.g. "
        "{\"spark.executor.memory\": \"8g\"} (DOUDI_SPARK__CONF as JSON, or a "
        "[doudi.spark.conf] table); they win over doudi's defaults.")


class Settings(BaseSettings):
    """Everything configurable about doudi. Environment wins over the config file."""

    model_config = SettingsConfigDict(
        env_prefix="DOUDI_", env_nested_delimiter="__", extra="ignore"
    )

    home: Path = Field(Path("workspace"), description="Workspace root (DOUDI_HOME).")
    pseudonym_key_file: Path | None = Field(
        None, description="HMAC key for pseudonyms; default <home>/secrets/pseudonym.key."
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="Default: MLFLOW_TRACKING_URI, else SQLite under <project>/mlruns/."
    )
    mlruns_dir: Path = Field(PROJECT_ROOT / "mlruns", description="MLflow's local store.")
    database_url: str | None = Field(
        None, description="Alert store (SQLAlchemy URL); default SQLite in the workspace."
    )
    monitoring_lines: dict[int, float] = Field(
        default_factory=lambda: dict(DEFAULT_MONITORING_LINES),
        description="Annual monitoring line by year, yuan per person per year.",
    )
    horizon_months: int = Field(6, ge=1, le=24, description="Label horizon H.")
    label_allowance_months: int = Field(
        3, ge=0, le=12, description="Reporting allowance before a label is final."
    )
    training_negative_rate: float = Field(
        1.0, gt=0, le=1, description="Share of negative rows the training table keeps (every "
        "positive is kept; a kept negative carries `sample_weight` 1/rate, so probabilities, "
        "calibration and metrics still estimate the whole roll). 1: no sampling. Below 1 for "
        "provinces whose full table does not fit one machine (docs/training.md).")
    workers: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=1)
    engine: Literal["local", "spark"] = Field(
        "local", description="What runs the per-county feature tasks: `local` (a process "
        "pool of `workers`) or `spark` (a SparkSession, settings `spark`); same results.")
    spark: SparkSettings = Field(default_factory=SparkSettings)
    capacity_pct: float = Field(
        5.0, gt=0, le=100, description="Caseworker capacity: share of households visited (top k%)."
    )
    tiers: TierSettings = Field(default_factory=TierSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    # Visits per township (serving/capacity.py, docs/alerts-and-explanations.md "Capacity
    # per township"): model alerts are allocated within each township's capacity.
    township_capacity_file: Path | None = Field(
        None,
        description="CSV `township_code,capacity` (UTF-8 or GBK): model alerts (visits) per "
        "month per township. Townships not listed keep the default: their share of "
        "capacity_pct, proportional to their in-scope households.",
    )
    township_capacity: dict[str, int] = Field(
        default_factory=dict,
        description="Visits per township as a mapping {township_code: capacity}; wins over "
        "township_capacity_file for the townships it names.",
    )
    rule_capacity_pct: float = Field(
        2.0,
        ge=0,
        le=100,
        description="Rule-only alerts (a department trigger fired, the model did not alert): "
        "at most this share of households, strongest rules first.",
    )
    max_reasons: int = Field(4, ge=1, le=MAX_REASONS_LIMIT, description="Reasons per alert.")
    omission_days: int = Field(
        30, ge=1, description="Confirmed hardship with no matching help after this: omission."
    )
    retrain_every_months: int = Field(
        1, ge=1, description="`doudi monthly` retrains when the champion is this old or older."
    )
    compact_closed_years: bool = Field(
        True, description="`doudi monthly` compacts the warehouse after ingest: each closed "
        "year (its December delivered) becomes one file per feed x county (`doudi compact`, "
        "docs/warehouse.md \"Compaction\").")
    model_name: str | None = Field(
        None,
        description="Registered model name; default doudi-risk-<first 8 hex of the workspace "
        "fingerprint>, one per workspace (doudi/registry.py).",
    )
    api_model_uri: str | None = Field(
        None,
        description="Model the scoring API serves (registry URI or model folder); default "
        "this workspace's champion, models:/<model name>@champion.",
    )
    api_model_refresh_seconds: float = Field(
        300,
        ge=0,
        description="The API re-resolves its model URI at most this often; a new registry "
        "version (e.g. a new champion) is loaded and cached scores are dropped. 0: every call.",
    )
    api_max_households: int = Field(
        5000, ge=1, description="Most household keys (and list rows) one API request may ask for."
    )
    api_max_body_bytes: int = Field(
        1_048_576,
        ge=1024,
        description="Largest API request body; larger ones are refused (413) before being "
        "read (5,000 pseudonyms take about 130 kB).",
    )
    feed_cadence: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_FEED_CADENCE),
        description="Expected delivery cadence per feed, `monthly` or `sparse`; feeds not "
        "given keep their default (monthly: persons, medical, employment, social_assistance, "
        "monitoring_events).",
    )
    pending_alert_months: int = Field(
        3, ge=1, description="Rows waiting for their household or person (ingest's pending "
        "area) this many delivered months after their reported month are reported loudly.",
    )
    operator: str = Field(
        default_factory=lambda: os.environ.get("USER", "operator"),
        description="Who runs exports (recorded in the audit log).",
    )
    response_days: int = Field(
        15, ge=1, le=366, description="Days a township has to return its caseworker sheet: "
        "the sheet's 反馈截止日期 (respond-by date) is the export date plus this.",
    )
    first_steps: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_FIRST_STEPS),
        description="The caseworker sheet's suggested first step (建议措施) per hardship type "
        "(risk type code -> Chinese text); types not given keep their default.",
    )
    # The gate's floor (training/gate.py, docs/training.md "The gate"): no version
    # becomes champion, first or not, unless its out-of-time test block shows it beats the
    # departments' rules and the logistic baseline by these margins and is calibrated.
    gate_min_lift_over_rules: dict[str, float] = Field(
        default_factory=lambda: {"roc_auc": 0.03, "pr_auc": 0.01},
        description="Champion floor: test-block metric (roc_auc, pr_auc) minus the best "
        "departments' rule's must be at least this (absolute).",
    )
    gate_min_lift_over_logistic: dict[str, float] = Field(
        default_factory=lambda: {"roc_auc": -0.02, "pr_auc": -0.02},
        description="Champion floor: test-block metric minus the logistic baseline's must be "
        "at least this (negative: may trail it by at most that much, within sampling noise).",
    )
    gate_max_ece_excess: float = Field(
        0.01, ge=0, le=1,
        description="Champion floor: test-block ECE may exceed the ECE a perfectly "
        "calibrated model would show by chance on the same bins by at most this.",
    )
    gate_top_band_ratio_min: float = Field(
        0.5, gt=0, description="Champion floor: observed / predicted rate in the top "
        "capacity band (the alerted households) at least this.")
    gate_top_band_ratio_max: float = Field(
        2.0, gt=0, description="Champion floor: observed / predicted rate in the top "
        "capacity band at most this.")
    gate_min_test_positives: int = Field(
        20, ge=1, description="Champion floor: fewer positives in the test block are too "
        "little evidence to show anything; such a version stays challenger.")
    gate_min_z_over_chance: float = Field(
        2.0, ge=0, description="Champion floor: test-block ROC-AUC must exceed 0.5 by this "
        "many standard errors (Hanley-McNeil): on shuffled labels the rules are at chance "
        "too, so beating them proves nothing unless the model beats chance itself.")

    @field_validator("gate_min_lift_over_rules", "gate_min_lift_over_logistic")
    @classmethod
    def _floor_metrics(cls, v: dict[str, float]) -> dict[str, float]:
        return check_floor_lifts(v)

    @field_validator("feed_cadence")
    @classmethod
    def _cadence(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(DEFAULT_FEED_CADENCE))
        if unknown:
            raise ValueError(f"feed_cadence: unknown feed(s) {', '.join(unknown)}")
        wrong = sorted(f for f, c in v.items() if c not in FEED_CADENCES)
        if wrong:
            raise ValueError(f"feed_cadence: {', '.join(wrong)}: use monthly or sparse")
        return {**DEFAULT_FEED_CADENCE, **v}

    @field_validator("first_steps")
    @classmethod
    def _first_steps(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(DEFAULT_FIRST_STEPS))
        if unknown:
            raise ValueError(f"first_steps: unknown risk type(s) {', '.join(unknown)} "
                             f"(use {', '.join(DEFAULT_FIRST_STEPS)})")
        return {**DEFAULT_FIRST_STEPS, **{k: t.strip() for k, t in v.items()}}

    @field_validator("home", "mlruns_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))

    # -- derived locations -------------------------------------------------
    @property
    def key_file(self) -> Path:
        return (self.pseudonym_key_file or self.home / "secrets" / "pseudonym.key").resolve()

    @property
    def warehouse_dir(self) -> Path:
        return self.home / "warehouse"

    @property
    def vault_dir(self) -> Path:
        return self.home / "vault"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def predictions_dir(self) -> Path:
        """Every scored household's risk per month (serving/predictions.py)."""
        return self.home / "predictions"

    @property
    def cache_dir(self) -> Path:
        """Derived data that can be rebuilt from the warehouse and the registry."""
        return self.home / "cache"

    def tracking_uri(self) -> str:
        """An absolute tracking URI (MLflow's own default is relative to the cwd)."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        return f"sqlite:///{self.mlruns_dir / 'mlflow.db'}"

    def artifact_root(self) -> str:
        """Where new MLflow experiments keep artifacts: beside a SQLite tracking store,
        else `<mlruns_dir>/artifacts` (MLflow's own default is relative to the cwd)."""
        uri = self.tracking_uri()
        if uri.startswith("sqlite:///"):
            return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts").as_uri()
        return (self.mlruns_dir / "artifacts").as_uri()

    def monitoring_line(self, year: int) -> float:
        """The monitoring line for `year`; the nearest earlier year's when not listed."""
        known = sorted(y for y in self.monitoring_lines if y <= year)
        if not known:
            raise KeyError(f"no monitoring line configured for {year} or earlier")
        return self.monitoring_lines[known[-1]]


@cache
def get_settings() -> Settings:
    return Settings()
