"""CLI sub-commands, one module each; `register_all` attaches them to the app."""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import Any

import typer

# Options several commands share, declared once (typer reads them as parameter defaults).
# `--allow-undelivered` on monthly, train, score and features (docs/operations.md).
ALLOW_UNDELIVERED: Any = typer.Option(
    False, "--allow-undelivered",
    help="Run for a month after the latest delivered month, on the data delivered so far "
    "(a deliberate rerun; a month in the future is always refused).")
# `--database-url` on every command that reads or writes the alert store.
DATABASE_URL: Any = typer.Option(
    None, "--database-url",
    help="Alert store URL (default: DOUDI_DATABASE_URL, else <home>/alerts.db).")


# Commands that do not write the workspace, so they do not take its lock (doudi/locking.py):
# every other command does, new ones included, until listed here. `serve` only reads (and
# runs for days); `simulate` writes its --out folder, not a workspace; `features --out`
# writes one file of the operator's choosing. `keys` write one row of the alert store in one
# transaction and touch no workspace file: revoking a key must never wait for a monthly job.
READ_ONLY_COMMANDS = frozenset({
    "validate", "features", "settings", "serve", "simulate", "alerts list", "alerts status",
    "models list", "keys create", "keys list", "keys revoke",
})
WAIT_HELP = ("If another command holds this workspace's lock, wait up to this many seconds "
             "for it (default 0: exit 2 at once, naming the holder).")
_LOCKED = "__doudi_locked__"


def register_all(app: typer.Typer) -> None:
    """Every module here exposing `register(app)` adds its command(s); then every command
    that writes gets the workspace lock and `--wait` (`with_workspace_lock`)."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)
    lock_writers(app)


def command_paths(app: typer.Typer, prefix: str = "") -> list[tuple[str, Any]]:
    """(`"group command"`, CommandInfo) for every command of `app`, sub-apps included."""
    from typer.main import get_command_name

    found = []
    for info in app.registered_commands:
        if info.callback is None:
            continue
        name = info.name or get_command_name(info.callback.__name__)
        found.append((f"{prefix}{name}", info))
    for group in app.registered_groups:
        if group.typer_instance is not None:
            found += command_paths(group.typer_instance, f"{prefix}{group.name} ")
    return found


def lock_writers(app: typer.Typer) -> None:
    """Wrap every command not in READ_ONLY_COMMANDS in the workspace lock (once)."""
    for path, info in command_paths(app):
        if path not in READ_ONLY_COMMANDS and not getattr(info.callback, _LOCKED, False):
            info.callback = with_workspace_lock(info.callback, path)


def with_workspace_lock(func: Callable[..., Any], command: str) -> Callable[..., Any]:
    """`func` (a typer command) run under `DOUDI_HOME`'s lock, with a `--wait` option."""

    @functools.wraps(func)
    def locked(*args: Any, wait: float = 0.0, **kwargs: Any) -> Any:
        from doudi.errors import UserError
        from doudi.locking import workspace_lock
        from doudi.settings import Settings

        if wait < 0:
            raise UserError(f"--wait {wait:g}: give a number of seconds >= 0")

        def note(line: str) -> None:
            typer.echo(f"doudi: {line}", err=True)

        with workspace_lock(Settings().home, command, wait=wait, on_stale=note):
            return func(*args, **kwargs)

    # typer reads the parameters from the signature: the command's own plus --wait.
    signature = inspect.signature(func, eval_str=True)
    wait = inspect.Parameter("wait", inspect.Parameter.KEYWORD_ONLY, annotation=float,
                             default=typer.Option(0.0, "--wait", help=WAIT_HELP))
    locked.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), wait])
    locked.__annotations__ = {**func.__annotations__, "wait": float}
    setattr(locked, _LOCKED, True)
    return locked
