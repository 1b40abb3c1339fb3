"""`doudi report`: the month's HTML page on the shared monthly workspace (a copy): every
section, one plotly.js, escaped text, no pseudonyms, MLflow, refusals, and Chromium."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import shutil
import sys
from pathlib import Path

import pytest

from doudi import registry
from doudi.months import Month
from doudi.settings import Settings
from monitoring.report import render
from monitoring.report_data import gather
from monitoring.report_sections import TITLES
from serving.store import list_alerts, open_store
from tests.jobs.cli import doudi, refused
from tests.serving.test_api import AS_OF, MONTH, settings  # noqa: F401  (the shared workspace)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
PLANTED = "<script>alert('planted')</script>"


@pytest.fixture(scope="module")
def workspace(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:  # noqa: F811
    """A copy of the shared workspace: the report writes reports/ and an MLflow run."""
    home = tmp_path_factory.mktemp("report") / "home"
    shutil.copytree(settings.home, home)
    return Settings(home=home, mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}", workers=1)


@pytest.fixture(scope="module")
def written(workspace: Settings) -> tuple[Path, str]:
    """`doudi report --as-of <month>` on the copy: the page's path and its text."""
    result = doudi(workspace.home, "report", "--as-of", AS_OF,
                   store=workspace.mlflow_tracking_uri)
    assert result.code == 0, (result.out, result.err)
    path = workspace.reports_dir / f"report-{AS_OF}.html"
    assert str(path) in result.out
    return path, path.read_text(encoding="utf-8")


def test_the_page_has_every_section_and_its_charts(written: tuple[Path, str]) -> None:
    path, html = written
    for zh, en in TITLES.values():
        assert zh in html and en in html, zh
    assert html.count('class="plotly-graph-div"') >= 8
    assert "分数 PSI score" in html  # drift from `run_monitor`, not its failure note
    assert path.stat().st_mode & 0o777 == 0o600


def test_plotly_is_inlined_once_and_nothing_is_fetched(written: tuple[Path, str]) -> None:
    html = written[1]
    assert len(re.findall(r"\* plotly\.js v\d", html)) == 1  # the library's banner
    from plotly.offline import get_plotlyjs

    # beside the library (which names CDNs it would use only when configured to), no
    # script, style or link points anywhere
    page = html.replace(get_plotlyjs(), "")
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|https?://", page)


def test_the_alert_counts_match_the_store_and_no_pseudonym_is_shown(
    workspace: Settings, written: tuple[Path, str]
) -> None:
    html = written[1]
    with open_store(settings=workspace) as store:
        alerts = list_alerts(store)
    month = alerts[alerts["as_of"] == MONTH.end]
    assert len(month) > 0
    assert f"共 {len(month):,} 条预警" in html
    tier_zh = {"red": "红色", "orange": "橙色", "yellow": "黄色"}
    for tier, n in month["tier"].value_counts().items():
        assert f"<span>{tier_zh[str(tier)]} {tier}</span><b>{n:,}</b>" in html
    assert not [key for key in alerts["household_key"] if key in html]


def test_the_page_is_logged_to_mlflow(workspace: Settings, written: tuple[Path, str]) -> None:
    from monitoring.monitor import experiment_name

    client = registry.client(workspace.tracking_uri())
    experiment = client.get_experiment_by_name(experiment_name(workspace))
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.as_of = '{AS_OF}'")
    logged = {a.path for run in runs for a in client.list_artifacts(run.info.run_id, "report")}
    assert f"report/report-{AS_OF}.html" in logged


def test_text_from_data_is_shown_escaped_never_run(workspace: Settings) -> None:
    """A division name and a model card carrying markup appear as text."""
    planted = dict.fromkeys(_township_codes(workspace), f"{PLANTED}镇")
    data = gather(workspace, MONTH, names=lambda _w, _m: planted)
    card = f"# Card {PLANTED}\n\n| a | b |\n|---|---|\n| <img src=x onerror=alert(1)> | 1 |\n"
    data = dataclasses.replace(data, champion=dataclasses.replace(data.champion, model_card=card))
    html = render(data, None, "no monitor here")
    assert "alert('planted')</script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#x27;planted&#x27;)&lt;/script&gt;镇" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "no monitor here" in html


def _township_codes(workspace: Settings) -> set[str]:
    with open_store(settings=workspace) as store:
        return set(list_alerts(store)["township_code"])


def test_a_month_without_scores_is_refused_in_one_line(workspace: Settings) -> None:
    before = Month.parse(AS_OF) + (-1)
    result = doudi(workspace.home, "report", "--as-of", str(before),
                   store=workspace.mlflow_tracking_uri)
    refused(result, f"no alerts stored for {before}", "doudi monthly")


def test_a_workspace_without_a_champion_is_refused_in_one_line(
    workspace: Settings, tmp_path: Path
) -> None:
    """The workspace's key with an empty tracking store (made first: MLflow logs that)."""
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    registry.client(empty)
    result = doudi(workspace.home, "report", "--as-of", AS_OF, store=empty)
    refused(result, "no champion")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: install Debian's "
                    "chromium to check the page as a browser renders it")
def test_chromium_renders_the_page_without_errors(written: tuple[Path, str],
                                                  tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("check_report", ROOT / "bench/check_report.py")
    assert spec is not None and spec.loader is not None
    check = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = check  # its dataclasses look their module up
    spec.loader.exec_module(check)
    result = check.check_report(written[0], screenshot=tmp_path / "report.png")
    assert result.problems == []
    assert result.plots >= 8
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_the_months_stored_monitor_report_is_used_when_it_judged_the_champion(
    workspace: Settings, tmp_path: Path
) -> None:
    """`doudi monthly` / `doudi monitor` wrote reports/monitor-<month>.json: the report
    shows it instead of computing the monitor again; a report on another model is not used."""
    import pandas as pd

    from monitoring.monitor import MonitorReport, Recommendation, write_report
    from monitoring.report import stored_monitor
    from monitoring.report import write_report as write_page

    champion = gather(workspace, MONTH).champion.label
    drift = pd.DataFrame({"feature": ["income_level"], "label_zh": ["收入"], "psi": [0.31],
                          "band": ["major"], "missing_ref": [0.0], "missing_now": [0.1],
                          "mean_abs_shap_ref": [0.2], "mean_abs_shap_now": [0.3]})
    bands = pd.DataFrame({"band": ["top 5%"], "month": ["2024-09"], "n": [10],
                          "predicted": [0.2], "observed": [0.1], "ratio": [2.0],
                          "labels_final": [True]})
    perf = pd.DataFrame({"month": ["2025-05"], "kind": ["estimated"],
                         "metric": ["precision_at_capacity"], "value": [0.3],
                         "label_share": [0.0]})
    towns = pd.DataFrame({"township_code": ["620121001"], "township_name": ["城关镇"],
                          "in_scope": [100], "alerts": [5], "rate": [0.05]})
    saved = MonitorReport(MONTH, champion, "2024-01..2024-06", drift, 0.42, "major", towns,
                          bands, perf, Recommendation(True, ("stored reason 存档理由",)))
    write_report(saved, workspace)
    assert stored_monitor(workspace, MONTH, "another-model/9") is None
    got = stored_monitor(workspace, MONTH, champion)
    assert got is not None and got.score_psi == 0.42 and got.recommendation == \
        saved.recommendation
    pd.testing.assert_frame_equal(got.feature_drift, drift)
    page = write_page(workspace, MONTH, out=tmp_path / "page.html")
    html = page.path.read_text(encoding="utf-8")
    assert "stored reason 存档理由" in html and "0.420" in html and page.retrain is True
