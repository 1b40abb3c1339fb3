"""`doudi report --as-of YYYY-MM`: the month in one self-contained HTML page for leadership
and analysts (docs/report.md).

Seven sections: alerts by tier, type and township; verdict returns and confirmation rates;
the champion's metrics and calibration; fairness; drift (`monitoring.monitor`); the
month's top reasons; the model card. Charts are plotly divs sharing one inlined plotly.js,
so the file opens anywhere without a network. Every value shown is escaped (a division
name is text, never markup) and only aggregates are shown: no household pseudonym.
Written to <home>/reports/report-<YYYY-MM>.html (0600, atomic) and logged to MLflow.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from doudi.errors import UserError
from doudi.months import Month
from doudi.safe_text import html_text
from doudi.settings import Settings
from monitoring.monitor import MonitorReport
from monitoring.report_data import ReportData, gather
from monitoring.report_drift import calibration_bands_html, drift_section
from monitoring.report_html import number, page
from monitoring.report_sections import (
    TIER_ZH,
    Section,
    alert_section,
    fairness_section,
    model_card_section,
    model_section,
    reasons_section,
    returns_section,
)

# The report's artifact folder in its MLflow run.
ARTIFACT_PATH = "report"


@dataclass(frozen=True)
class WrittenReport:
    path: Path
    run_id: str
    retrain: bool | None  # the monitor's recommendation; None when it could not run


def report_path(settings: Settings, as_of: Month) -> Path:
    """<home>/reports/report-<YYYY-MM>.html."""
    return settings.reports_dir / f"report-{as_of}.html"


def sections(data: ReportData, monitor: MonitorReport | None, failure: str = "") -> list[Section]:
    """The seven sections, in reading order."""
    return [
        alert_section(data),
        returns_section(data),
        model_section(data, calibration_bands_html(monitor)),
        fairness_section(data),
        drift_section(monitor, failure, data.township_labels),
        reasons_section(data),
        model_card_section(data),
    ]


def _summary(data: ReportData, monitor: MonitorReport | None) -> str:
    """Headline figures and the table of contents."""
    tiers = data.tier_alerts.groupby("tier")["alerts"].sum()
    month = data.returns_by_month.iloc[-1]
    kpis = [("预警总数 alerts", number(data.alerts_total), False),
            *[(f"{TIER_ZH.get(t, t)} {t}", number(tiers.get(t, 0)), False)
              for t in ("red", "orange", "yellow")],
            ("本月已核查 visited", number(month["visited"]), False)]
    if monitor is not None:
        retrain = monitor.recommendation.retrain
        kpis.append(("建议 recommendation", "重新训练 retrain" if retrain else "无需重训 keep",
                     retrain))
    boxes = "".join(
        f'<div class="kpi{" alarm" if alarm else ""}"><span>{html_text(name)}</span>'
        f"<b>{html_text(value)}</b></div>" for name, value, alarm in kpis)
    return f'<div class="kpis">{boxes}</div>'


def render(data: ReportData, monitor: MonitorReport | None, failure: str = "") -> str:
    """The whole HTML document for `data` and the month's monitor report."""
    parts = sections(data, monitor, failure)
    toc = "".join(f'<li><a href="#{s.anchor}">{html_text(s.zh)}</a> '
                  f'<span class="en">{html_text(s.en)}</span></li>' for s in parts)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return page(
        f"低收入人口动态监测月报 {data.as_of}",
        f"Monthly risk monitoring report · 模型 model {data.champion.label} · 生成于 "
        f"generated {generated} · 仅含汇总数字，不含个人信息 aggregates only, no personal data",
        [_summary(data, monitor), f"<nav><ol>{toc}</ol></nav>", *(s.html() for s in parts)],
    )


def stored_monitor(settings: Settings, as_of: Month, model_version: str) -> MonitorReport | None:
    """The month's monitor report as `doudi monitor` / `doudi monthly` wrote it
    (reports/monitor-<YYYY-MM>.json), when it exists and judged `model_version`; else None."""
    from monitoring.monitor import report_paths

    path = report_paths(settings, as_of)[0]
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    if saved.get("as_of") != str(as_of) or saved.get("model_version") != model_version:
        return None
    return MonitorReport.from_json(saved)


def _monitor(settings: Settings, as_of: Month,
             model_version: str) -> tuple[MonitorReport | None, str]:
    """The month's monitor report (the stored one, else computed now), or None and why
    (the report still shows the rest)."""
    from monitoring.monitor import run_monitor

    stored = stored_monitor(settings, as_of, model_version)
    if stored is not None:
        return stored, ""
    try:
        return run_monitor(settings, as_of), ""
    except UserError as err:
        return None, str(err)


def write_private(path: Path, text: str) -> None:
    """`text` to `path` through a 0600 temp file beside it, renamed in place (atomic)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        Path(partial).replace(path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def log_report(settings: Settings, as_of: Month, path: Path) -> str:
    """The report as an artifact of the month's monitor run (`doudi monitor`), or of a new
    `report-<YYYY-MM>` run in the same experiment when the month was not monitored."""
    from doudi import registry
    from monitoring.monitor import experiment_name

    client = registry.client(settings.tracking_uri())
    name = experiment_name(settings)
    found = client.get_experiment_by_name(name)
    experiment = found.experiment_id if found is not None else client.create_experiment(
        name, artifact_location=settings.artifact_root())
    runs = client.search_runs([experiment], filter_string=f"tags.as_of = '{as_of}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if runs:
        run_id = runs[0].info.run_id
        client.log_artifact(run_id, str(path), ARTIFACT_PATH)
        return run_id
    run_id = client.create_run(experiment, run_name=f"report-{as_of}",
                               tags={"as_of": str(as_of), "doudi.kind": "report"}).info.run_id
    try:
        client.log_artifact(run_id, str(path), ARTIFACT_PATH)
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def write_report(settings: Settings, as_of: Month, *, out: Path | None = None,
                 database_url: str | None = None,
                 monitor: MonitorReport | None = None) -> WrittenReport:
    """Gather, render, write (`out` or `report_path`) and log the month's report.
    `monitor`: an already computed monitor report (else the month's stored one, written by
    `doudi monitor` / `doudi monthly` for the champion, else `run_monitor` runs here)."""
    data = gather(settings, as_of, database_url=database_url)
    failure = ""
    if monitor is None:
        monitor, failure = _monitor(settings, as_of, data.champion.label)
    html = render(data, monitor, failure)
    path = out or report_path(settings, as_of)
    write_private(path, html)
    run_id = log_report(settings, as_of, path)
    return WrittenReport(path, run_id,
                         None if monitor is None else monitor.recommendation.retrain)
