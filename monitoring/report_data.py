"""What the monthly report shows, gathered once: the month's alerts, verdict returns, the
champion's MLflow run (metrics, tables, model card) and division names.

Only aggregates leave this module (counts per township, tier, type, reason group): no
household pseudonym reaches the report. MLflow is read through `doudi.registry`'s client.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import func, select

from doudi import registry
from doudi.errors import UserError
from doudi.months import Month
from doudi.settings import Settings
from features import divisions
from serving.store import open_store, township_status
from serving.store.models import Alert, AlertReason

# The champion run's artifacts the report reads (written by training.tracking).
FAIRNESS_TABLE = "tables/fairness.csv"
FAIRNESS_WARNINGS = "tables/fairness_warnings.json"
CALIBRATION_CURVE = "tables/calibration_curve.csv"
FOLD_METRICS = "tables/fold_metrics.csv"
MODEL_CARD = "model_card.md"
# Months of verdict returns shown, counting back from the report's month.
RETURN_MONTHS = 6


@dataclass(frozen=True)
class ChampionRun:
    """The champion's registry label, its run's metrics and the artifacts the report reads."""

    label: str
    run_id: str
    trained_as_of: str
    metrics: dict[str, float]
    fairness: pd.DataFrame | None
    fairness_warnings: list[str]
    calibration_curve: pd.DataFrame | None
    fold_metrics: pd.DataFrame | None
    model_card: str


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows except drift (`monitoring.monitor`)."""

    as_of: Month
    champion: ChampionRun
    # one row per alert-count group: township_code, tier, risk_type, source, alerts
    alert_counts: pd.DataFrame
    # one row per township and tier: alerts (each alert once)
    tier_alerts: pd.DataFrame
    alerts_total: int
    township_names: dict[str, str]
    # `serving.store.township_status` of the report's month (per township)
    returns: pd.DataFrame
    # per alert month (the last RETURN_MONTHS): month, sent, visited, confirmed, dismissed,
    # overdue
    returns_by_month: pd.DataFrame
    # per reason group: group_key, alerts, mean_points
    reasons: pd.DataFrame
    today: date = field(default_factory=date.today)

    def township_name(self, code: str) -> str:
        """The township's name as of the month with its county's ("榆中县 城关镇": township
        names repeat across counties), else its code."""
        town = self.township_names.get(code)
        if not town:
            return code
        county = self.township_names.get(code[:6], "")
        return f"{county} {town}" if county else town

    def township_labels(self, codes: list[str]) -> list[str]:
        """Names for a chart's axis, one per code: a name shared by two codes gets its code
        (an axis would merge them)."""
        names = [self.township_name(c) for c in codes]
        shared = {n for n, times in Counter(names).items() if times > 1}
        return [f"{n} ({c})" if n in shared else n for n, c in zip(names, codes, strict=True)]


def _read_csv(client: Any, run_id: str, path: str, folder: Path) -> pd.DataFrame | None:
    text = _read_text(client, run_id, path, folder)
    return None if text is None else pd.read_csv(io.StringIO(text))


def _read_text(client: Any, run_id: str, path: str, folder: Path) -> str | None:
    """An artifact of the run as text; None when the run has no such artifact."""
    from mlflow.exceptions import MlflowException

    # MLflow draws a progress bar per download; the report's few small files need none.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        local = client.download_artifacts(run_id, path, str(folder))
    except (MlflowException, OSError):
        return None
    return Path(local).read_text(encoding="utf-8")


def champion_run(settings: Settings) -> ChampionRun:
    """The workspace champion's run; a one-line UserError when there is no champion."""
    client = registry.client(settings.tracking_uri())
    ws = registry.workspace(settings)
    mv = registry.champion(client, ws)
    if mv is None or not mv.run_id:
        raise UserError(f"{ws.model_name} has no champion yet: train one first (doudi train)")
    run = client.get_run(mv.run_id)
    with tempfile.TemporaryDirectory(prefix="doudi-report-") as tmp:
        folder = Path(tmp)
        warnings_text = _read_text(client, mv.run_id, FAIRNESS_WARNINGS, folder)
        return ChampionRun(
            label=f"{mv.name}/{mv.version}",
            run_id=mv.run_id,
            trained_as_of=str(mv.tags.get("as_of") or run.data.tags.get("as_of", "")),
            metrics=dict(run.data.metrics),
            fairness=_read_csv(client, mv.run_id, FAIRNESS_TABLE, folder),
            fairness_warnings=[str(w) for w in json.loads(warnings_text or "[]")],
            calibration_curve=_read_csv(client, mv.run_id, CALIBRATION_CURVE, folder),
            fold_metrics=_read_csv(client, mv.run_id, FOLD_METRICS, folder),
            model_card=_read_text(client, mv.run_id, MODEL_CARD, folder) or "",
        )


