"""`doudi train`, `doudi promote`, `doudi rollback`: the monthly retraining job and operators."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_command(
        as_of: str = typer.Option(..., "--as-of", help="Model month YYYY-MM (data known by then)."),
        database_url: str | None = typer.Option(
            None, "--database-url", help="Alert store holding caseworkers' verdicts."
        ),
    ) -> None:
        """Train on mature months (and verdicts), evaluate out of time, register, gate."""
        from doudi.settings import Settings
        from serving.store import open_store, verdict_labels
        from training.job import train_monthly

        settings = Settings()
        with open_store(database_url, settings=settings) as store:
            verdicts = verdict_labels(store)
        outcome = train_monthly(settings, as_of, verdicts=verdicts)
        if outcome.duplicate:
            typer.echo(f"doudi-risk/{outcome.version} is already registered for {as_of} "
                       "with the same data: nothing new")
            return
        typer.echo(f"registered doudi-risk/{outcome.version} (run {outcome.run_id}); "
                   f"aliases: {', '.join(outcome.aliases) or '-'}")
        if outcome.gate is not None:
            verdict = "promoted to champion" if outcome.gate.promote else "stays challenger"
            typer.echo(f"gate ({outcome.gate.window}): {verdict}")
            for reason in outcome.gate.reasons:
                typer.echo(f"  - {reason}")

    @app.command("promote")
    def promote_command(
        version: str = typer.Argument(..., help="Registered version number."),
    ) -> None:
        """Make a registered version the champion (operator override, recorded)."""
        from doudi.settings import Settings
        from training.tracking import promote

        promote(version, tracking_uri=Settings().tracking_uri())
        typer.echo(f"doudi-risk/{version} is now champion")

    @app.command("rollback")
    def rollback_command() -> None:
        """Return the champion alias to the previous champion."""
        from doudi.settings import Settings
        from training.tracking import rollback

        version = rollback(tracking_uri=Settings().tracking_uri())
        typer.echo(f"champion rolled back to doudi-risk/{version}")
