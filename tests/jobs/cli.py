"""Run `doudi ARGS` exactly as `.venv/bin/doudi` does (`jobs.cli.main`), in this process."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock


@dataclass
class Result:
    code: int
    out: str
    err: str


def doudi(home: Path, *args: str, store: str | None = None, **extra_env: str) -> Result:
    """`doudi ARGS` with DOUDI_HOME=home and `store` as the tracking store (default: a
    SQLite store inside `home`)."""
    from jobs.cli import main

    env = {"DOUDI_HOME": str(home), "DOUDI_WORKERS": "1",
           "DOUDI_MLFLOW_TRACKING_URI": store or f"sqlite:///{home / 'mlflow.db'}",
           **extra_env}
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with mock.patch.dict(os.environ, env), mock.patch.object(sys, "argv", ["doudi", *args]), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as done:
            code = int(done.code or 0)
    return Result(code, out.getvalue(), err.getvalue())


def refused(result: Result, *needles: str) -> str:
    """A one-line refusal: exit 2, one stderr line holding every needle, no traceback."""
    assert result.code == 2, (result.code, result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("doudi: error: "), result.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
