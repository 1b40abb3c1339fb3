"""What the analyst's notebooks (notebooks/, docs/notebooks.md) read, as DataFrames.

Every number comes through the project's own readers: the warehouse through
`features.asof` and `features` (point in time, pseudonymous), the ingest reports in
`<home>/reports/`, the alert store through `serving.store`, models and runs through
`doudi.registry` (the one MLflow client; the workspace binding is checked). Nothing here
opens the vault or the quarantine: the notebooks never see a raw identifier.

Parameters come from the environment, so a test can run the notebooks on a small
workspace: `DOUDI_HOME` (and the rest of `doudi.settings.Settings`) and
`DOUDI_NOTEBOOK_AS_OF` (`YYYY-MM`; default the latest delivered month).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from doudi import registry
from doudi.contract import RISK_TYPES
from doudi.errors import UserError
from doudi.months import Month
from doudi.settings import Settings
from doudi.warehouse import data_files, latest_delivered_month
from features.asof import counties, event_dates, load_rows, months_of
from features.divisions import division_names
from features.registry import BY_NAME, GROUP_COLUMNS, HARDSHIP_RISK_TYPE

if TYPE_CHECKING:
    from doudi.model_artifact import ModelArtifact

AS_OF_VARIABLE = "DOUDI_NOTEBOOK_AS_OF"
ALERT_VARIABLE = "DOUDI_NOTEBOOK_ALERT"  # the alert the explanations notebook opens
# The roster feeds change state rather than report events: their dates say nothing of
# how late a delivery is.
ROSTER_FEEDS = ("households", "persons")
INGEST_REPORTS = "ingest-*.json"


# -- parameters ---------------------------------------------------------------------------
@dataclass(frozen=True)
class NotebookContext:
    """The workspace a notebook reads and the month it looks at."""

    settings: Settings
    as_of: Month

    @property
    def warehouse(self) -> Path:
        return self.settings.warehouse_dir


def notebook_context(settings: Settings | None = None, as_of: str | None = None
                     ) -> NotebookContext:
    """Settings (default: from the environment) and the month `as_of` (`YYYY-MM`; None:
    `DOUDI_NOTEBOOK_AS_OF`; empty: the latest delivered month). A month after the last
    delivery is refused."""
    settings = settings or Settings()
    latest = latest_delivered_month(settings.warehouse_dir)
    if latest is None:
        raise UserError(f"no delivered month in {settings.warehouse_dir}: point DOUDI_HOME at "
                        "a workspace after `doudi monthly`")
    text = (os.environ.get(AS_OF_VARIABLE, "") if as_of is None else as_of).strip()
    month = Month.parse(text, what=AS_OF_VARIABLE) if text else latest
    if month > latest:
        raise UserError(f"{AS_OF_VARIABLE} {month} is after the latest delivered month {latest}")
    return NotebookContext(settings, month)


# -- names ------------------------------------------------------------------------------
def feature_label(name: str) -> str:
    """A feature's Chinese label (the registry's `label_zh`)."""
    return BY_NAME[name].label_zh if name in BY_NAME else name


def group_label(group: str) -> str:
    """A reason group's Chinese name: the label of its first feature in registry order."""
    return next((s.label_zh for s in BY_NAME.values() if s.group == group), group)


def risk_type_label(code: str) -> str:
    """A contract risk type's Chinese name (因病, 缺劳动力, ...)."""
    return RISK_TYPES.get(code, code)


def hardship_of_group(group: str) -> str:
    """The contract risk type (Chinese) a reason group speaks to; 背景 for context."""
    spec = next((s for s in BY_NAME.values() if s.group == group), None)
    risk_type = None if spec is None else HARDSHIP_RISK_TYPE[spec.hardship]
    return "背景（村/县）" if risk_type is None else risk_type_label(risk_type)


def county_labels(ctx: NotebookContext) -> dict[str, str]:
    """County code -> "name (code)" as of the month (the code alone without a name)."""
    names = division_names(ctx.warehouse, ctx.as_of)
    return {c: f"{names[c]}（{c}）" if c in names else c for c in counties(ctx.warehouse)}


