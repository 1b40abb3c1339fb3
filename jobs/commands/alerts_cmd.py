"""`doudi alerts list`, `doudi alerts status` and `doudi feedback import`: the alert store for
operators."""

from __future__ import annotations

import getpass
import json
import sys
from enum import StrEnum
from pathlib import Path

import typer

from jobs.commands import DATABASE_URL

alerts_app = typer.Typer(help="Alerts in the store (one chain of help per household).")
feedback_app = typer.Typer(help="Caseworkers' verdicts back into the store.")


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")
    app.add_typer(feedback_app, name="feedback")


@alerts_app.command("list")
def list_command(
    township: str | None = typer.Option(
        None, "--township", help="9-digit township code (first 9 digits of the village code)."
    ),
    status: str | None = typer.Option(
        None,
        "--status",
        help="new, dispatched, verified_confirmed, verified_dismissed, referred or closed.",
    ),
    output: Format = typer.Option(Format.table, "--format", help="table, json or csv."),
    database_url: str | None = DATABASE_URL,
) -> None:
    """List alerts, newest first."""
    from doudi.errors import UserError
    from serving.store import Status, list_alerts, open_store

    if township is not None and not (len(township) == 9 and township.isdigit()):
        raise UserError(f"--township must be a 9-digit township code, not {township!r}")
    if status is not None and status not in {s.value for s in Status}:
        raise UserError(
            f"--status must be one of {', '.join(s.value for s in Status)}, not {status!r}"
        )
    with open_store(database_url) as store:
        frame = list_alerts(store, township=township, status=status)

    if output is Format.csv:
        frame.to_csv(sys.stdout, index=False)
        return
    if output is Format.json:
        # as_of is a calendar date: keep it one ("2026-03-31"), not a midnight timestamp.
        frame["as_of"] = frame["as_of"].astype(str)
        typer.echo(frame.to_json(orient="records", date_format="iso", force_ascii=False))
        return
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    from serving.routing import department_name

    columns = ["alert_id", "household_key", "township_code", "as_of", "tier", "risk"]
    columns += ["risk_types", "departments", "source", "status"]
    table = Table(title=f"{len(frame)} alert(s)")
    for column in columns:
        table.add_column(column, overflow="fold")
    for record in frame[columns].to_dict("records"):
        risk = record["risk"]
        record["risk"] = "" if pd.isna(risk) else f"{risk:.3f}"
        departments = [d for d in str(record["departments"]).split(";") if d]
        record["departments"] = "、".join(department_name(d) for d in departments)
        table.add_row(*(str(record[c]) for c in columns))
    Console().print(table)


class ImportFormat(StrEnum):
    text = "text"
    json = "json"


@feedback_app.command("import")
def import_command(
    file: Path = typer.Argument(
        ..., help="The caseworker sheet as returned: .xlsx (every village's worksheet) or .csv "
        "(GBK or UTF-8)."),
    actor: str | None = typer.Option(
        None, "--actor", help="Who imports (recorded in the status history); default: OS user."
    ),
    all_or_nothing: bool = typer.Option(
        False, "--all-or-nothing",
        help="Import nothing if any row breaks a rule or conflicts (exit 2)."),
    output: ImportFormat = typer.Option(
        ImportFormat.text, "--format",
        help="text: a summary; json: the counts and every skipped or conflicting row."),
    database_url: str | None = DATABASE_URL,
) -> None:
    """Import caseworkers' verdicts: good rows are recorded, rows without a verdict are not
    yet visited, bad rows and conflicts are reported and skipped (exit 1). Re-importing
    changes nothing."""
    from serving.store import import_feedback, open_store

    with open_store(database_url) as store:
        report = import_feedback(store, file, actor=actor or getpass.getuser(),
                                 all_or_nothing=all_or_nothing)
    if output is ImportFormat.json:
        typer.echo(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        typer.echo(report.to_text(), nl=False)
    if not report.clean:
        raise typer.Exit(1)


@alerts_app.command("status")
def status_command(
    as_of: str | None = typer.Option(
        None, "--as-of", help="Only the alerts of this month (YYYY-MM); default every month."),
    output: Format = typer.Option(Format.table, "--format", help="table, json or csv."),
    database_url: str | None = DATABASE_URL,
) -> None:
    """Per township: alerts sent, visited (confirmed + dismissed) and overdue (no verdict
    after the sheet's respond-by date: settings.response_days after the export)."""
    from doudi.months import Month
    from doudi.settings import Settings
    from features.divisions import division_names
    from serving.store import open_store, township_status
    from serving.work_order import place_name

    month = Month.parse(as_of, what="--as-of") if as_of is not None else None
    settings = Settings()
    with open_store(database_url) as store:
        frame = township_status(store, today=store.now().date(),
                                response_days=settings.response_days, month=month)
    names = division_names(settings.warehouse_dir, month or Month.today())
    frame.insert(1, "township_name", [place_name(c, names) for c in frame["township_code"]])
    if output is Format.csv:
        frame.to_csv(sys.stdout, index=False)
        return
    if output is Format.json:
        typer.echo(frame.to_json(orient="records", force_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    title = f"caseworker sheets returned{f' ({month})' if month else ''}, " \
        f"respond within {settings.response_days} days"
    table = Table(title=title)
    table.add_column("township", no_wrap=True)
    table.add_column("name", no_wrap=True)
    for column in frame.columns[2:]:
        table.add_column(column, justify="right")
    for record in frame.itertuples(index=False):
        table.add_row(*(str(v) for v in record))
    if len(frame) > 1:
        totals = frame.drop(columns=["township_code", "township_name"]).sum()
        table.add_row("total", "", *(str(int(v)) for v in totals))
    Console().print(table)
