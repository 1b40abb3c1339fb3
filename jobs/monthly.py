"""The monthly job: one month, end to end, idempotent (`doudi monthly`, the scheduler).

ingest the new extracts -> compact closed years -> retrain when due (and gate) -> score
and explain -> store alerts -> caseworker sheets per township -> one-chain-of-help
reports. Each step is a stage function of its own package; this module only sequences
them and decides whether retraining is due. `jobs/commands/monthly_cmd.py` parses and
prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from doudi.months import Month
    from doudi.settings import Settings
    from serving.capacity import CapacityReport


CAPACITY_REPORT = "capacity_by_township.csv"  # in reports/monthly-<YYYY-MM>/


@dataclass
class MonthlySummary:
    as_of: Month
    files_ingested: int
    rows_added: int
    rows_quarantined: int
    trained: str  # what the training step did, in words
    model_version: str
    scored: int
    alerts_created: int
    alerts_skipped: dict[str, int]
    exports: list[tuple[str, int, str]] = field(default_factory=list)  # township, n, workbook
    possible_duplicates: int = 0  # (alert, department) pairs: help already given
    possible_omissions: int = 0  # (alert, hardship type) pairs: confirmed, still no help
    report_dir: str = ""
    top: pd.DataFrame | None = None
    ingest_feeds: list[str] = field(default_factory=list)  # ingest's per-feed table lines
    silent_feeds: list[str] = field(default_factory=list)  # nothing new for the as-of month
    # Visits per township against the province-wide top k (capacity_by_township.csv)
    capacity: CapacityReport | None = None
    monitor: str = ""  # the monitor's recommendation line and its report file
    monitor_warning: str = ""  # why the monitor failed (the month's work stands)
    compaction: str = ""  # the compaction's report line (settings.compact_closed_years)
    step_seconds: dict[str, float] = field(default_factory=dict)  # wall time of each step


def champion_as_of(settings: Settings) -> Month | None:
    """The training as-of month of this workspace's champion, or None without one (or
    with an unreadable tag: then training is due). Another workspace's champion is never
    this one's: `doudi.registry`."""
    from doudi.errors import UserError
    from doudi.months import Month
    from doudi.registry import find_champion

    found = find_champion(settings)
    if found is None or not found.as_of:
        return None
    try:  # tags are YYYY-MM; versions registered before months were months carry a date
        return Month.parse(found.as_of, what="the champion's as_of tag", allow_date=True)
    except UserError:
        return None


