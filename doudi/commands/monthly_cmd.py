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

if TYPE_CHECKING:
    import pandas as pd

    from doudi.settings import Settings


@dataclass
class MonthlySummary:
    as_of: str
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


def _champion_as_of(settings: Settings) -> str | None:
    """The training as-of month of the current champion, or None without one."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=settings.tracking_uri())
    try:
        mv = client.get_model_version_by_alias("doudi-risk", "champion")
    except MlflowException:
        return None
    return mv.tags.get("as_of")


def run_monthly(
    settings: Settings, as_of: str, raw_dir: Path, *, retrain: bool | None = None
) -> MonthlySummary:
    """One month's job; rerunning it with the same inputs changes nothing."""
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import ingest
    from features.asof import month_end, month_index
    from serving.assistance import current_assistance
    from serving.export import export_township
    from serving.scoring import score_month
    from serving.store import (
        duplicate_assistance,
        list_alerts,
        omissions,
        open_store,
        verdict_labels,
    )
    from training.job import train_monthly

    report = ingest.ingest(raw_dir, settings)
    new_files = sum(1 for f in report.files if f.skipped is None)

    champion_as_of = _champion_as_of(settings)
    due = champion_as_of is None or (
        month_index(month_end(as_of)) - month_index(month_end(champion_as_of))
        >= settings.retrain_every_months
    )
    if retrain is not None:
        due = retrain
    if due:
        with open_store(settings=settings) as store:
            verdicts = verdict_labels(store)
        outcome = train_monthly(settings, as_of, verdicts=verdicts)
        trained = (
            f"version {outcome.version} already registered for {as_of}"
            if outcome.duplicate
            else f"trained version {outcome.version} (aliases: {', '.join(outcome.aliases) or '-'})"
        )
    else:
        trained = f"not due (champion trained as of {champion_as_of})"

    run = score_month(settings, as_of)
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
    )
    out_dir = settings.home / "exports" / as_of
    with open_store(settings=settings) as store:
        new = list_alerts(store, status="new")
        for township in sorted(set(new["township_code"].astype(str))):
            done = export_township(store, township, settings, out_dir)
            summary.exports.append((township, done.households, str(done.workbook)))
        # One chain of help: who would be helped twice, who was confirmed and not helped.
        assisted = current_assistance(settings.warehouse_dir, as_of)
        duplicates = duplicate_assistance(store, assisted)
        missed = omissions(
            store, assisted, today=month_end(as_of), after_days=settings.omission_days
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
    ) -> None:
        """Ingest, retrain when due, score, store alerts, export per township, summarise."""
        from doudi.settings import Settings

        _print(run_monthly(Settings(), as_of, raw_dir, retrain=retrain))
