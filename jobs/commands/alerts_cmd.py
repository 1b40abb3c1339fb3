"""`doudi alerts list` and `doudi feedback import`: the alert store for operators."""

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


@feedback_app.command("import")
def import_command(
    file: Path = typer.Argument(..., help="Verdicts: .csv (UTF-8 or GBK) or .xlsx."),
    actor: str | None = typer.Option(
        None, "--actor", help="Who imports (recorded in the status history); default: OS user."
    ),
    database_url: str | None = DATABASE_URL,
) -> None:
    """Import caseworkers' verdicts (all rows or none; re-importing changes nothing)."""
    from serving.store import import_feedback, open_store

    with open_store(database_url) as store:
        report = import_feedback(store, file, actor=actor or getpass.getuser())
    typer.echo(
        json.dumps(
            {
                "file": report.file,
                "rows": report.rows,
                "recorded": report.recorded,
                "unchanged": report.unchanged,
            },
            ensure_ascii=False,
        )
    )