def attribute_labels() -> dict[str, str]:
    """Fairness attribute -> Chinese label (the registry's group columns, and the county)."""
    return {"county_code": "县", **{g.name: g.label_zh for g in GROUP_COLUMNS}}


# -- the data notebook ----------------------------------------------------------------------
def deliveries(ctx: NotebookContext) -> pd.DataFrame:
    """Rows in the warehouse per feed, county and reported month up to the month:
    feed, county_code, reported_month (`YYYY-MM`), rows (Parquet metadata only)."""
    import pyarrow.parquet as pq

    from doudi.contract import FEED_NAMES

    records = []
    upto = str(ctx.as_of)
    for feed in FEED_NAMES:
        for county in counties(ctx.warehouse):
            for file in data_files(ctx.warehouse, feed, county):
                if not file.meets("", upto):
                    continue
                if not file.compacted:  # one month: the footer's row count
                    records.append((feed, county, file.first,
                                    pq.ParquetFile(file.path).metadata.num_rows))
                    continue
                # a year file holds several months (maybe some after the month): count them
                months = pq.read_table(file.path, columns=["reported_month"])["reported_month"]
                counts = months.value_counts().to_pylist()
                records += [(feed, county, c["values"], c["counts"]) for c in counts
                            if c["values"] <= upto]
    frame = pd.DataFrame(records, columns=["feed", "county_code", "reported_month", "rows"])
    return frame.groupby(["feed", "county_code", "reported_month"], as_index=False).agg(
        rows=("rows", "sum"))


def undelivered(ctx: NotebookContext, delivered: pd.DataFrame) -> pd.DataFrame:
    """County-months with no rows of a feed expected every month (`Settings.feed_cadence`),
    between the feed's first delivered month and the month: feed, county_code, month."""
    months = [str(m) for m in Month.parse(delivered["reported_month"].min(), what="partition")
              .through(ctx.as_of)] if len(delivered) else []
    rows = []
    for feed, cadence in ctx.settings.feed_cadence.items():
        if cadence != "monthly":
            continue
        got = delivered[delivered["feed"] == feed]
        first = got["reported_month"].min() if len(got) else None
        have = set(zip(got["county_code"], got["reported_month"], strict=True))
        rows += [(feed, county, month) for county in counties(ctx.warehouse) for month in months
                 if first is not None and month >= first and (county, month) not in have]
    return pd.DataFrame(rows, columns=["feed", "county_code", "month"])


def report_delays(ctx: NotebookContext, feeds: Sequence[str] | None = None) -> pd.DataFrame:
    """How long after its event each row was reported: per feed, county and reported month,
    rows, the feed's usual delay (median months from event to report, whole history)
    and `late` (rows reported later than that). Feeds: those expected monthly, roster
    feeds left out (their dates are states, not events)."""
    feeds = feeds or [f for f, c in ctx.settings.feed_cadence.items()
                      if c == "monthly" and f not in ROSTER_FEEDS]
    parts = []
    for feed in feeds:
        for county in counties(ctx.warehouse):
            rows = load_rows(ctx.warehouse, feed, county, ctx.as_of.end, sort=False)
            events = event_dates(feed, rows)
            if events is None or not len(rows):
                continue
            reported = rows["reported_date"].to_numpy().astype("datetime64[D]")
            parts.append(pd.DataFrame({
                "feed": feed, "county_code": county,
                "reported_month": pd.PeriodIndex(reported, freq="M").astype(str),
                "delay_months": months_of(reported) - months_of(events)}))
    if not parts:
        return pd.DataFrame(columns=["feed", "county_code", "reported_month", "rows",
                                     "usual_delay", "late"])
    every = pd.concat(parts, ignore_index=True)
    every["usual_delay"] = every.groupby("feed")["delay_months"].transform("median")
    every["late"] = every["delay_months"] > every["usual_delay"]
    return every.groupby(["feed", "county_code", "reported_month"], as_index=False).agg(
        rows=("late", "size"), usual_delay=("usual_delay", "first"), late=("late", "sum"))


