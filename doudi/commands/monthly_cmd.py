"""`doudi monthly`: the whole monthly job in one idempotent command.

ingest the new extracts -> retrain when due (and gate) -> score and explain ->
store alerts -> caseworker sheets per township -> summary. Each step is a stage
function of its own package; this module only sequences them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from doudi.commands import ALLOW_UNDELIVERED_HELP

if TYPE_CHECKING:
    import pandas as pd

    from doudi.months import Month
    from doudi.settings import Settings


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


def _champion_as_of(settings: Settings) -> Month | None:
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
    from serving.assistance import current_assistance
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
    report = ingest.ingest(raw_dir, settings, allow_unknown=allow_unknown)
    new_files = sum(1 for f in report.files if f.skipped is None)
    # After ingest: this month's delivery counts as delivered.
    require_delivered(settings.warehouse_dir, as_of, allow_undelivered=allow_undelivered)

    champion_as_of = _champion_as_of(settings)
    due = champion_as_of is None or as_of - champion_as_of >= settings.retrain_every_months
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
        trained = f"not due (champion trained as of {champion_as_of})"

    run = score_month(settings, as_of, allow_undelivered=allow_undelivered)
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
    summary.possible_duplicates = len(duplicates)
    summary.possible_omissions = len(missed)
    summary.report_dir = str(report_dir)
    scored = run.scored
    if len(scored):
        alerted = scored[scored["alerted"].to_numpy()]
        summary.top = alerted.sort_values("risk", ascending=False).head(5)
    return summary


def _print(summary: MonthlySummary) -> None:
    typer.echo(f"doudi monthly as of {summary.as_of}")
    typer.echo(
        f"  ingest: {summary.files_ingested} new file(s), {summary.rows_added:,} row(s) added, "
        f"{summary.rows_quarantined:,} quarantined"
    )
    for line in summary.ingest_feeds:
        typer.echo(f"    {line}")
    for feed_name in summary.silent_feeds:  # feeds expected monthly only (feed_cadence)
        typer.echo(f"  WARNING: {feed_name}: expected monthly, no new rows reported in "
                   f"{str(summary.as_of)[:7]}")
    typer.echo(f"  training: {summary.trained}")
    typer.echo(
        f"  scoring: {summary.scored:,} in-scope households with {summary.model_version}; "
        f"{summary.alerts_created} new alert(s), skipped {summary.alerts_skipped}"
    )
    for township, n, path in summary.exports:
        typer.echo(f"  export: township {township}: {n} household(s) -> {path}")
    typer.echo(
        f"  one chain of help: {summary.possible_duplicates} possible duplicate assistance, "
        f"{summary.possible_omissions} possible omission(s) -> {summary.report_dir}"
    )
    if summary.top is not None and len(summary.top):
        typer.echo("  top alerts (pseudonymous keys; caseworker sheets carry household numbers):")
        for _, row in summary.top.iterrows():
            typer.echo(
                f"    {row['household_key']}  risk {row['risk']:.1%}  {row['tier']}  "
                f"types {';'.join(row['risk_types']) or '-'}"
            )
            for reason in row["reasons"]:
                typer.echo(f"      - {reason.text_zh}")


def register(app: typer.Typer) -> None:
    @app.command("monthly")
    def monthly_command(
        raw_dir: Path = typer.Argument(..., help="This month's delivery (one folder per feed)."),
        as_of: str = typer.Option(..., "--as-of", help="As-of month YYYY-MM."),
        retrain: bool | None = typer.Option(
            None, "--retrain/--no-retrain", help="Force or skip retraining (default: when due)."
        ),
        allow_undelivered: bool = typer.Option(
            False, "--allow-undelivered", help=ALLOW_UNDELIVERED_HELP),
        allow_unknown: bool = typer.Option(
            False, "--allow-unknown", help="Read the feeds even if RAW_DIR holds unknown "
            "folders or files (listed as warnings); without it they are an error."),
    ) -> None:
        """Ingest, retrain when due, score, store alerts, export per township, summarise."""
        from doudi.months import Month
        from doudi.settings import Settings

        month = Month.parse(as_of, what="--as-of")
        _print(run_monthly(Settings(), month, raw_dir, retrain=retrain,
                           allow_undelivered=allow_undelivered, allow_unknown=allow_unknown))