def run_monthly(
    settings: Settings, as_of: Month, raw_dir: Path, *, retrain: bool | None = None,
    allow_undelivered: bool = False, allow_unknown: bool = False,
) -> MonthlySummary:
    """One month's job; rerunning it with the same inputs changes nothing.

    A future `as_of` is refused before anything is read; one after the latest delivered
    month (this delivery included) after ingest, unless `allow_undelivered`. Either
    refusal is a one-line UserError with nothing trained, scored, stored or exported.
    """
    from doudi.registry import disable_telemetry

    disable_telemetry()
    import ingest
    from doudi.months import require_not_future
    from features.asof import require_delivered
    from features.assistance import current_assistance
    from serving.export import export_new_alerts
    from serving.scoring import score_month
    from serving.store import (
        duplicate_assistance,
        omissions,
        open_store,
        verdict_labels,
    )
    from training.job import train_monthly

    require_not_future(as_of)
    steps = _StepClock()
    report = ingest.ingest(raw_dir, settings, allow_unknown=allow_unknown)
    steps.done("ingest")
    new_files = sum(1 for f in report.files if f.skipped is None)
    # After ingest: this month's delivery counts as delivered.
    require_delivered(settings.warehouse_dir, as_of, allow_undelivered=allow_undelivered)
    compaction = ""
    if settings.compact_closed_years:  # closed years -> one file each; atomic, fails the month
        from ingest.compact import compact_warehouse

        compaction = compact_warehouse(settings).line()
        steps.done("compact")

    champion_month = champion_as_of(settings)
    due = champion_month is None or as_of - champion_month >= settings.retrain_every_months
    if retrain is not None:
        due = retrain
    if due:
        with open_store(settings=settings) as store:
            verdicts = verdict_labels(store)
        outcome = train_monthly(settings, as_of, verdicts=verdicts,
                                allow_undelivered=allow_undelivered)
        trained = (
            f"version {outcome.version} already registered for {as_of}"
            if outcome.duplicate
            else f"trained version {outcome.version} (aliases: {', '.join(outcome.aliases) or '-'})"
        )
    else:
        trained = f"not due (champion trained as of {champion_month})"
    steps.done("train")

    run = score_month(settings, as_of, allow_undelivered=allow_undelivered)
    steps.done("score")
    summary = MonthlySummary(
        as_of=as_of,
        files_ingested=new_files,
        rows_added=report.accepted,
        rows_quarantined=report.quarantined,
        trained=trained,
        model_version=run.model_version,
        scored=len(run.scored),
        alerts_created=len(run.added.created),
        alerts_skipped=run.added.skipped_counts(),
        ingest_feeds=report.feed_table(),
        compaction=compaction,
        silent_feeds=report.silent_feeds(str(as_of)[:7]),
    )
    with open_store(settings=settings) as store:
        # All or nothing per township; a crashed run's exports are finished or deleted first.
        for done in export_new_alerts(store, settings, as_of).exports:
            summary.exports.append((done.township_code, done.households, str(done.workbook)))
        # One chain of help: who would be helped twice, who was confirmed and not helped.
        assisted = current_assistance(settings.warehouse_dir, as_of)
        duplicates = duplicate_assistance(store, assisted)
        missed = omissions(
            store, assisted, today=as_of.end, after_days=settings.omission_days
        )
    report_dir = settings.reports_dir / f"monthly-{as_of}"
    report_dir.mkdir(parents=True, exist_ok=True)
    duplicates.to_csv(report_dir / "possible_duplicate_assistance.csv", index=False)
    missed.to_csv(report_dir / "possible_omissions.csv", index=False)
    steps.done("export")
    if run.capacity is not None:
        run.capacity.by_township.to_csv(report_dir / CAPACITY_REPORT, index=False)
        summary.capacity = run.capacity
    summary.possible_duplicates = len(duplicates)
    summary.possible_omissions = len(missed)
    summary.report_dir = str(report_dir)
    scored = run.scored
    if len(scored):
        alerted = scored[scored["alerted"].to_numpy()]
        summary.top = alerted.sort_values("risk", ascending=False).head(5)
    if settings.monitor.after_monthly:
        summary.monitor, summary.monitor_warning = monitor_after_scoring(settings, as_of)
        steps.done("monitor")
    else:
        summary.monitor = f"not run (monitor.after_monthly off): `doudi monitor --as-of {as_of}`"
    summary.step_seconds = steps.seconds
    return summary


class _StepClock:
    """Wall time of each step of the job, for the summary (operators see where it goes)."""

    def __init__(self) -> None:
        self._now = time.perf_counter
        self._last = self._now()
        self.seconds: dict[str, float] = {}

    def done(self, step: str) -> None:
        now = self._now()
        self.seconds[step] = self.seconds.get(step, 0.0) + now - self._last
        self._last = now


def monitor_after_scoring(settings: Settings, as_of: Month) -> tuple[str, str]:
    """(the monitor's recommendation line, "") or ("", a warning line). The monitor reads
    what the month wrote and writes only its report: its failure must not undo or hide the
    month's alerts and sheets, which are already stored, so it is reported, not raised."""
    import logging

    from monitoring.monitor import monitor_month

    try:
        report, files = monitor_month(settings, as_of)
    except Exception as err:  # any failure: the month's work stands (one line, no traceback)
        logging.getLogger(__name__).debug("monitor failed", exc_info=True)
        first = (str(err).splitlines() or [""])[0][:300]
        return "", (f"monitor failed ({type(err).__name__}: {first}); the month's work stands: "
                    f"rerun `doudi monitor --as-of {as_of}`")
    return f"{report.recommendation.line()} -> {files[0]}", ""
