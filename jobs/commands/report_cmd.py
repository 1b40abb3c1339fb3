"""`doudi report`: the month in one self-contained HTML page (`monitoring.report`,
docs/report.md), written to <home>/reports/ and logged to MLflow."""

from __future__ import annotations

from pathlib import Path

import typer

from jobs.commands import DATABASE_URL


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_command(
        as_of: str = typer.Option(..., "--as-of", help="As-of month YYYY-MM (scored already)."),
        out: Path | None = typer.Option(
            None, "--out", help="Write the page here (default: "
            "<home>/reports/report-<YYYY-MM>.html)."),
        database_url: str | None = DATABASE_URL,
    ) -> None:
        """One HTML page for leadership and analysts: alerts, verdict returns, model metrics
        and calibration, fairness, drift, top reasons and the model card (opens offline)."""
        import time

        from doudi.months import Month
        from doudi.settings import Settings
        from monitoring.report import write_report

        month = Month.parse(as_of, what="--as-of")
        started = time.perf_counter()
        written = write_report(Settings(), month, out=out, database_url=database_url)
        advice = {None: "drift: not available", True: "recommendation: retrain now",
                  False: "recommendation: no retraining needed"}[written.retrain]
        typer.echo(f"doudi report as of {month}: {written.path} ({advice}; MLflow run "
                   f"{written.run_id}; {time.perf_counter() - started:.1f} s)")
