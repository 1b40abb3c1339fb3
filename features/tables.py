"""Feature, label, training and scoring tables: counties in parallel, months in one read.

Each county is one task (`_county_task`): it reads the county's rows once and
computes every requested as-of month. Tasks run in a process pool of
`settings.workers` (forked processes; results come back as frames), or with
`settings.engine == "spark"` as Spark tasks (`features/spark.py`): same frame.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from doudi.contract import FEED_NAMES
from doudi.errors import UserError
from doudi.months import Month
from doudi.settings import Settings
from doudi.warehouse import data_files
from features.asof import counties, month_range
from features.build import county_features, output_columns
from features.county import load_county
from features.labels import LABEL_COLUMNS, LABEL_FEEDS, county_labels

log = logging.getLogger(__name__)
Task = Literal["features", "labels", "training", "scoring"]
SAMPLE_WEIGHT = "sample_weight"
# The negative sample's hash key (16 bytes, fixed): the same rows are kept on every engine and
# every rerun. Keys are already keyed pseudonyms, so the choice reveals nothing.
_SAMPLE_HASH_KEY = "doudi-neg-sample"


def sample_negatives(table: pd.DataFrame, rate: float) -> pd.DataFrame:
    """Every positive row and each negative with probability `rate` (a hash of household and
    as-of month, so deterministic); kept negatives carry `sample_weight` 1/rate, positives 1.
    Weighted sums over the sample estimate those over `table` without bias."""
    if not 0 < rate <= 1:
        raise ValueError(f"negative sampling rate {rate} is not in (0, 1]")
    positive = table["label"].to_numpy() == 1
    ids = pd.DataFrame({"household_key": table["household_key"].astype(str),
                        "as_of": pd.to_datetime(table["as_of"]).dt.strftime("%Y-%m")})
    hashed = pd.util.hash_pandas_object(ids, index=False, hash_key=_SAMPLE_HASH_KEY)
    uniform = (hashed.to_numpy() >> np.uint64(11)).astype(np.float64) / float(2 ** 53)
    keep = positive | (uniform < rate)
    out = table[keep].reset_index(drop=True)
    out[SAMPLE_WEIGHT] = np.where(positive[keep], 1.0, 1.0 / rate)
    return out


def _county_task(
    warehouse: Path, county: str, months: list[date], settings: Settings, task: Task,
    known_by: date | None, negative_rate: float = 1.0,
) -> pd.DataFrame:
    """All requested months for one county (a pure function of the warehouse); training
    rows down-sampled here (`sample_negatives`) when `negative_rate` < 1, so only the sample
    ever leaves the worker or executor."""
    upto = max(known_by or months[-1], months[-1])
    history = load_county(warehouse, county, months[0], upto,
                          feeds=LABEL_FEEDS if task == "labels" else FEED_NAMES)
    frames = []
    for as_of in months:
        if task == "labels":
            frames.append(county_labels(history, as_of, known_by or upto,
                                        settings.horizon_months))
            continue
        feats = county_features(history, as_of, settings)
        if task == "features":
            frames.append(feats)
            continue
        labels = county_labels(history, as_of, known_by or as_of, settings.horizon_months)
        merged = feats.merge(labels.drop(columns="as_of"), on="household_key", how="left",
                             validate="one_to_one")
        merged = merged[merged["in_scope"].to_numpy()].drop(columns="in_scope")
        if task == "scoring":
            merged = merged.drop(columns=list(LABEL_COLUMNS))
        elif negative_rate < 1.0:
            merged = sample_negatives(merged, negative_rate)
        frames.append(merged)
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["as_of", "household_key"], kind="stable", ignore_index=True)


WATCHDOG_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent: int, pdeathsig: bool) -> None:
    """Pool worker initializer: exit as soon as `parent` is gone.

    Linux: the kernel sends SIGKILL when the parent dies (`PR_SET_PDEATHSIG`). It fires
    when the *thread* that forked the worker ends, so only for pools made in the main
    thread (the CLI); a parent-pid watchdog thread covers the rest and other systems.
    """
    if pdeathsig and sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_SECONDS)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="doudi-parent-watchdog", daemon=True).start()


def _run(
    warehouse: Path, months: list[date], settings: Settings, task: Task,
    known_by: date | None = None, county: str | None = None, negative_rate: float = 1.0,
) -> pd.DataFrame:
    warehouse = Path(warehouse)
    if negative_rate < 1.0 and task != "training":
        raise ValueError(f"negative sampling applies to training tables, not {task}")
    empty = _empty(task, sampled=negative_rate < 1.0)
    todo = [county] if county else counties(warehouse)
    if settings.engine == "spark":
        from features.spark import run_counties  # pyspark only on this path

        log.info("features: %s for %d month(s), %d counties, on spark", task, len(months),
                 len(todo))
        task_fn = partial(_county_task, warehouse, months=months, settings=settings,
                          task=task, known_by=known_by, negative_rate=negative_rate)
        frame = run_counties(todo, task_fn, list(empty.columns), settings)
        return empty if frame is None else frame
    workers = min(settings.workers, len(todo))
    log.info("features: %s for %d month(s), %d counties, %d workers", task, len(months),
             len(todo), workers)
    if workers <= 1:
        parts = [_county_task(warehouse, c, months, settings, task, known_by, negative_rate)
                 for c in todo]
    else:
        # fork: no per-task import cost and no `if __name__ == "__main__"` trap for callers'
        # scripts. Safe here because features never keeps a DuckDB connection (and its
        # threads) open between calls; spawn where fork does not exist.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        # Workers die with this process (a kill -9 of it left forked workers waiting on
        # their task queue for 22 minutes, holding its open files and the workspace lock).
        own_thread = threading.current_thread() is threading.main_thread()
        with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                 initializer=_die_with_parent,
                                 initargs=(os.getpid(), own_thread)) as pool:
            futures = [pool.submit(_county_task, warehouse, c, months, settings, task, known_by,
                                   negative_rate)
                       for c in todo]
            parts = [fut.result() for fut in futures]
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty
    # Counties in code order, each sorted by (as_of, household_key): deterministic without a
    # global sort (which would copy the whole table once more).
    return pd.concat(parts, ignore_index=True)


def _empty(task: Task, sampled: bool = False) -> pd.DataFrame:
    if task == "labels":
        return pd.DataFrame(columns=["household_key", "as_of", "in_scope", *LABEL_COLUMNS])
    columns = output_columns()
    if task == "training":
        columns = [*columns, *LABEL_COLUMNS, *([SAMPLE_WEIGHT] if sampled else [])]
    return pd.DataFrame(columns=columns)


# -- public API --------------------------------------------------------------------------
def build_features(
    warehouse: Path, as_of: Month, settings: Settings, county: str | None = None,
) -> pd.DataFrame:
    """Features of every roster household at month end `as_of` (keys, features, groups)."""
    return _run(warehouse, [as_of.end], settings, "features", county=county)


def build_features_range(
    warehouse: Path, first: Month, last: Month, settings: Settings,
) -> pd.DataFrame:
    """Features for every month end from `first` to `last` (one read per county)."""
    return _run(warehouse, month_range(first, last), settings, "features")


def build_labels(
    warehouse: Path, as_of: Month, settings: Settings, known_by: Month | None = None,
) -> pd.DataFrame:
    """Scope and labels at `as_of` from monitoring events reported by `known_by`
    (default: everything in the warehouse)."""
    known = known_by.end if known_by is not None else date(9999, 12, 31)
    return _run(warehouse, [as_of.end], settings, "labels", known_by=known)


def mature_months(model_month: Month, settings: Settings, from_month: Month) -> list[date]:
    """As-of months T from `from_month` with T + horizon + allowance <= the model month."""
    last = model_month - settings.horizon_months - settings.label_allowance_months
    if last < from_month:
        raise UserError(
            f"no mature as-of month between {from_month} and model month {model_month} "
            f"(horizon {settings.horizon_months} + allowance "
            f"{settings.label_allowance_months} months)")
    return month_range(from_month, last)


def first_roster_month(warehouse: Path) -> Month:
    """The first reported month of the households roster (where training history starts)."""
    files = data_files(Path(warehouse), "households")  # a year file's name: its first month
    if not files:
        raise UserError(f"no households rows in the warehouse {warehouse} (run ingest first)")
    return min(Month.parse(f.first, what="partition") for f in files)


def training_table(
    warehouse: Path, model_month: Month, settings: Settings, from_month: Month | None = None,
) -> pd.DataFrame:
    """In-scope households x mature as-of months: features, labels, group columns.

    Only rows reported by the model month are read; features at T only use rows
    reported by T. `from_month` defaults to the first month with roster rows. With
    `settings.training_negative_rate` < 1 the negatives are down-sampled in each county's
    task and a `sample_weight` column is added (`sample_negatives`).
    """
    first = from_month or first_roster_month(warehouse)
    months = mature_months(model_month, settings, first)
    return _run(warehouse, months, settings, "training", known_by=model_month.end,
                negative_rate=settings.training_negative_rate)


def scoring_table(warehouse: Path, as_of: Month, settings: Settings) -> pd.DataFrame:
    """In-scope households at `as_of` with their features (and group columns)."""
    return _run(warehouse, [as_of.end], settings, "scoring")


def labels_table(
    warehouse: Path, months: list[Month], settings: Settings, known_by: Month,
) -> pd.DataFrame:
    """Roster households x `months`: scope and labels from monitoring events reported by
    `known_by` (only the feeds labels read: cheap next to features)."""
    return _run(warehouse, sorted({m.end for m in months}), settings, "labels",
                known_by=known_by.end)


def labelled_table(
    warehouse: Path, months: list[Month], settings: Settings, known_by: Month,
) -> pd.DataFrame:
    """In-scope households x `months` (any, in one read per county): features, group
    columns and labels from monitoring events reported by `known_by`; a month whose
    horizon + allowance has not passed by then has partial labels (monitoring/)."""
    ends = sorted({m.end for m in months})
    return _run(warehouse, ends, settings, "training", known_by=known_by.end)
