"""`doudi feedback import` on hand-made files: CSV (UTF-8, GBK) and xlsx; rows not yet
visited counted, bad rows skipped and reported, conflicts reported, idempotent."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import pytest
from openpyxl import Workbook
from typer.testing import CliRunner

from doudi.errors import UserError
from jobs.cli import app
from serving.store import (
    AlertStore,
    FeedbackError,
    ImportReport,
    import_feedback,
    list_alerts,
    township_status,
)
from tests.jobs.cli import doudi
from tests.serving.store_fixtures import FrozenClock, alert, store_url_of

pytest_plugins = ["tests.serving.store_fixtures"]

TODAY = date(2026, 5, 1)
# 姓名 and 预测风险类型 stand for the work order's columns: never read.
HEADER = ["预警编号", "姓名", "预测风险类型", "核实结果", "确认风险类型", "走访日期", "核实人",
          "备注"]


def _dispatched(store: AlertStore, n: int = 2) -> list[int]:
    ids = list(store.add_alerts([alert(f"hh-{i}") for i in range(n)]).created)
    store.dispatch(ids, actor="export")
    return ids


def _rows(a: int, b: int) -> list[list[str]]:
    return [
        HEADER,
        [str(a), "张三", "因灾", "属实", "因病；住房安全", "2026/04/02", "GS01", "门诊费用高"],
        [str(b), "李四", "因病", "不属实", "", "2026-04-03", "GS02", ""],
    ]


def _csv(path: Path, rows: list[list[str]], encoding: str = "utf-8") -> Path:
    path.write_bytes("\n".join(",".join(r) for r in rows).encode(encoding) + b"\n")
    return path


def _import(store: AlertStore, path: Path, **options: bool) -> ImportReport:
    return import_feedback(store, path, actor="op1", today=TODAY, **options)


def _assert_imported(store: AlertStore, a: int, b: int) -> None:
    first, second = store.get(a), store.get(b)
    assert first.status == "verified_confirmed"
    assert first.verdict is not None
    assert first.verdict.risk_types == ("illness", "housing")  # not the predicted 因灾
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
    report = _import(alert_store, path)
    assert (report.rows, report.imported, report.already_recorded) == (2, 2, 0)
    assert report.clean and report.sheets == []
    _assert_imported(alert_store, a, b)
    assert alert_store.get(a).history[-1].actor == "op1"

    again = _import(alert_store, path)
    assert (again.imported, again.already_recorded, again.clean) == (0, 2, True)
    assert len(alert_store.get(a).history) == 3  # new, dispatched, verified_confirmed


def test_xlsx_every_sheet_date_cells_numeric_ids_and_a_title_row(
    alert_store: AlertStore, tmp_path: Path
) -> None:
    a, b = _dispatched(alert_store)
    workbook = Workbook()
    first = workbook.active
    assert first is not None
    first.title = "兴隆村"
    first.append(["2026年3月 预警核实表"])  # a title above the header
    first.append(HEADER)
    first.append([a, "张三", "因灾", "属实", "illness;housing", datetime(2026, 4, 2), "GS01",
                  "门诊费用高"])
    first.append([None] * len(HEADER))  # trailing empty row
    workbook.create_sheet("说明").append(["核实结果请从下拉列表选择"])  # not a return form
    second = workbook.create_sheet("新庄村")
    second.append(HEADER)
    second.append([float(b), "李四", "因病", "dismissed", None, date(2026, 4, 3), "GS02", None])
    path = tmp_path / "verdicts.xlsx"
    workbook.save(path)
    report = _import(alert_store, path)
    assert (report.imported, report.already_recorded, report.sheets) == (2, 0, ["兴隆村", "新庄村"])
    _assert_imported(alert_store, a, b)


def test_rows_without_a_visit_are_not_yet_visited(alert_store: AlertStore, tmp_path: Path) -> None:
    a, b, c = _dispatched(alert_store, 3)
    rows = [
        HEADER,
        [str(a), "张三", "因病", "", "", "", "", ""],  # the work order only
        [str(b), "李四", "因病", "", "", "", "", "户主外出务工，未见到"],  # a note is no visit
        [f"\t{c}", "王五", "因病", "不属实", "无", "2026-04-03", "GS02", ""],  # a tab, as exported
        ["", "", "", "", "", "", "", ""],  # blank: not counted
    ]
    report = _import(alert_store, _csv(tmp_path / "v.csv", rows))
    assert (report.rows, report.imported, report.not_visited, report.clean) == (3, 1, 2, True)
    assert alert_store.get(a).status == alert_store.get(b).status == "dispatched"
    assert alert_store.get(c).status == "verified_dismissed"


def test_the_predicted_types_are_never_read_as_confirmed(
    alert_store: AlertStore, tmp_path: Path
) -> None:
    """The sheet's predicted 风险类型 (before #13: the only types column) is not 确认风险类型."""
    (a,) = _dispatched(alert_store, 1)
    rows = [["预警编号", "风险类型", "核实结果", "走访日期", "核实人"],
            [str(a), "因病", "属实", "2026-04-02", "GS01"]]
    report = _import(alert_store, _csv(tmp_path / "v.csv", rows))
    assert [str(p) for p in report.skipped] == [
        "row 2 column 确认风险类型: is required when the verdict is 属实"]
    assert alert_store.get(a).verdict is None


