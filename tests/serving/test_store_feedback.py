"""`doudi feedback import`: CSV (UTF-8, GBK) and xlsx verdicts, all or nothing, idempotent."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import pytest
from openpyxl import Workbook
from typer.testing import CliRunner

from doudi.errors import UserError
from jobs.cli import app
from serving.store import AlertStore, FeedbackError, import_feedback, list_alerts
from tests.serving.store_fixtures import alert, store_url_of

pytest_plugins = ["tests.serving.store_fixtures"]

TODAY = date(2026, 5, 1)
HEADER = ["预警编号", "姓名", "核实结果", "风险类型", "走访日期", "核实人", "备注"]


def _dispatched(store: AlertStore, n: int = 2) -> list[int]:
    ids = list(store.add_alerts([alert(f"hh-{i}") for i in range(n)]).created)
    store.dispatch(ids, actor="export")
    return ids


def _rows(a: int, b: int) -> list[list[str]]:
    # 姓名 stands for the re-identified columns of a caseworker sheet: never read.
    return [
        HEADER,
        [str(a), "张三", "属实", "因病；住房安全", "2026/04/02", "GS01", "门诊费用高"],
        [str(b), "李四", "不属实", "", "2026-04-03", "GS02", ""],
    ]


def _csv(path: Path, rows: list[list[str]], encoding: str = "utf-8") -> Path:
    path.write_bytes("\n".join(",".join(r) for r in rows).encode(encoding) + b"\n")
    return path


def _assert_imported(store: AlertStore, a: int, b: int) -> None:
    first, second = store.get(a), store.get(b)
    assert first.status == "verified_confirmed"
    assert first.verdict is not None
    assert first.verdict.risk_types == ("illness", "housing")
    assert first.verdict.visited_on == date(2026, 4, 2)
    assert (first.verdict.caseworker, first.verdict.note) == ("GS01", "门诊费用高")
    assert second.status == "verified_dismissed"
    assert second.verdict is not None and second.verdict.note is None


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk"])
def test_csv_import_and_idempotent_reimport(
    alert_store: AlertStore, tmp_path: Path, encoding: str
) -> None:
    a, b = _dispatched(alert_store)
    path = _csv(tmp_path / "verdicts.csv", _rows(a, b), encoding)
    report = import_feedback(alert_store, path, actor="op1", today=TODAY)
    assert (report.rows, report.recorded, report.unchanged) == (2, 2, 0)
    _assert_imported(alert_store, a, b)
    assert alert_store.get(a).history[-1].actor == "op1"

    again = import_feedback(alert_store, path, actor="op1", today=TODAY)
    assert (again.recorded, again.unchanged) == (0, 2)
    assert len(alert_store.get(a).history) == 3  # new, dispatched, verified_confirmed


def test_xlsx_import_with_date_cells_and_numeric_ids(
    alert_store: AlertStore, tmp_path: Path
) -> None:
    a, b = _dispatched(alert_store)
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(HEADER)
    sheet.append([a, "张三", "属实", "illness;housing", datetime(2026, 4, 2), "GS01", "门诊费用高"])
    sheet.append([float(b), "李四", "dismissed", None, date(2026, 4, 3), "GS02", None])
    sheet.append([None] * len(HEADER))  # trailing empty row
    path = tmp_path / "verdicts.xlsx"
    workbook.save(path)
    report = import_feedback(alert_store, path, actor="op1", today=TODAY)
    assert (report.recorded, report.unchanged) == (2, 0)
    _assert_imported(alert_store, a, b)


@pytest.mark.parametrize(
    ("row", "column", "rule"),
    [
        (["可能", "因病", "2026-04-02", "GS01"], "核实结果", "must be 属实/不属实"),
        (["属实", "因病", "2026-13-02", "GS01"], "走访日期", "is not a calendar date"),
        (["属实", "因病", "2026-06-02", "GS01"], "走访日期", "is after today (2026-05-01)"),
        (["属实", "", "2026-04-02", "GS01"], "风险类型", "is required when the verdict is 属实"),
        (["属实", "因穷", "2026-04-02", "GS01"], "风险类型", "unknown risk type"),
        (["属实", "因病", "2026-04-02", ""], "核实人", "is required"),
        (
            ["属实", "因病", "2026-04-02", "11010519491231002X"],
            "核实人",
            "must be a caseworker's staff code",
        ),
    ],
)
def test_bad_row_names_file_row_column_rule_and_imports_nothing(
    alert_store: AlertStore, tmp_path: Path, row: list[str], column: str, rule: str
) -> None:
    a, b = _dispatched(alert_store)
    header = ["预警编号", "核实结果", "风险类型", "走访日期", "核实人"]
    good = [str(a), "不属实", "", "2026-04-02", "GS01"]
    path = _csv(tmp_path / "bad.csv", [header, good, [str(b), *row]])
    with pytest.raises(FeedbackError) as info:
        import_feedback(alert_store, path, actor="op1", today=TODAY)
    message = str(info.value)
    assert str(path) in message
    assert f"row 3 column {column}: {rule}" in message
    assert "11010519491231002X" not in message
    assert set(list_alerts(alert_store)["status"]) == {"dispatched"}  # the good row too


def test_rows_that_do_not_fit_the_store_are_refused_together(
    alert_store: AlertStore, tmp_path: Path
) -> None:
    a, b = _dispatched(alert_store)
    (undispatched,) = alert_store.add_alerts([alert("hh-new")]).created
    rows = [
        ["alert_id", "verdict", "risk_types", "visited_on", "caseworker"],
        [str(a), "confirmed", "illness", "2026-04-02", "GS01"],
        ["99999999", "dismissed", "", "2026-04-02", "GS01"],
        [str(undispatched), "dismissed", "", "2026-04-02", "GS01"],
        [str(b), "dismissed", "", "2026-03-01", "GS01"],
        [str(a), "dismissed", "", "2026-04-02", "GS01"],
    ]
    path = _csv(tmp_path / "v.csv", rows)
    with pytest.raises(FeedbackError) as info:
        import_feedback(alert_store, path, actor="op1", today=TODAY)
    message = str(info.value)
    assert f"row 6 column alert_id: alert {a} is already on row 2" in message
    # File-level problems are reported first; store checks run once the file is clean.
    assert "no alert 99999999" not in message
    path = _csv(tmp_path / "v.csv", rows[:-1])
    with pytest.raises(FeedbackError) as info:
        import_feedback(alert_store, path, actor="op1", today=TODAY)
    message = str(info.value)
    assert "row 3 column alert_id: no alert 99999999 in the store" in message
    assert f"row 4 column alert_id: alert {undispatched} is 'new'" in message
    assert "row 5 column visited_on: visit 2026-03-01 is before the alert's as-of" in message
    assert "3 problem(s), nothing imported" in message
    assert alert_store.get(a).verdict is None


def test_a_different_verdict_for_a_verified_alert_is_a_conflict(
    alert_store: AlertStore, tmp_path: Path
) -> None:
    a, b = _dispatched(alert_store)
    import_feedback(alert_store, _csv(tmp_path / "v1.csv", _rows(a, b)), actor="op1", today=TODAY)
    changed = _rows(a, b)
    changed[2][2] = "属实"
    changed[2][3] = "因灾"
    with pytest.raises(
        FeedbackError, match=r"row 3 column 核实结果: alert \d+ already has a different verdict"
    ):
        import_feedback(alert_store, _csv(tmp_path / "v2.csv", changed), actor="op1", today=TODAY)
    assert alert_store.get(b).status == "verified_dismissed"


def test_missing_columns_and_wrong_file_types(alert_store: AlertStore, tmp_path: Path) -> None:
    path = _csv(tmp_path / "v.csv", [["预警编号", "核实结果"], ["1", "属实"]])
    with pytest.raises(FeedbackError, match="row 1: missing column 走访日期 \\(visited_on\\)"):
        import_feedback(alert_store, path, actor="op1", today=TODAY)
    odd = tmp_path / "v.xls"
    odd.write_bytes(b"\xd0\xcf\x11\xe0")
    with pytest.raises(UserError, match=r"unsupported file type '\.xls'"):
        import_feedback(alert_store, odd, actor="op1", today=TODAY)


def test_cli_feedback_import_and_alerts_list(alert_store: AlertStore, tmp_path: Path) -> None:
    store_url = store_url_of(alert_store)
    a, b = _dispatched(alert_store)
    alert_store.add_alerts([alert("hh-other", village="620102004001")])
    path = _csv(tmp_path / "verdicts.csv", _rows(a, b))
    runner = CliRunner()
    result = runner.invoke(
        app, ["feedback", "import", str(path), "--actor", "op9", "--database-url", store_url]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["recorded"] == 2

    result = runner.invoke(
        app,
        [
            *("alerts", "list", "--township", "620102003", "--format", "json"),
            *("--status", "verified_confirmed", "--database-url", store_url),
        ],
    )
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [(r["alert_id"], r["risk_types"]) for r in listed] == [(a, "illness")]

    result = runner.invoke(app, ["alerts", "list", "--format", "csv", "--database-url", store_url])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("alert_id,household_key,county_code")
    assert len(result.output.splitlines()) == 4

    result = runner.invoke(app, ["alerts", "list", "--database-url", store_url])
    assert result.exit_code == 0 and "3 alert(s)" in result.output