def ingest_runs(ctx: NotebookContext) -> pd.DataFrame:
    """Per ingest run and feed (the JSON reports in `<home>/reports/`): started_at, rows
    read, accepted, quarantined, quarantine_rate and the rules that quarantined rows.
    The quarantine itself (original values) is never opened."""
    records = []
    for path in sorted(ctx.settings.reports_dir.glob(INGEST_REPORTS)):
        report = json.loads(path.read_text(encoding="utf-8"))
        if report.get("dry_run"):
            continue
        for feed, counts in report.get("feeds", {}).items():
            read = int(counts.get("rows", 0))
            records.append({
                "run_id": report.get("run_id"), "started_at": report.get("started_at"),
                "feed": feed, "rows": read, "accepted": int(counts.get("accepted", 0)),
                "quarantined": int(counts.get("quarantined", 0)),
                "quarantine_rate": counts.get("quarantined", 0) / read if read else np.nan,
                "rules": counts.get("violations", {})})
    return pd.DataFrame.from_records(records, columns=[
        "run_id", "started_at", "feed", "rows", "accepted", "quarantined", "quarantine_rate",
        "rules"])


def feature_coverage(ctx: NotebookContext, features: pd.DataFrame) -> pd.DataFrame:
    """Share of roster households with a known value (not NaN) per feature and county:
    feature, label_zh, feed, county_code, coverage. `features`: `build_features`' frame."""
    names = [n for n in BY_NAME if n in features.columns]
    known = features[names].notna().groupby(features["county_code"]).mean()
    long = known.reset_index().melt(id_vars="county_code", var_name="feature",
                                    value_name="coverage")
    long["label_zh"] = long["feature"].map(feature_label)
    long["feed"] = long["feature"].map(lambda n: BY_NAME[n].feed)
    return long[["feature", "label_zh", "feed", "county_code", "coverage"]]


# -- the model notebook -----------------------------------------------------------------------
@dataclass(frozen=True)
class ChampionRun:
    """The champion's registry version and the MLflow run that trained it."""

    model_name: str
    version: str
    run_id: str
    as_of: str
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    tables: dict[str, pd.DataFrame] = field(repr=False)
    texts: dict[str, str] = field(repr=False)

    @property
    def capacity_pct(self) -> float:
        return float(self.params.get("k_pct", "nan"))


RUN_TABLES = ("fold_metrics", "comparison", "calibration_curve", "fairness",
              "feature_importance", "type_metrics")


def champion_run(settings: Settings) -> ChampionRun:
    """The champion's run: its metrics, params, version tags and logged tables
    (`tables/*.csv`, the model card, the fairness warnings)."""
    client = registry.client(settings.tracking_uri())
    version = registry.champion(client, registry.workspace(settings))
    if version is None or not version.run_id:
        raise UserError("this workspace has no champion yet: run `doudi monthly` first")
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in cells
    run = client.get_run(version.run_id)
    # an artifact an older run did not log is left out
    missing_ok = functools.partial(contextlib.suppress, OSError, MlflowException)
    tables: dict[str, pd.DataFrame] = {}
    texts: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="doudi-notebook-") as tmp:
        with missing_ok():  # one download for the folder: each call opens the store anew
            folder = Path(client.download_artifacts(version.run_id, "tables", tmp))
            tables = {name: pd.read_csv(folder / f"{name}.csv", dtype={"group": str})
                      for name in RUN_TABLES if (folder / f"{name}.csv").is_file()}
            warnings = folder / "fairness_warnings.json"
            if warnings.is_file():
                texts["fairness_warnings"] = warnings.read_text(encoding="utf-8")
        with missing_ok():
            card = client.download_artifacts(version.run_id, "model_card.md", tmp)
            texts["model_card"] = Path(card).read_text(encoding="utf-8")
    return ChampionRun(version.name, str(version.version), version.run_id,
                       str(version.tags.get("as_of", "")), dict(run.data.metrics),
                       dict(run.data.params), dict(version.tags), tables, texts)


def fold_frame(run: ChampionRun) -> pd.DataFrame:
    """Temporal-CV metrics by fold and scorer, the out-of-time test block marked."""
    folds = run.tables.get("fold_metrics", pd.DataFrame())
    return folds.rename(columns={"is_test": "test_block"})


def lead_time(run: ChampionRun) -> dict[str, float]:
    """The run's lead-time evidence (`lead_*` metrics): households identified in the test
    block, how many the model flagged before, the share and the months ahead."""
    return {k.removeprefix("lead_"): v for k, v in run.metrics.items() if k.startswith("lead_")}