@pytest.mark.parametrize(
    ("row", "column", "rule"),
    [
        (["可能", "因病", "2026-04-02", "GS01"], "核实结果", "must be 属实/不属实"),
        (["属实", "因病", "2026-13-02", "GS01"], "走访日期", "is not a calendar date"),
        (["属实", "因病", "4月2号", "GS01"], "走访日期", "must be a date like 2026-03-15"),
        (["属实", "因病", "2026-06-02", "GS01"], "走访日期", "is after today (2026-05-01)"),
        (["属实", "", "2026-04-02", "GS01"], "确认风险类型", "is required when the verdict"),
        (["不属实", "因病", "2026-04-02", "GS01"], "确认风险类型", "must be empty when 不属实"),
        (["属实", "因穷", "2026-04-02", "GS01"], "确认风险类型", "unknown risk type"),
        (["属实", "因病", "2026-04-02", ""], "核实人", "is required"),
        (["", "因病", "2026-04-02", "GS01"], "核实结果", "is required"),
        (
            ["属实", "因病", "2026-04-02", "11010519491231002X"],
            "核实人",
            "must be a caseworker's staff code",
        ),
    ],
)
def test_a_bad_row_is_skipped_and_reported_the_good_rows_imported(
    alert_store: AlertStore, tmp_path: Path, row: list[str], column: str, rule: str
) -> None:
    a, b = _dispatched(alert_store)
    header = ["预警编号", "核实结果", "确认风险类型", "走访日期", "核实人"]
    good = [str(a), "不属实", "", "2026-04-02", "GS01"]
    path = _csv(tmp_path / "bad.csv", [header, good, [str(b), *row]])
    report = _import(alert_store, path)
    assert (report.imported, report.skipped_rows, report.clean) == (1, 1, False)
    (problem,) = report.skipped
    assert (problem.sheet, problem.row, problem.column) == (None, 3, column)
    assert problem.rule.startswith(rule)
    assert "11010519491231002X" not in report.to_text()
    assert alert_store.get(a).status == "verified_dismissed"
    assert alert_store.get(b).status == "dispatched"

    again = _import(alert_store, path)  # the bad row again, the good one recorded already
    assert (again.imported, again.already_recorded, again.skipped_rows) == (0, 1, 1)


def test_all_or_nothing_imports_nothing_when_a_row_is_bad(
    alert_store: AlertStore, tmp_path: Path
) -> None:
    a, b = _dispatched(alert_store)
    rows = _rows(a, b)
    rows[2][5] = "2026-13-03"
    path = _csv(tmp_path / "bad.csv", rows)
    with pytest.raises(FeedbackError) as info:
        _import(alert_store, path, all_or_nothing=True)
    message = str(info.value)
    assert f"{path}: 1 problem(s), nothing imported" in message
    assert "row 3 column 走访日期: is not a calendar date" in message
    assert set(list_alerts(alert_store)["status"]) == {"dispatched"}  # the good row too


