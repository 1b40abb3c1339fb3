"""`doudi monitor`: drift, calibration by band, performance while labels mature, and a
retrain recommendation for one month (`monitoring.monitor`); results in <home>/reports/
and MLflow."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    @app.command("monitor")
    def monitor_command(
        as_of: str = typer.Option(..., "--as-of", help="As-of month YYYY-MM."),
        output: str = typer.Option("text", "--format", help="text (a summary) or json "
                                   "(the whole report, as written to reports/)."),
    ) -> None:
        """Is the champion drifting? PSI, calibration by risk band, estimated and realised
        precision at capacity, and whether to retrain now (docs/monitoring.md)."""
        from doudi.errors import UserError
        from doudi.months import Month
        from doudi.settings import Settings
        from monitoring.monitor import monitor_month

        if output not in ("text", "json"):
            raise UserError(f"--format {output}: use text or json")
        month = Month.parse(as_of, what="--as-of")
        report, files = monitor_month(Settings(), month)
        if output == "json":
            typer.echo(json.dumps(report.to_json(), ensure_ascii=False, indent=1))
            return
        _print(report, files)


def _print(report: object, files: tuple[object, ...]) -> None:
    from monitoring.monitor import MonitorReport

    assert isinstance(report, MonitorReport)
    drift = report.feature_drift
    typer.echo(f"doudi monitor as of {report.as_of}: {report.model_version}")
    typer.echo(f"  reference: {report.reference}")
    typer.echo(f"  score PSI {report.score_psi:.3f} ({report.score_band}); features: "
               + ", ".join(f"{(drift['band'] == b).sum()} {b}"
                           for b in ("major", "moderate", "stable")))
    for _, row in drift.sort_values("psi", ascending=False).head(5).iterrows():
        typer.echo(f"    {row['feature']} ({row['label_zh']}): PSI {row['psi']:.3f}, missing "
                   f"{row['missing_ref']:.1%} -> {row['missing_now']:.1%}")
    bands = report.calibration_bands
    for _, row in bands[bands["band"] == "top 5%"].iterrows():
        final = "final" if row["labels_final"] else "maturing"
        sample = ", in sample" if row["in_sample"] else ""
        typer.echo(f"  top 5% {row['month']} ({final} labels{sample}): "
                   f"predicted {row['predicted']:.1%}, observed {row['observed']:.1%}")
    perf = report.performance
    precision = perf[perf["metric"] == "precision_at_capacity"]
    for month, rows in precision.groupby("month", sort=True):
        shown = ", ".join(f"{r['kind']} {r['value']:.1%}" for _, r in rows.iterrows())
        share = rows["label_share"].iloc[0]
        typer.echo(f"  precision at capacity {month}: {shown} (label window {share:.0%} passed)")
    typer.echo(f"  recommendation: {report.recommendation.line()}")
    typer.echo(f"  -> {', '.join(str(f) for f in files)}")