def fairness_frame(run: ChampionRun, ctx: NotebookContext) -> pd.DataFrame:
    """The run's fairness table with Chinese names: attribute_zh, group_zh (county names,
    是/否/未记录 for flags)."""
    table = run.tables.get("fairness", pd.DataFrame()).copy()
    if table.empty:
        return table
    counties_zh = county_labels(ctx)
    flags = {"1.0": "是", "1": "是", "0.0": "否", "0": "否", "missing": "未记录"}
    table["group"] = table["group"].astype(str)
    table["attribute_zh"] = table["attribute"].map(attribute_labels()).fillna(table["attribute"])
    table["group_zh"] = [counties_zh.get(g, g) if a == "county_code" else flags.get(g, g)
                         for a, g in zip(table["attribute"], table["group"], strict=True)]
    return table


def verdict_precision(settings: Settings) -> pd.DataFrame:
    """Caseworkers' verdicts per alert month: visited, confirmed, confirmed share (the
    precision the field measures; only visited alerts have a verdict)."""
    from serving.store import open_store, verdict_labels

    with open_store(settings=settings) as store:
        verdicts = verdict_labels(store)
    if verdicts.empty:
        return pd.DataFrame(columns=["month", "visited", "confirmed", "confirmed_share"])
    verdicts["month"] = verdicts["as_of"].dt.strftime("%Y-%m")
    out = verdicts.groupby("month").agg(visited=("verdict", "size"),
                                        confirmed=("verdict", lambda v: int((v == "confirmed")
                                                                            .sum())))
    out["confirmed_share"] = out["confirmed"] / out["visited"]
    return out.reset_index()


# -- the explanations notebook ---------------------------------------------------------------
@dataclass(frozen=True)
class Version:
    """One registered version of this workspace's model, loaded (binding checked)."""

    label: str  # <name>/<version>
    number: int
    artifact: ModelArtifact


def champion_and_previous(settings: Settings) -> tuple[Version, Version | None]:
    """The champion and the newest version registered before it (None: it is the first)."""
    client = registry.client(settings.tracking_uri())
    ws = registry.workspace(settings)
    champion = registry.champion(client, ws)
    if champion is None:
        raise UserError("this workspace has no champion yet: run `doudi monthly` first")
    earlier = [v for v in registry.known_versions(client, ws.model_name)
               if int(v.version) < int(champion.version)]
    return (_load(settings, champion.name, int(champion.version)),
            _load(settings, earlier[-1].name, int(earlier[-1].version)) if earlier else None)


def _load(settings: Settings, name: str, number: int) -> Version:
    artifact, label = registry.load_model(registry.ModelRef(name, version=str(number)).uri,
                                          settings)
    return Version(label or f"{name}/{number}", number, artifact)