def test_rows_that_do_not_fit_the_store_are_skipped_and_repeats_reported(
    alert_store: AlertStore, tmp_path: Path
) -> None:
    a, b, c, d = _dispatched(alert_store, 4)
    (undispatched,) = alert_store.add_alerts([alert("hh-new")]).created
    rows = [
        ["alert_id", "verdict", "risk_types", "visited_on", "caseworker"],
        [str(a), "confirmed", "illness", "2026-04-02", "GS01"],
        ["99999999", "dismissed", "", "2026-04-02", "GS01"],
        [str(undispatched), "dismissed", "", "2026-04-02", "GS01"],
        [str(b), "dismissed", "", "2026-03-01", "GS01"],
        [str(c), "dismissed", "", "2026-04-02", "GS01"],
        [str(c), "confirmed", "illness", "2026-04-02", "GS01"],
        [str(d), "dismissed", "", "2026-04-02", "GS01"],
        [str(d), "dismissed", "", "2026-04-02", "GS01"],  # the same verdict twice: fine
    ]
    report = _import(alert_store, _csv(tmp_path / "v.csv", rows))
    assert [str(p) for p in report.skipped] == [
        "row 3 column alert_id: no alert 99999999 in the store",
        f"row 4 column alert_id: alert {undispatched} is 'new'; verdicts are accepted for "
        "dispatched alerts",
        "row 5 column visited_on: visit 2026-03-01 is before the alert's as-of date 2026-03-31",
    ]
    assert [str(p) for p in report.conflicts] == [
        f"row {r} column verdict: alert {c} has different verdicts on row 6; row 7; "
        "none imported" for r in (6, 7)]
    assert (report.rows, report.imported, report.already_recorded) == (8, 2, 1)
    assert alert_store.get(c).verdict is None
    assert alert_store.get(d).status == "verified_dismissed"


def test_a_different_verdict_for_a_verified_alert_is_a_conflict(
    alert_store: AlertStore, tmp_path: Path
) -> None:
    a, b = _dispatched(alert_store)
    _import(alert_store, _csv(tmp_path / "v1.csv", _rows(a, b)))
    changed = _rows(a, b)
    changed[2][3:5] = ["属实", "因灾"]
    report = _import(alert_store, _csv(tmp_path / "v2.csv", changed))
    assert (report.imported, report.already_recorded) == (0, 1)
    (conflict,) = report.conflicts
    assert str(conflict) == (
        f"row 3 column 核实结果: alert {b} already has a different verdict "
        "(不属实, visited 2026-04-03, from v1.csv); corrections are not imported")
    assert alert_store.get(b).status == "verified_dismissed"
    with pytest.raises(FeedbackError, match="already has a different verdict"):
        _import(alert_store, _csv(tmp_path / "v2.csv", changed), all_or_nothing=True)


def test_files_that_are_no_return_form(alert_store: AlertStore, tmp_path: Path) -> None:
    path = _csv(tmp_path / "v.csv", [["预警编号", "核实结果"], ["1", "属实"]])
    with pytest.raises(FeedbackError, match=r"row 1: missing column 走访日期 \(visited_on\)"):
        _import(alert_store, path)
    path = _csv(tmp_path / "v.csv", [["户编号", "核实结果"], ["1", "属实"]])
    with pytest.raises(FeedbackError, match=r"row 1: missing column 预警编号 \(alert_id\)"):
        _import(alert_store, path)
    workbook = Workbook()
    workbook.active.append(["姓名", "电话"])  # type: ignore[union-attr]
    workbook.save(tmp_path / "v.xlsx")
    with pytest.raises(FeedbackError, match="no worksheet has a 预警编号"):
        _import(alert_store, tmp_path / "v.xlsx")
    odd = tmp_path / "v.xls"
    odd.write_bytes(b"\xd0\xcf\x11\xe0")
    with pytest.raises(UserError, match=r"unsupported file type '\.xls'"):
        _import(alert_store, odd)


