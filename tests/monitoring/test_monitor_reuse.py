"""The monitor reuses what earlier runs kept, and only when it is still true: the month's
prediction log (written by `doudi score`) and the champion's reference profile (kept by the
first monitor). Each is proved used (a tampered copy changes the answer) and proved
checked (a log from another model, or a warehouse file changed under the reference, is
not used), and the reused answer equals the one computed from scratch."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from doudi.months import Month
from doudi.settings import Settings
from doudi.warehouse import data_files, fingerprint_through
from monitoring import monitor
from serving.predictions import prediction_path, read_predictions, write_predictions
from tests.serving.test_api import settings  # noqa: F401 - the shared monthly workspace

MONTH = Month.parse("2025-06")
LOGGED = [Month.parse("2024-08"), Month.parse("2025-02"), MONTH]


@pytest.fixture(scope="module")
def copy(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:  # noqa: F811
    """A copy of the shared workspace (this module writes logs and the cache), with a
    prediction log for three months of the window, from `doudi score`'s own path."""
    from serving.scoring import score_month

    home = tmp_path_factory.mktemp("reuse") / "home"
    shutil.copytree(settings.home, home)
    made = settings.model_copy(update={"home": home})
    shutil.rmtree(made.predictions_dir, ignore_errors=True)
    shutil.rmtree(made.cache_dir, ignore_errors=True)
    for month in LOGGED:
        score_month(made, month)
    return made


def _json(report: monitor.MonitorReport) -> str:
    return json.dumps(report.to_json(), sort_keys=True)


def _profile_path(made: Settings) -> Path:
    return next((made.cache_dir / "monitor").glob("reference-*.json"))


def _feature_months(caplog: pytest.LogCaptureFixture) -> str:
    lines = [r.getMessage() for r in caplog.records if "features of" in r.getMessage()]
    assert lines, "the monitor did not say which months it read features of"
    return lines[-1].split("features of ")[1].split(";")[0]


@pytest.fixture(scope="module")
def from_scratch(copy: Settings) -> str:
    """The answer with neither logs nor a profile (then the profile is kept)."""
    logs = copy.home / "logs-aside"
    copy.predictions_dir.rename(logs)
    try:
        answer = _json(monitor.run_monitor(copy, MONTH))
    finally:
        logs.rename(copy.predictions_dir)
    return answer


def test_score_writes_every_scored_household_to_the_log(copy: Settings) -> None:
    from features import scoring_table

    log = read_predictions(copy, MONTH)
    assert log is not None
    table = scoring_table(copy.warehouse_dir, MONTH, copy)
    assert sorted(log["household_key"]) == sorted(table["household_key"].astype(str))
    assert log["risk"].between(0, 1).all() and log["model_version"].nunique() == 1
    assert read_predictions(copy, Month.parse("2024-01")) is None


def test_reused_logs_and_profile_give_the_answer_from_scratch(
    copy: Settings, from_scratch: str, caplog: pytest.LogCaptureFixture,
) -> None:
    assert _profile_path(copy).is_file()
    with caplog.at_level(logging.INFO, logger="monitoring.monitor"):
        reused = _json(monitor.run_monitor(copy, MONTH))
    assert reused == from_scratch
    read = _feature_months(caplog)
    # the reference (2024-07..09) comes from the profile, 2024-08 and 2025-02 from logs
    assert "2025-06" in read and "2024-08" not in read and "2025-02" not in read
    assert "2024-07" in read  # no log for it: predicted from its features


def test_a_log_is_used_and_only_the_serving_models(
    copy: Settings, from_scratch: str,
) -> None:
    month = Month.parse("2025-02")
    original = read_predictions(copy, month)
    assert original is not None
    try:
        shifted = original.assign(margin=original["margin"] + 3.0)
        write_predictions(copy, month, shifted)
        assert _json(monitor.run_monitor(copy, MONTH)) != from_scratch  # the log is read
        write_predictions(copy, month, shifted.assign(model_version="another-model/9"))
        assert _json(monitor.run_monitor(copy, MONTH)) == from_scratch  # not its model's
        write_predictions(copy, month, shifted.iloc[1:])  # a household missing: not used
        assert _json(monitor.run_monitor(copy, MONTH)) == from_scratch
    finally:
        write_predictions(copy, month, original)


def test_the_profile_is_used_until_the_reference_months_change(
    copy: Settings, from_scratch: str,
) -> None:
    monitor.run_monitor(copy, MONTH)  # make sure the profile is there
    path = _profile_path(copy)
    kept = json.loads(path.read_text(encoding="utf-8"))
    tampered = {**kept, "score": {**kept["score"],
                                  "counts": list(reversed(kept["score"]["counts"]))}}
    path.write_text(json.dumps(tampered), encoding="utf-8")
    assert _json(monitor.run_monitor(copy, MONTH)) != from_scratch  # the profile is read
    path.write_text(json.dumps(tampered), encoding="utf-8")
    # a late re-ingest rewrote a file of a reference month: the profile is recomputed
    late = _file_holding(copy, "2024-07")  # a year file once monthly compacted 2024
    os.utime(late, ns=(late.stat().st_atime_ns, late.stat().st_mtime_ns + 1_000_000))
    assert _json(monitor.run_monitor(copy, MONTH)) == from_scratch
    assert json.loads(path.read_text(encoding="utf-8"))["score"] == kept["score"]


def _file_holding(workspace: Settings, month: str) -> Path:
    """A medical file holding rows reported in `month` (a month partition or a year file)."""
    return next(f.path for f in data_files(workspace.warehouse_dir, "medical")
                if f.meets(month, month))


def test_the_fingerprint_sees_files_up_to_its_month_only(copy: Settings) -> None:
    before = fingerprint_through(copy.warehouse_dir, Month.parse("2024-09"))
    later = _file_holding(copy, "2025-03")
    os.utime(later, ns=(later.stat().st_atime_ns, later.stat().st_mtime_ns + 1_000_000))
    assert fingerprint_through(copy.warehouse_dir, Month.parse("2024-09")) == before
    earlier = _file_holding(copy, "2024-09")
    os.utime(earlier, ns=(earlier.stat().st_atime_ns, earlier.stat().st_mtime_ns + 1_000_000))
    assert fingerprint_through(copy.warehouse_dir, Month.parse("2024-09")) != before


def test_the_log_is_replaced_whole(copy: Settings) -> None:
    path = prediction_path(copy, MONTH)
    original = pd.read_parquet(path)
    write_predictions(copy, MONTH, original.iloc[:5])
    assert len(pd.read_parquet(path)) == 5
    assert not list(path.parent.glob("*.partial"))
    write_predictions(copy, MONTH, original)


def test_the_report_file_reads_back_as_written(from_scratch: str) -> None:
    saved = json.loads(from_scratch)
    again = monitor.MonitorReport.from_json(saved)
    assert json.dumps(again.to_json(), sort_keys=True) == from_scratch


def test_the_log_is_private(copy: Settings) -> None:
    path = prediction_path(copy, MONTH)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
