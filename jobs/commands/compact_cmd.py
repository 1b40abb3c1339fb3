"""`doudi compact`: each closed year of the warehouse -> one file per feed x county."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("compact")
    def compact_command(
        through: str | None = typer.Option(
            None, "--through", help="Compact years whose December is <= this YYYY-MM "
            "(default: the latest delivered month)."),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="Report what would be compacted; write nothing."),
    ) -> None:
        """Rewrite each closed year's month partitions as one year file per feed x county
        (atomic, idempotent; `doudi monthly` runs it after ingest, docs/warehouse.md)."""
        from doudi.months import Month
        from doudi.settings import Settings
        from ingest.compact import compact_warehouse

        month = Month.parse(through, what="--through") if through is not None else None
        typer.echo(compact_warehouse(Settings(), month, dry_run=dry_run).to_text(), nl=False)
