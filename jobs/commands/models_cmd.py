"""`doudi models list`: this workspace's registered model versions, for operators to look
at before `doudi promote` / `doudi rollback`."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from doudi.registry import VersionRow

models_app = typer.Typer(help="The model registry: this workspace's versions.",
                         no_args_is_help=True)


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _day(v: str | None) -> str:
    return "-" if not v else v.removesuffix("T00:00:00")[:10]


def render_table(rows: list[VersionRow], model_name: str) -> str:
    """The versions as a plain-text table."""
    if not rows:
        return f"{model_name}: no versions yet (train one: doudi train --as-of YYYY-MM)"
    header = ["model", "version", "as of", "trained from-through", "roc_auc", "pr_auc",
              "p@capacity", "aliases", "workspace", "created"]
    lines = [[r.name, r.version, _day(r.as_of), f"{_day(r.trained_from)} - "
              f"{_day(r.trained_through)}", _num(r.roc_auc), _num(r.pr_auc),
              _num(r.precision_at_k), ",".join(r.aliases) or "-", r.workspace, r.created]
             for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines, strict=False)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True))
                     .rstrip() for line in [header, *lines])


@models_app.command("list")
def list_command(
    fmt: str = typer.Option("table", "--format", help="table or json."),
    every: bool = typer.Option(
        False, "--all", help="Also other workspaces' doudi-risk models in the same store."),
) -> None:
    """Versions (newest first): trained as of, training window, out-of-time test metrics,
    aliases, whose workspace, created."""
    from doudi import registry
    from doudi.errors import UserError
    from doudi.settings import Settings

    if fmt not in ("table", "json"):
        raise UserError(f"--format {fmt}: expected table or json")
    settings = Settings()
    ws = registry.workspace(settings)
    rows = registry.version_rows(registry.client(settings.tracking_uri()), ws,
                                 every_workspace=every)
    if fmt == "json":
        typer.echo(json.dumps({"model_name": ws.model_name, "workspace": ws.fingerprint,
                               "versions": [asdict(r) for r in rows]},
                              ensure_ascii=False, indent=1))
    else:
        typer.echo(f"workspace {ws.short}… ({settings.home}), model {ws.model_name}")
        typer.echo(render_table(rows, ws.model_name))


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