def test_township_status_counts_sent_visited_and_overdue(
    alert_store: AlertStore, store_clock: FrozenClock
) -> None:
    march = list(alert_store.add_alerts([alert(f"m-{i}") for i in range(4)]).created)
    april = alert_store.add_alerts([alert("a-0", as_of=date(2026, 4, 30)),
                                    alert("b-0", village="620102004001")]).created
    alert_store.add_alerts([alert("never-sent")])
    alert_store.dispatch([*march, *april], actor="export")  # on 2026-05-01
    alert_store.record_verdict(march[0], "confirmed", risk_types=["illness"],
                               visited_on=date(2026, 4, 2), caseworker="GS1", actor="op")
    alert_store.record_verdict(march[1], "dismissed", visited_on=date(2026, 4, 2),
                               caseworker="GS1", actor="op")

    def status(today: date, **options: object) -> list[dict[str, object]]:
        frame = township_status(alert_store, today=today, response_days=15, **options)
        return frame.to_dict("records")  # type: ignore[return-value]

    due = date(2026, 5, 16)  # sent 2026-05-01 + 15 days: still in time on that day
    assert status(due) == [
        {"township_code": "620102003", "sent": 5, "visited": 2, "confirmed": 1,
         "dismissed": 1, "overdue": 0},
        {"township_code": "620102004", "sent": 1, "visited": 0, "confirmed": 0,
         "dismissed": 0, "overdue": 0},
    ]
    late = status(date(2026, 5, 17))
    assert [(r["township_code"], r["overdue"]) for r in late] == [("620102003", 3),
                                                                  ("620102004", 1)]
    from doudi.months import Month

    assert status(date(2026, 5, 17), month=Month.parse("2026-04")) == [
        {"township_code": "620102003", "sent": 1, "visited": 0, "confirmed": 0,
         "dismissed": 0, "overdue": 1},
    ]
    assert status(date(2026, 5, 17), month=Month.parse("2026-02")) == []


def test_cli_feedback_import_exit_codes_and_alerts_status(
    alert_store: AlertStore, tmp_path: Path
) -> None:
    store_url = store_url_of(alert_store)
    a, b = _dispatched(alert_store)
    alert_store.add_alerts([alert("hh-other", village="620102004001")])
    bad = _rows(a, b)
    bad[2][6] = ""
    runner = CliRunner()
    command = ["feedback", "import", "--actor", "op9", "--database-url", store_url]
    result = runner.invoke(app, [*command, str(_csv(tmp_path / "bad.csv", bad))])
    assert result.exit_code == 1, result.output
    assert "imported          1" in result.output
    assert "row 3 column 核实人: is required" in result.output

    good = _csv(tmp_path / "good.csv", _rows(a, b))
    result = runner.invoke(app, [*command, "--format", "json", str(good)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["imported"], summary["already_recorded"], summary["skipped"]) == (1, 1, [])

    home = {"DOUDI_HOME": str(tmp_path / "home")}  # a warehouse without division names
    result = runner.invoke(app, ["alerts", "status", "--format", "json",
                                 "--database-url", store_url], env=home)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {"township_code": "620102003", "township_name": "620102003", "sent": 2, "visited": 2,
         "confirmed": 1, "dismissed": 1, "overdue": 0}]
    result = runner.invoke(app, ["alerts", "status", "--database-url", store_url], env=home)
    assert result.exit_code == 0 and "620102003" in result.output

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


def test_all_or_nothing_is_a_user_error_exit_2(alert_store: AlertStore, tmp_path: Path) -> None:
    a, b = _dispatched(alert_store)
    bad = _rows(a, b)
    bad[2][3] = "可能"
    path = _csv(tmp_path / "bad.csv", bad)
    done = doudi(tmp_path / "home", "feedback", "import", str(path), "--all-or-nothing",
                 "--database-url", store_url_of(alert_store))
    assert done.code == 2
    assert "1 problem(s), nothing imported" in done.err
    assert set(list_alerts(alert_store)["status"]) == {"dispatched"}