def shap_values(artifact: ModelArtifact, table: pd.DataFrame, *, sample: int | None = None,
                seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """TreeSHAP (the artifact's `contributions`, log-odds) for the rows of a scoring table,
    or a seeded sample of them: (contributions, encoded values, base values), both frames
    indexed like `table` with the model's feature names as columns."""
    rows = table
    if sample is not None and len(table) > sample:
        rows = table.sample(sample, random_state=seed)
    values = artifact.encode(rows)
    contrib = artifact.contributions(values)
    names = artifact.feature_names
    return (pd.DataFrame(contrib[:, :-1], index=rows.index, columns=names),
            pd.DataFrame(values, index=rows.index, columns=names), contrib[:, -1])


def mean_abs_shap(contributions: pd.DataFrame) -> pd.Series:
    """Mean |SHAP| per feature, largest first."""
    return contributions.abs().mean().sort_values(ascending=False)


@dataclass(frozen=True)
class ExplanationShift:
    """How the global explanation moved between two versions on the same households."""

    spearman: float  # rank correlation of mean |SHAP| over the features both use
    features: int
    table: pd.DataFrame  # feature, label_zh, champion, previous, rank_champion, rank_previous


def explanation_shift(champion: pd.Series, previous: pd.Series) -> ExplanationShift:
    """Spearman rank correlation of two versions' mean |SHAP| per feature (features both
    models use), with the table behind it, biggest movers in rank first."""
    common = champion.index.intersection(previous.index)
    if len(common) < 2:
        raise UserError("the two versions share fewer than 2 features: nothing to compare")
    both = pd.DataFrame({"champion": champion[common], "previous": previous[common]})
    both["rank_champion"] = both["champion"].rank(ascending=False)
    both["rank_previous"] = both["previous"].rank(ascending=False)
    rho = float(both["rank_champion"].corr(both["rank_previous"]))
    both["label_zh"] = [feature_label(n) for n in both.index]
    moved = (both["rank_champion"] - both["rank_previous"]).abs()
    table = both.assign(moved=moved).sort_values(["moved", "rank_champion"],
                                                 ascending=[False, True])
    return ExplanationShift(rho, len(common), table.rename_axis("feature").reset_index())


def month_alerts(ctx: NotebookContext) -> pd.DataFrame:
    """The month's alerts from the alert store (pseudonymous keys), highest risk first."""
    from serving.store import list_alerts, open_store

    with open_store(settings=ctx.settings) as store:
        alerts = list_alerts(store)
    month = alerts[pd.to_datetime(alerts["as_of"]).dt.strftime("%Y-%m") == str(ctx.as_of)]
    return month.sort_values(["risk", "alert_id"], ascending=[False, True],
                             na_position="last").reset_index(drop=True)


def alert_reasons(ctx: NotebookContext, alert_ids: Sequence[int]) -> pd.DataFrame:
    """The stored reasons of these alerts: alert_id, county_code, rank, group_key,
    group_zh, hardship_zh, text_zh, contribution (probability points)."""
    from serving.store import open_store

    records: list[dict[str, Any]] = []
    with open_store(settings=ctx.settings) as store:
        for alert_id in alert_ids:
            alert = store.get(int(alert_id))
            records += [{"alert_id": alert.id, "county_code": alert.county_code,
                         "rank": r.rank, "group_key": r.group_key,
                         "group_zh": group_label(r.group_key),
                         "hardship_zh": hardship_of_group(r.group_key), "text_zh": r.text_zh,
                         "contribution": r.contribution} for r in alert.reasons]
    return pd.DataFrame.from_records(records, columns=[
        "alert_id", "county_code", "rank", "group_key", "group_zh", "hardship_zh", "text_zh",
        "contribution"])


def chosen_alert(alerts: pd.DataFrame) -> pd.Series:
    """The alert `DOUDI_NOTEBOOK_ALERT` names (an alert id of the month), else the month's
    highest-risk model alert."""
    if alerts.empty:
        raise UserError("the month has no alerts to explain")
    text = os.environ.get(ALERT_VARIABLE, "").strip()
    if text:
        picked = alerts[alerts["alert_id"].astype(str) == text]
        if picked.empty:
            raise UserError(f"{ALERT_VARIABLE}={text}: no such alert in the month")
        return picked.iloc[0]
    modelled = alerts[alerts["source"] != "rules"]
    return (modelled if len(modelled) else alerts).iloc[0]


def type_mix(alerts: pd.DataFrame) -> pd.DataFrame:
    """Alerts' hardship types per county: county_code, type_zh, alerts (an alert with two
    types counts in both)."""
    pairs = [(c, risk_type_label(t)) for c, types in zip(alerts["county_code"],
                                                          alerts["risk_types"], strict=True)
             for t in str(types).split(";") if t]
    frame = pd.DataFrame(pairs, columns=["county_code", "type_zh"])
    return frame.value_counts().rename("alerts").reset_index()


_CLAUSE = re.compile(r"(?<=[，；。])|(?=[（〔])")


def wrap_chinese(text: str, width: int = 30) -> str:
    """Lines of at most `width` characters, broken after a clause (，；。) or before a
    bracket (（〔) where possible: Chinese has no spaces for `textwrap` to break at, and a
    break inside "21,816 元" misreads the number."""
    lines: list[str] = []
    for clause in (c for c in _CLAUSE.split(text) if c):
        if lines and len(lines[-1]) + len(clause) <= width:
            lines[-1] += clause
        else:
            lines += [clause[i:i + width] for i in range(0, len(clause), width)]
    return "\n".join(lines)
