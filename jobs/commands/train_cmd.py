"""`doudi train`, `doudi promote`, `doudi rollback`: the monthly retraining job and operators.

Each works on this workspace's registered model (`doudi.registry`); another workspace's
version is refused in one line.
"""

from __future__ import annotations

import typer

from jobs.commands import ALLOW_UNDELIVERED, DATABASE_URL


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_command(
        as_of: str = typer.Option(..., "--as-of", help="Model month YYYY-MM (data known by then)."),
        database_url: str | None = DATABASE_URL,
        allow_undelivered: bool = ALLOW_UNDELIVERED,
    ) -> None:
        """Train on mature months (and verdicts), evaluate out of time, register, gate."""
        from doudi import registry
        from doudi.months import Month
        from doudi.settings import Settings
        from features.asof import require_delivered
        from serving.store import open_store, verdict_labels
        from training.job import train_monthly

        month = Month.parse(as_of, what="--as-of")
        settings = Settings()
        # before the alert store is opened (and created): a refusal writes nothing
        require_delivered(settings.warehouse_dir, month, allow_undelivered=allow_undelivered)
        name = registry.workspace(settings).model_name
        with open_store(database_url, settings=settings) as store:
            verdicts = verdict_labels(store)
        outcome = train_monthly(settings, month, verdicts=verdicts,
                                allow_undelivered=allow_undelivered)
        if outcome.duplicate:
            typer.echo(f"{name}/{outcome.version} is already registered for {month} "
                       "with the same data: nothing new")
            return
        typer.echo(f"registered {name}/{outcome.version} (run {outcome.run_id}); "
                   f"aliases: {', '.join(outcome.aliases) or '-'}")
        if outcome.gate is not None:
            verdict = "promoted to champion" if outcome.gate.promote else "stays challenger"
            typer.echo(f"gate ({outcome.gate.window}): {verdict}")
            for reason in outcome.gate.reasons:
                typer.echo(f"  - {reason}")

    @app.command("promote")
    def promote_command(
        version: str = typer.Argument(
            ..., help="Version number of this workspace's model (see `doudi models list`)."),
        force: bool = typer.Option(
            False, "--force", help="Promote a version that did not clear the gate's floor "
            "(beats the departments' rules and the logistic baseline, calibrated); recorded "
            "as 'manual promote (forced past gate)' with the operator's name."),
    ) -> None:
        """Make a registered version the champion (operator override, recorded)."""
        from doudi import registry
        from doudi.settings import Settings
        from training.tracking import FORCED_REASON, promote

        settings = Settings()
        ws = registry.workspace(settings)
        number = promote(version, workspace=ws, tracking_uri=settings.tracking_uri(),
                         force=force, actor=settings.operator)
        client = registry.client(settings.tracking_uri())
        # `promote` has just written this tag: the forced reason means it went past the floor
        if registry.version(client, ws, number).tags.get("champion_reason") == FORCED_REASON:
            typer.echo(f"warning: {ws.model_name}/{number} did not clear the gate's floor; "
                       f"promoted anyway ({FORCED_REASON}, by {settings.operator})", err=True)
        typer.echo(f"{ws.model_name}/{number} is now champion")

    @app.command("rollback")
    def rollback_command() -> None:
        """Return the champion alias to the previous champion."""
        from doudi import registry
        from doudi.settings import Settings
        from training.tracking import rollback

        settings = Settings()
        ws = registry.workspace(settings)
        number = rollback(workspace=ws, tracking_uri=settings.tracking_uri())
        typer.echo(f"champion rolled back to {ws.model_name}/{number}")
