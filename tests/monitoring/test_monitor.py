"""`doudi monitor` on the shared monthly workspace, the recommendation's rules, and the
monthly job surviving a failed monitor."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from doudi import registry
from doudi.months import Month
from doudi.settings import Settings
from monitoring import monitor
from tests.jobs.cli import doudi, refused
from tests.serving.test_api import settings  # noqa: F401 - the shared monthly workspace

MONTH = Month.parse("2025-06")


def _env(made: Settings) -> dict[str, str]:
    return {"store": made.tracking_uri()}


def test_the_cli_prints_a_recommendation_and_writes_the_report(
    settings: Settings,  # noqa: F811
) -> None:
    done = doudi(settings.home, "monitor", "--as-of", "2025-06", **_env(settings))
    assert done.code == 0, (done.out, done.err)
    assert "recommendation: " in done.out
    assert ("retrain now" in done.out) != ("no retraining needed" in done.out)
    json_path, csv_path = monitor.report_paths(settings, MONTH)
    written = json.loads(json_path.read_text(encoding="utf-8"))
    assert written["as_of"] == "2025-06"
    assert written["model_version"] == f"{registry.workspace(settings).model_name}/1"
    assert written["recommendation"]["line"] in done.out
    features = pd.read_csv(csv_path, encoding="utf-8-sig")
    assert list(features.columns) == monitor.FEATURE_DRIFT_COLUMNS
    assert len(features) == len(written["feature_drift"]) > 50
    perf = pd.DataFrame(written["performance"])
    # every month of the window has an estimated row; the as-of month has no realised one
    assert set(perf[perf["kind"] == "estimated"]["month"]) >= {"2025-06", "2024-09"}
    assert "2025-06" not in set(perf[perf["kind"] == "realised"]["month"])
    bands = pd.DataFrame(written["calibration_bands"])
    final = bands[bands["labels_final"]]["month"].unique().tolist()
    assert final == ["2024-07", "2024-08", "2024-09"]  # 2025-06 - (6 + 3) and two before
    client = registry.client(settings.tracking_uri())
    experiment = client.get_experiment_by_name(monitor.experiment_name(settings))
    runs = client.search_runs([experiment.experiment_id])
    assert runs and runs[0].data.tags["as_of"] == "2025-06"
    assert "score_psi" in runs[0].data.metrics
    as_json = doudi(settings.home, "monitor", "--as-of", "2025-06", "--format", "json",
                    **_env(settings))
    assert json.loads(as_json.out)["recommendation"] == written["recommendation"]
    refused(doudi(settings.home, "monitor", "--as-of", "2099-01", **_env(settings)),
            "2099-01 is in the future")
    refused(doudi(settings.home, "monitor", "--as-of", "2025-06", "--format", "xml",
                  **_env(settings)), "--format xml")


def test_the_report_matches_the_interface(settings: Settings) -> None:  # noqa: F811
    report = monitor.run_monitor(settings, MONTH)
    assert list(report.township_alerts.columns) == monitor.TOWNSHIP_COLUMNS
    towns = report.township_alerts
    assert towns["in_scope"].sum() > 0 and (towns["township_name"] != "").all()
    assert set(report.calibration_bands["band"]) == {"top 1%", "top 5%", "top 10%", "all"}
    assert {"month", "n", "predicted", "observed", "ratio", "labels_final"} <= set(
        report.calibration_bands.columns)
    assert set(report.performance["kind"]) == {"estimated", "realised"}
    assert report.score_band in {"stable", "moderate", "major"}
    json.dumps(report.to_json())  # plain JSON: no NaN, no numpy types
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in r)
               for r in report.recommendation.reasons)


def test_without_a_champion_exit_2_in_one_line(
    settings: Settings, tmp_path: Path,  # noqa: F811
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    store = f"sqlite:///{home / 'mlflow.db'}"
    registry.client(store)  # an empty tracking store (created before: MLflow logs that)
    done = doudi(home, "monitor", "--as-of", "2025-06", store=store,
                 DOUDI_PSEUDONYM_KEY_FILE=str(settings.key_file))
    refused(done, "no champion")


def _report(**changes: object) -> monitor.MonitorReport:
    drift = pd.DataFrame({"feature": ["a", "b", "c"], "psi": [0.01, 0.3, 0.02],
                          "band": ["stable", "major", "stable"]})
    bands = pd.DataFrame({"band": ["top 5%"], "month": ["2024-09"], "n": [10],
                          "predicted": [0.20], "observed": [0.21], "ratio": [1.05],
                          "labels_final": [True], "in_sample": [False]})
    perf = pd.DataFrame({"month": ["2024-09", "2025-06"], "kind": ["estimated"] * 2,
                         "metric": ["precision_at_capacity"] * 2, "value": [0.20, 0.19],
                         "label_share": [1.0, 0.0]})
    fields: dict[str, object] = {
        "as_of": MONTH, "model_version": "m/1", "reference": "r", "feature_drift": drift,
        "score_psi": 0.02, "score_band": "stable", "township_alerts": pd.DataFrame(),
        "calibration_bands": bands, "performance": perf,
        "recommendation": monitor.Recommendation(False, ())}
    fields.update(changes)
    return monitor.MonitorReport(**fields)  # type: ignore[arg-type]


def test_a_quiet_month_needs_no_retraining() -> None:
    got = monitor.recommend(_report(), MONTH, Settings())
    assert got == monitor.Recommendation(False, ())
    assert "no retraining needed" in got.line()


@pytest.mark.parametrize(("changes", "needle"), [
    ({"score_psi": 0.3}, "score drift"),
    ({"feature_drift": pd.DataFrame({"feature": list("abc"), "psi": [0.3, 0.4, 0.5],
                                     "band": ["major"] * 3})}, "3 个特征"),
    ({"calibration_bands": pd.DataFrame({
        "band": ["top 5%"], "month": ["2024-09"], "n": [10], "predicted": [0.247],
        "observed": [0.195], "ratio": [0.195 / 0.247], "labels_final": [True],
        "in_sample": [False]})}, "top-5% band"),
    ({"performance": pd.DataFrame({
        "month": ["2024-09", "2025-06"], "kind": ["estimated"] * 2,
        "metric": ["precision_at_capacity"] * 2, "value": [0.20, 0.15],
        "label_share": [1.0, 0.0]})}, "fell 25%"),
])
def test_each_check_alone_recommends_retraining(changes: dict[str, object], needle: str) -> None:
    got = monitor.recommend(_report(**changes), MONTH, Settings())
    assert got.retrain and len(got.reasons) == 1 and needle in got.reasons[0], got


def test_an_old_champion_is_due() -> None:
    got = monitor.recommend(_report(), MONTH - 2, Settings(retrain_every_months=2))
    assert got.retrain and "2 month(s)" in got.reasons[0]


def test_in_sample_calibration_is_not_held_against_the_model() -> None:
    bands = pd.DataFrame({"band": ["top 5%"], "month": ["2024-09"], "n": [10],
                          "predicted": [0.2], "observed": [0.4], "ratio": [2.0],
                          "labels_final": [True], "in_sample": [True]})
    assert not monitor.recommend(_report(calibration_bands=bands), MONTH, Settings()).retrain


def test_a_failed_monitor_leaves_the_month_and_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.monthly import monitor_after_scoring

    def broken(_settings: Settings, _as_of: Month) -> None:
        raise RuntimeError("disk full\nsecond line")

    monkeypatch.setattr(monitor, "monitor_month", broken)
    line, warning = monitor_after_scoring(Settings(), MONTH)
    assert line == ""
    assert warning.startswith("monitor failed (RuntimeError: disk full)")
    assert "doudi monitor --as-of 2025-06" in warning and "\n" not in warning
