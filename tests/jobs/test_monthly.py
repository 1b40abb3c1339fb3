"""`doudi monthly` end to end on the generated small province: ingest -> train -> score ->
alerts -> township exports; a second run changes nothing."""

from pathlib import Path

import pandas as pd
import pytest

from doudi.commands.monthly_cmd import run_monthly
from doudi.settings import Settings
from serving.store import list_alerts, open_store

AS_OF = "2025-06"  # the small world's last month


@pytest.fixture(scope="module")
def monthly_twice(small_world: Path, tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("monthly")
    settings = Settings(
        home=home, mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}", workers=1
    )
    first = run_monthly(settings, AS_OF, small_world / "raw")
    with open_store(settings=settings) as store:
        after_first = list_alerts(store)
    second = run_monthly(settings, AS_OF, small_world / "raw")
    with open_store(settings=settings) as store:
        after_second = list_alerts(store)
    return settings, first, second, after_first, after_second


def test_first_run_does_the_whole_job(monthly_twice) -> None:
    _, first, _, alerts, _ = monthly_twice
    assert first.files_ingested > 0 and first.rows_added > 0
    assert first.model_version == "doudi-risk/1"
    assert first.scored > 0 and first.alerts_created == len(alerts) > 0
    # every alert went out in its township's sheet and is dispatched
    assert set(alerts["status"]) == {"dispatched"}
    assert sum(n for _, n, _ in first.exports) == alerts["household_key"].nunique()
    for township, _, workbook in first.exports:
        assert Path(workbook).is_file()
        sheet = pd.read_excel(workbook, dtype=str)
        assert sheet["村代码"].str[:9].eq(township).all()


def test_second_run_gives_the_same_alerts(monthly_twice) -> None:
    _, _, second, first_alerts, second_alerts = monthly_twice
    assert second.files_ingested == 0 and second.rows_added == 0
    assert "already registered" in second.trained or "not due" in second.trained
    assert second.alerts_created == 0 and not second.exports
    columns = ["household_key", "as_of", "tier", "risk_types", "model_version"]
    pd.testing.assert_frame_equal(
        first_alerts[columns].reset_index(drop=True),
        second_alerts[columns].reset_index(drop=True),
    )


def test_chain_of_help_reports_are_written(monthly_twice) -> None:
    _, first, _, _, _ = monthly_twice
    folder = Path(first.report_dir)
    duplicates = pd.read_csv(folder / "possible_duplicate_assistance.csv")
    missed = pd.read_csv(folder / "possible_omissions.csv")
    # nobody has been visited yet: no verdict, so no confirmed hardship to check
    assert len(duplicates) == first.possible_duplicates == 0
    assert len(missed) == first.possible_omissions == 0
    assert {"alert_id", "household_key", "department"} <= set(duplicates.columns)
