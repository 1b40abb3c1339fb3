"""`doudi ingest RAW_DIR` and `doudi validate RAW_DIR`: the raw extract -> the warehouse."""

from __future__ import annotations

import enum
import sys
from pathlib import Path

import typer


class OutputFormat(enum.StrEnum):
    text = "text"
    json = "json"


ALLOW_UNKNOWN_HELP = (
    "Read the feeds even if RAW_DIR holds unknown folders or files (listed as warnings in "
    "the report); without it they are an error naming each.")


def register(app: typer.Typer) -> None:
    @app.command("ingest")
    def ingest_command(
        raw_dir: Path = typer.Argument(..., help="Folder with one sub-folder per feed."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
        allow_unknown: bool = typer.Option(False, "--allow-unknown", help=ALLOW_UNKNOWN_HELP),
    ) -> None:
        """Validate, pseudonymise and add new files of RAW_DIR to the warehouse (atomic)."""
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

        import ingest
        from doudi.settings import Settings

        settings = Settings()
        console = Console(stderr=True)
        with Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TimeElapsedColumn(), console=console, disable=quiet, transient=True,
        ) as bar:
            task = bar.add_task("ingest", total=None)

            def progress(description: str, done: int, total: int) -> None:
                bar.update(task, description=description, completed=done, total=total)

            report = ingest.ingest(raw_dir, settings, progress=progress,
                                   allow_unknown=allow_unknown)
        if not quiet:
            typer.echo(report.to_text(), nl=False)
            typer.echo(f"report: {report.report_paths[0]}")

    @app.command("validate")
    def validate_command(
        raw_dir: Path = typer.Argument(..., help="Folder with one sub-folder per feed."),
        output: OutputFormat = typer.Option(
            OutputFormat.text, "--format", help="text: a summary; json: one object per "
            "rejected row and rule (feed, file, row, column, rule, message)."),
        allow_unknown: bool = typer.Option(False, "--allow-unknown", help=ALLOW_UNKNOWN_HELP),
    ) -> None:
        """Run ingest's checks on RAW_DIR without writing anything. Exit 1 if rows would be
        quarantined, 2 on file-level errors."""
        import ingest
        from doudi.settings import Settings

        report = ingest.validate(raw_dir, Settings(), allow_unknown=allow_unknown)
        if output is OutputFormat.json:
            sys.stdout.write(report.rejections_jsonl())
        else:
            typer.echo(report.to_text(), nl=False)
        if report.rejections:
            raise typer.Exit(1)
