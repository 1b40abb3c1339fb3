"""The prediction log: every in-scope household's margin and risk as scored each month.

`doudi score` (and so `doudi monthly`) writes <home>/predictions/<YYYY-MM>.parquet, one row
per scored household: household_key (pseudonym), margin, risk, model_version, model_as_of.
The month's file is replaced whole (atomic), so rescoring a month leaves one log of what
was served last. The monitor (monitoring/monitor.py) reads it instead of re-scoring the
month: the same booster on the same point-in-time features gives the same margins, so it
is a record of what caseworkers were sent and a cache at once. No raw identifier in it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from doudi.months import Month
from doudi.settings import Settings

PREDICTION_COLUMNS = ["household_key", "margin", "risk", "model_version", "model_as_of"]


def prediction_path(settings: Settings, month: Month) -> Path:
    return settings.predictions_dir / f"{month}.parquet"


def write_predictions(settings: Settings, month: Month, scored: pd.DataFrame) -> Path:
    """The month's log from `serving.scoring.score`'s frame (its columns), replaced whole."""
    path = prediction_path(settings, month)
    # who is at risk of poverty is as private as the reports: 0600 files in a 0700 folder
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    frame = pd.DataFrame({
        "household_key": scored["household_key"].astype(str).to_numpy(),
        "margin": scored["margin"].to_numpy(dtype="float64"),
        "risk": scored["risk"].to_numpy(dtype="float64"),
        "model_version": scored["model_version"].astype(str).to_numpy(),
        "model_as_of": scored["model_as_of"].astype(str).to_numpy(),
    }, columns=PREDICTION_COLUMNS)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.touch(mode=0o600)
    frame.to_parquet(partial, index=False)
    partial.replace(path)
    return path


def read_predictions(settings: Settings, month: Month) -> pd.DataFrame | None:
    """The month's log, or None when the month was never scored here."""
    path = prediction_path(settings, month)
    if not path.is_file():
        return None
    return pd.read_parquet(path, columns=PREDICTION_COLUMNS)
