"""Months are real months: `--as-of` is parsed once (YYYY-MM only), and a month in the future
or after the latest delivery is refused in one line (exit 2) with nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from doudi.months import Month
from doudi.settings import Settings
from tests.jobs.cli import doudi, refused

LATEST = Month.parse("2025-06")  # the small world's last delivered month
AFTER = str(LATEST + 1)
FUTURE = str(Month.today() + 1)


@pytest.fixture(scope="module")
def ingested(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with the small world ingested (no model, no alerts): read-only here."""
    import ingest

    home = tmp_path_factory.mktemp("ingested")
    ingest.ingest(small_world / "raw", Settings(home=home, workers=1))
    return home


def files(home: Path) -> dict[str, tuple[int, int]]:
    """Every file under `home` with its size and modification time."""
    return {str(p.relative_to(home)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in home.rglob("*") if p.is_file()}


def copy(home: Path, tmp_path: Path) -> Path:
    mine = tmp_path / "home"
    shutil.copytree(home, mine)
    return mine


def test_monthly_refuses_a_future_month_before_reading_anything(
    small_world: Path, tmp_path: Path,
) -> None:
    home = tmp_path / "fresh"
    line = refused(doudi(home, "monthly", str(small_world / "raw"), "--as-of", FUTURE),
                   f"--as-of {FUTURE} is in the future (this month is {Month.today()}")
    assert "--allow-undelivered" not in line  # no override for the future
    again = doudi(home, "monthly", str(small_world / "raw"), "--as-of", FUTURE,
                  "--allow-undelivered")
    refused(again, "is in the future")
    assert not home.exists() or not any(home.iterdir())  # not even ingested


def test_monthly_refuses_a_month_after_the_delivery_after_ingesting_it(
    ingested: Path, small_world: Path, tmp_path: Path,
) -> None:
    home = copy(ingested, tmp_path)
    refused(doudi(home, "monthly", str(small_world / "raw"), "--as-of", AFTER),
            f"--as-of {AFTER} is after the latest delivered month {LATEST}",
            "--allow-undelivered")
    # nothing trained, scored, stored, exported or reported
    assert not (home / "alerts.db").exists() and not (home / "mlflow.db").exists()
    assert not (home / "exports").exists()
    assert not list((home / "reports").glob("monthly-*"))


def test_a_day_is_not_a_month(ingested: Path, small_world: Path, tmp_path: Path) -> None:
    home = copy(ingested, tmp_path)
    before = files(home)
    refused(doudi(home, "monthly", str(small_world / "raw"), "--as-of", "2025-06-15"),
            "--as-of 2025-06-15: not a month; use YYYY-MM (2025-06)")
    for command in ("score", "train", "features"):
        refused(doudi(home, command, "--as-of", "2025-06-15"), "not a month; use YYYY-MM")
    refused(doudi(home, "features", "--as-of", "2025-06", "--from", "0000-01"),
            "--from 0000-01: year 0000 is outside 1900-2999")
    assert files(home) == before


@pytest.mark.parametrize("command", ["score", "train", "features"])
def test_stages_refuse_future_and_undelivered_months(
    command: str, ingested: Path, tmp_path: Path,
) -> None:
    home = copy(ingested, tmp_path)
    before = files(home)
    refused(doudi(home, command, "--as-of", FUTURE), f"--as-of {FUTURE} is in the future",
            f"the latest delivered month is {LATEST}")
    refused(doudi(home, command, "--as-of", AFTER),
            f"--as-of {AFTER} is after the latest delivered month {LATEST}")
    assert files(home) == before  # no alert store, no model, no report: nothing


def test_allow_undelivered_is_a_deliberate_pass(ingested: Path, tmp_path: Path) -> None:
    home = copy(ingested, tmp_path)
    out = tmp_path / "f.parquet"
    done = doudi(home, "features", "--as-of", AFTER, "--allow-undelivered", "--out", str(out))
    assert done.code == 0, done.err
    import pandas as pd

    assert {f"{d:%Y-%m}" for d in pd.read_parquet(out)["as_of"]} == {AFTER}
    # score gets past the month check and stops at the next thing missing: the model
    done = doudi(home, "score", "--as-of", AFTER, "--allow-undelivered")
    line = done.err.strip().splitlines()[-1]  # (MLflow logs its store's creation above it)
    assert done.code == 2 and line.startswith("doudi: error: no model at "), done.err
    assert "after the latest delivered month" not in line


def test_features_on_a_delivered_month(ingested: Path, tmp_path: Path) -> None:
    home = copy(ingested, tmp_path)
    out = tmp_path / "f.parquet"
    done = doudi(home, "features", "--as-of", str(LATEST), "--from", str(LATEST - 1),
                 "--out", str(out))
    assert done.code == 0, done.err
    assert "2 month(s)" in done.out
