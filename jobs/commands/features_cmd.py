"""`doudi features`: build point-in-time household features as of a month."""

from __future__ import annotations

from pathlib import Path

import typer

from jobs.commands import ALLOW_UNDELIVERED


def register(app: typer.Typer) -> None:
    @app.command("features")
    def features_command(
        as_of: str = typer.Option(..., "--as-of", help="As-of month YYYY-MM (its month end)."),
        from_month: str | None = typer.Option(
            None, "--from", help="Build every month from this YYYY-MM to --as-of."),
        out: Path | None = typer.Option(
            None, "--out", help="Write a Parquet file (household_key, as_of, features)."),
        warehouse: Path | None = typer.Option(
            None, "--warehouse", help="Warehouse folder (default: <DOUDI_HOME>/warehouse)."),
        allow_undelivered: bool = ALLOW_UNDELIVERED,
    ) -> None:
        """Features of every roster household known at the month end (pseudonymous keys)."""
        import time

        from doudi.months import Month
        from doudi.settings import Settings
        from features import build_features, build_features_range
        from features.asof import require_delivered

        last = Month.parse(as_of, what="--as-of")
        first = Month.parse(from_month, what="--from") if from_month is not None else None
        settings = Settings()
        root = warehouse or settings.warehouse_dir
        require_delivered(root, last, allow_undelivered=allow_undelivered)
        started = time.perf_counter()
        if first is not None:
            frame = build_features_range(root, first, last, settings)
        else:
            frame = build_features(root, last, settings)
        seconds = time.perf_counter() - started
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(out, index=False)
        months = frame["as_of"].nunique() if len(frame) else 0
        typer.echo(f"{len(frame)} household-months ({months} month(s), "
                   f"{frame.shape[1]} columns) in {seconds:.1f}s"
                   + (f" -> {out}" if out else ""))
