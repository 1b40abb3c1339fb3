"""`doudi monthly`: parse, run the monthly job (`jobs.monthly.run_monthly`), print."""

from __future__ import annotations

from pathlib import Path

import typer

from jobs.commands import ALLOW_UNDELIVERED
from jobs.monthly import CAPACITY_REPORT, MonthlySummary, run_monthly


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
    if summary.compaction:
        typer.echo(f"  compaction: {summary.compaction}")
    typer.echo(f"  training: {summary.trained}")
    typer.echo(
        f"  scoring: {summary.scored:,} in-scope households with {summary.model_version}; "
        f"{summary.alerts_created} new alert(s), skipped {summary.alerts_skipped}"
    )
    if summary.capacity is not None:
        typer.echo(f"  capacity: {summary.capacity.line()} -> "
                   f"{summary.report_dir}/{CAPACITY_REPORT}")
    for township, n, path in summary.exports:
        typer.echo(f"  export: township {township}: {n} household(s) -> {path}")
    typer.echo(
        f"  one chain of help: {summary.possible_duplicates} possible duplicate assistance, "
        f"{summary.possible_omissions} possible omission(s) -> {summary.report_dir}"
    )
    if summary.monitor:
        typer.echo(f"  monitor: {summary.monitor}")
    if summary.monitor_warning:
        typer.echo(f"  WARNING: {summary.monitor_warning}")
    if summary.step_seconds:
        typer.echo("  time: " + ", ".join(f"{step} {seconds:.1f} s"
                                          for step, seconds in summary.step_seconds.items()))
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
        allow_undelivered: bool = ALLOW_UNDELIVERED,
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
