"""`doudi score` and `doudi export`: monthly scoring into the alert store, caseworker sheets."""

from __future__ import annotations

from pathlib import Path

import typer

from jobs.commands import ALLOW_UNDELIVERED, DATABASE_URL


def register(app: typer.Typer) -> None:
    @app.command("score")
    def score_command(
        as_of: str = typer.Option(..., "--as-of", help="As-of month YYYY-MM (its month end)."),
        out: Path | None = typer.Option(
            None, "--out", help="Operator export (.csv or .parquet), keyed by the original "
            "household number: re-identified from the vault and audited."),
        model: str | None = typer.Option(
            None, "--model", help="Model folder or URI; anything but the champion needs "
            "--allow-non-champion (default: this workspace's champion, "
            "models:/doudi-risk-<workspace>@champion in the configured MLflow tracking store; "
            "another workspace's model is refused; see `doudi models list`)."),
        database_url: str | None = DATABASE_URL,
        explain_all: bool = typer.Option(
            False, "--explain-all", help="Reasons for every household in --out, not only "
            "the alerted ones (TreeSHAP for all: about 2 min per 1M households)."),
        allow_undelivered: bool = ALLOW_UNDELIVERED,
        allow_non_champion: bool = typer.Option(
            False, "--allow-non-champion", help="Score with a --model that is not this "
            "workspace's champion (a version the gate refused, an old version, a folder): "
            "its alerts go to caseworkers. Logged: a warning, the alerts' history and "
            "<home>/reports/non-champion-scoring.jsonl record who did it."),
    ) -> None:
        """Score every in-scope household, explain the alerts and add them to the store."""
        from doudi.months import Month

        month = Month.parse(as_of, what="--as-of")
        if explain_all and out is None:
            from doudi.errors import UserError

            raise UserError("--explain-all writes its reasons to --out: give --out FILE")
        import time

        from doudi.settings import Settings
        from serving.scoring import score_month

        settings = Settings()
        started = time.perf_counter()
        run = score_month(settings, month, model_uri=model, out=out,
                          database_url=database_url, explain_all=explain_all,
                          allow_undelivered=allow_undelivered,
                          allow_non_champion=allow_non_champion)
        if run.warning:
            typer.echo(f"warning: {run.warning}", err=True)
        scored = run.scored
        alerted = scored[scored["alerted"].to_numpy()] if len(scored) else scored
        tiers = alerted["tier"].value_counts().to_dict() if len(alerted) else {}
        sources = alerted["source"].value_counts().to_dict() if len(alerted) else {}
        typer.echo(
            f"{len(scored)} in-scope households scored with {run.model_version} in "
            f"{time.perf_counter() - started:.1f}s; {len(alerted)} alert(s) "
            f"(tiers {tiers}, sources {sources}); stored {len(run.added.created)}, "
            f"skipped {run.added.skipped_counts()}"
            + (f"; {run.exported_rows} rows -> {out}" if out is not None else ""))

    @app.command("export")
    def export_command(
        township: list[str] = typer.Option(
            ..., "--township", help="9-digit township code (repeat for several)."),
        out_dir: Path = typer.Option(..., "--out-dir", help="Folder for the sheets."),
        database_url: str | None = DATABASE_URL,
    ) -> None:
        """Caseworker sheets (xlsx + GBK CSV) of a township's new alerts; dispatches them."""
        from doudi.settings import Settings
        from serving.export import check_townships, export_township
        from serving.store import open_store

        settings = Settings()
        check_townships(settings, township)  # every code before any sheet is written
        with open_store(database_url, settings=settings) as store:
            for code in township:
                done = export_township(store, code, settings, out_dir)
                typer.echo(f"{code}: {done.households} household(s) -> {done.workbook.name}, "
                           f"{done.csv.name} (audit #{done.audit_id})")
