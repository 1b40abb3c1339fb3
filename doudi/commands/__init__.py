"""CLI sub-commands, one module each; `register_all` attaches them to the app."""

from __future__ import annotations

import importlib
import pkgutil

import typer

# `--allow-undelivered` on monthly, train, score and features (docs/operations.md).
ALLOW_UNDELIVERED_HELP = (
    "Run for a month after the latest delivered month, on the data delivered so far "
    "(a deliberate rerun; a month in the future is always refused).")


def register_all(app: typer.Typer) -> None:
    """Every module here exposing `register(app)` adds its command(s)."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)
