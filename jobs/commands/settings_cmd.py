"""`doudi settings`: show the effective configuration."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    @app.command("settings")
    def show_settings() -> None:
        """Print the effective settings (environment DOUDI_*, DOUDI_CONFIG file, defaults)."""
        from doudi.settings import Settings
        from training.minimum import months_needed

        s = Settings()
        data = json.loads(s.model_dump_json())
        data["tracking_uri"] = s.tracking_uri()
        data["key_file"] = str(s.key_file)
        # derived: months of data (first roster month to as-of) training needs
        data["min_training_months"] = months_needed(s.horizon_months, s.label_allowance_months)
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
