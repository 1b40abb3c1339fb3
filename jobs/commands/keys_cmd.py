"""`doudi keys create|list|revoke`: the scoring API's keys (docs/api.md "Access")."""

from __future__ import annotations

import getpass
import json
from datetime import datetime
from typing import TYPE_CHECKING

import typer

from jobs.commands import DATABASE_URL

if TYPE_CHECKING:
    from serving.store.keys import KeyInfo

keys_app = typer.Typer(
    help="API keys of the scoring API (doudi serve): role, area, expiry; stored hashed.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M")


def _width(text: str) -> int:
    """Columns a terminal gives `text` (CJK characters take two)."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _area(info: KeyInfo) -> str:
    return ",".join(info.area) or "province"


@keys_app.command("create")
def create_command(
    role: str = typer.Option(
        ..., "--role", help="platform (whole province), county, township or analyst "
        "(whole province, pseudonymised scores and reasons only)."),
    area: list[str] = typer.Option(
        [], "--area", help="A 6-digit county code (county keys) or 9-digit township code "
        "(township keys); repeat for several. None for platform and analyst keys."),
    expires_days: int = typer.Option(
        90, "--expires-days", help="Days until the key expires (1-730)."),
    label: str = typer.Option(
        ..., "--label", help="Whose key this is (an office, a system; shown by keys list)."),
    database_url: str | None = DATABASE_URL,
) -> None:
    """Create a key; it is printed once.

    The key goes to stdout, alone (for scripts); what it is, to stderr. Only its hash is
    stored, so it cannot be shown again: a lost key is revoked and replaced."""
    from doudi.months import Month
    from doudi.settings import Settings
    from features.divisions import division_names
    from serving.store import open_store
    from serving.store.keys import create_key

    with open_store(database_url) as store:
        info, key = create_key(store, role=role, label=label, area=area,
                               expires_days=expires_days, created_by=getpass.getuser())
    names = division_names(Settings().warehouse_dir, Month.today())
    shown = [f"{c} {names[c]}" if c in names else c for c in info.area]
    unknown = [c for c in info.area if names and c not in names]
    typer.echo(
        f"doudi: created API key {info.key_id}: role {info.role}, area "
        f"{'; '.join(shown) or 'province'}, label {info.label!r}, expires "
        f"{_when(info.expires_at)} UTC. The key follows on stdout, shown this once:",
        err=True,
    )
    if unknown:
        typer.echo(
            f"doudi: warning: the warehouse's divisions have no {', '.join(unknown)}: "
            "this key sees no household there",
            err=True,
        )
    typer.echo(key)


@keys_app.command("list")
def list_command(
    fmt: str = typer.Option("table", "--format", help="table or json."),
    database_url: str | None = DATABASE_URL,
) -> None:
    """List the keys (never a key or its hash).

    Id, role, area, label, created, expires, revoked, last used and state."""
    from doudi.errors import UserError
    from serving.store import open_store
    from serving.store.keys import list_keys

    if fmt not in ("table", "json"):
        raise UserError(f"--format {fmt}: expected table or json")
    with open_store(database_url) as store:
        keys = list_keys(store)
        now = store.now()
    if fmt == "json":
        typer.echo(json.dumps([
            {"key_id": k.key_id, "role": k.role, "area": list(k.area), "label": k.label,
             "created_by": k.created_by, "created_at": k.created_at.isoformat(),
             "expires_at": k.expires_at.isoformat(),
             "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
             "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
             "state": k.state(now)}
            for k in keys], ensure_ascii=False, indent=1))
        return
    if not keys:
        typer.echo("no API keys yet (doudi keys create --role ... --label ...)")
        return
    header = ["key_id", "role", "area", "label", "created (UTC)", "expires", "revoked",
              "last used", "state"]
    rows = [[k.key_id, k.role, _area(k), k.label, _when(k.created_at), _when(k.expires_at),
             _when(k.revoked_at), _when(k.last_used_at), k.state(now)] for k in keys]
    widths = [max(_width(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    for line in [header, *rows]:
        typer.echo("  ".join(str(c) + " " * (w - _width(str(c)))
                             for c, w in zip(line, widths, strict=True)).rstrip())


@keys_app.command("revoke")
def revoke_command(
    key_id: str = typer.Argument(..., help="The key's id (doudi keys list)."),
    database_url: str | None = DATABASE_URL,
) -> None:
    """Revoke a key; servers refuse it (401) within seconds.

    A running server trusts a checked key for serving.access.KEY_CACHE_SECONDS (5 s)."""
    from serving.access import KEY_CACHE_SECONDS
    from serving.store import open_store
    from serving.store.keys import revoke_key

    with open_store(database_url) as store:
        info, revoked = revoke_key(store, key_id)
    if revoked:
        typer.echo(f"doudi: revoked API key {info.key_id} ({info.role}, {info.label!r}); "
                   f"servers refuse it within {KEY_CACHE_SECONDS:g} s")
    else:
        typer.echo(f"doudi: API key {info.key_id} was already revoked "
                   f"({_when(info.revoked_at)} UTC)")
