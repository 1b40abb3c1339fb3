"""`doudi simulate`: write a synthetic province (raw extracts + truth) to a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

# `training.minimum.months_needed` with the default settings (horizon 6 + allowance 3 +
# 11 months of folds); tests/jobs keeps this figure equal to the function's.
DEFAULT_TRAINING_MONTHS = 20
MONTHS_HELP = (
    "Months to simulate (>= 12). `doudi monthly`/`train` need at least "
    f"{DEFAULT_TRAINING_MONTHS} with the default settings (`doudi settings` shows "
    "min_training_months)."
)


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate_command(
        households: int = typer.Option(3000, "--households", help="Number of households."),
        months: int = typer.Option(36, "--months", help=MONTHS_HELP),
        start: str = typer.Option("2023-01", "--start", help="First month, YYYY-MM."),
        seed: int = typer.Option(7, "--seed", help="Random seed (same seed, same bytes)."),
        out: Path = typer.Option(..., "--out", help="Output folder: raw/ and truth/ go here."),
    ) -> None:
        """Generate a synthetic province: 14 feeds under raw/, ground truth under truth/."""
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from doudi.settings import Settings
        from province import simulate
        from training.minimum import months_needed

        settings = Settings()
        console = Console(stderr=True)
        with Progress(
            TextColumn("{task.description:<22}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as bar:
            task = bar.add_task("starting", total=1.0)

            def progress(stage: str, fraction: float) -> None:
                bar.update(task, description=stage, completed=fraction)

            summary = simulate(
                out,
                households=households,
                months=months,
                start=start,
                seed=seed,
                settings=settings,
                progress=progress,
            )
        _print_summary(summary, out)
        needed = months_needed(settings.horizon_months, settings.label_allowance_months)
        if months < needed:
            typer.secho(f"note: {months} months are too few to train on: `doudi monthly`/"
                        f"`train` need at least {needed} (min_training_months)",
                        fg="yellow", err=True)


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    oracle = summary["oracle"]
    typer.echo(f"province written to {out}/raw (feeds) and {out}/truth")
    typer.echo(
        f"households {summary['households']:,}  persons {summary['persons']:,}  "
        f"counties {summary['counties']}  villages {summary['villages']}  "
        f"files {summary['files']:,}"
    )
    rows = "  ".join(f"{k} {v:,}" for k, v in summary["rows_per_feed"].items())
    typer.echo(f"rows: {rows}")
    typer.echo(
        f"bad rows {summary['bad_rows']:,}  exact duplicates "
        f"{sum(summary['duplicates_per_feed'].values()):,}"
    )
    typer.echo(
        f"base rate (in scope, identified within {summary['horizon_months']} months) "
        f"{summary['base_rate']:.2%}  hardship share {summary['hardship_share']:.2%}"
    )
    roc, pr = oracle["roc_auc"], oracle["pr_auc"]
    typer.echo(
        f"oracle ({oracle['rows']:,} household-months, {oracle['replicates']} futures): "
        f"ROC-AUC {roc if roc is None else f'{roc:.3f}'}  "
        f"PR-AUC {pr if pr is None else f'{pr:.3f}'}"
    )
