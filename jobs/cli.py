"""`doudi`: the single command line. Wiring only; every stage lives in its package.

Each sub-command module in `jobs.commands` imports its stage lazily, so
`doudi --help` stays fast and nothing heavy runs at import. `doudi --version` prints the
installed package's version; `--install-completion`/`--show-completion` (typer) set up
shell completion (README).
"""

from __future__ import annotations

import logging
import sys

import typer

from doudi.errors import UserError
from jobs.commands import register_all

app = typer.Typer(
    name="doudi",
    help="兜底 doudi: find rural households at risk of falling (back) into poverty, early.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
register_all(app)


def package_version() -> str:
    """The installed `doudi` distribution's version (package metadata, not a constant)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("doudi")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"doudi {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_print_version,
        is_eager=True),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main() -> None:
    try:
        app()
    except UserError as err:
        typer.secho(f"doudi: error: {err}", fg="red", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("doudi: interrupted", fg="red", err=True)
        sys.exit(130)