def _in_month(column: Any, month: Month) -> Any:
    return (column >= month.start) & (column <= month.end)


def _alert_counts(session: Any, as_of: Month) -> pd.DataFrame:
    """Alerts of the month counted by township, tier, risk type and source (one alert with
    two types counts once under each type; no types: under "")."""
    rows = session.execute(
        select(Alert.township_code, Alert.tier, Alert.risk_types, Alert.source)
        .where(_in_month(Alert.as_of, as_of))
    )
    records = [
        (township, tier, kind, source)
        for township, tier, types, source in rows
        for kind in (types or [""])
    ]
    frame = pd.DataFrame(records, columns=["township_code", "tier", "risk_type", "source"])
    keys = list(frame.columns)
    return frame.groupby(keys, as_index=False).size().rename(columns={"size": "alerts"})


def _reasons(session: Any, as_of: Month) -> pd.DataFrame:
    """Per reason group: how many of the month's alerts show it and its mean size."""
    query = (
        select(AlertReason.group_key, func.count(func.distinct(AlertReason.alert_id)),
               func.avg(AlertReason.contribution))
        .join(Alert, Alert.id == AlertReason.alert_id)
        .where(_in_month(Alert.as_of, as_of))
        .group_by(AlertReason.group_key)
    )
    frame = pd.DataFrame(session.execute(query).all(),
                         columns=["group_key", "alerts", "mean_points"])
    return frame.sort_values(["alerts", "group_key"], ascending=[False, True],
                             ignore_index=True)


def _returns_by_month(store: Any, as_of: Month, today: date, response_days: int) -> pd.DataFrame:
    """The sheets' returns of the alerts of each of the last RETURN_MONTHS months."""
    rows = []
    for back in range(RETURN_MONTHS - 1, -1, -1):
        month = as_of + (-back)
        status = township_status(store, today=today, month=month, response_days=response_days)
        totals = status.drop(columns="township_code").sum()
        rows.append({"month": str(month), **{k: int(v) for k, v in totals.items()}})
    return pd.DataFrame(rows)


def gather(settings: Settings, as_of: Month, *, database_url: str | None = None,
           today: date | None = None,
           names: Callable[[Path, Month], dict[str, str]] | None = None) -> ReportData:
    """The report's data for `as_of`. One-line UserError without a champion or without
    alerts stored for the month (it was not scored: `doudi score` / `doudi monthly`)."""
    champion = champion_run(settings)
    today = today or date.today()
    with open_store(database_url, settings=settings) as store:
        with store.transaction() as session:
            counts = _alert_counts(session, as_of)
            reasons = _reasons(session, as_of)
            tiers = pd.DataFrame(session.execute(
                select(Alert.township_code, Alert.tier, func.count())
                .where(_in_month(Alert.as_of, as_of))
                .group_by(Alert.township_code, Alert.tier)).all(),
                columns=["township_code", "tier", "alerts"])
        if counts.empty:
            raise UserError(f"no alerts stored for {as_of}: score the month first "
                            f"(doudi monthly --as-of {as_of} or doudi score --as-of {as_of})")
        returns = township_status(store, today=today, month=as_of,
                                  response_days=settings.response_days)
        by_month = _returns_by_month(store, as_of, today, settings.response_days)
    read_names = names or divisions.division_names
    return ReportData(
        as_of=as_of, champion=champion, alert_counts=counts, tier_alerts=tiers,
        alerts_total=int(tiers["alerts"].sum()),
        township_names=read_names(settings.warehouse_dir, as_of), returns=returns,
        returns_by_month=by_month, reasons=reasons, today=today,
    )
