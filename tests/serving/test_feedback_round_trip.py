"""The round trip (issue #13): doudi exports a township's sheet, a caseworker fills some
rows as she would in Excel/WPS (one row wrong, some not visited yet), `doudi feedback
import` reads the very file back: exactly the valid verdicts land in the store, the wrong
row is reported, the unvisited rows are counted, and a second import changes nothing."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from serving.export import TownshipExport, export_township
from serving.sheet import ALERT_ID, BY_KEY
from serving.store import AlertStore, ImportReport, import_feedback, township_status
from tests.jobs.cli import doudi
from tests.serving.export_world import HOUSEHOLDS, TOWNSHIP_A, write_world
from tests.serving.store_fixtures import AS_OF, FrozenClock, alert, store_url_of

pytest_plugins = ["tests.serving.store_fixtures"]

H = {key: column.header for key, column in BY_KEY.items()}  # key -> the sheet's header
# What the caseworker writes, by (sheet position, row position in that sheet).
CONFIRMED = {H["verdict"]: "属实", H["risk_types"]: "因病、住房安全",
             H["visited_on"]: datetime(2026, 4, 10), H["caseworker"]: "GS01",
             H["note"]: "已协助申请医疗救助"}
DISMISSED = {H["verdict"]: "不属实", H["visited_on"]: datetime(2026, 4, 11),
             H["caseworker"]: "GS01"}
WRONG_DATE = {H["verdict"]: "属实", H["risk_types"]: "因病", H["visited_on"]: "4月12号",
              H["caseworker"]: "GS01"}
HOUSING_TEXT_DATE = {H["verdict"]: "属实", H["risk_types"]: "住房安全",
                     H["visited_on"]: "2026-04-15", H["caseworker"]: "GS02"}
NOTE_ONLY = {H["note"]: "户主外出务工，电话联系不上"}
FILLS = {(0, 0): CONFIRMED, (0, 1): DISMISSED, (0, 2): WRONG_DATE,
         (1, 0): HOUSING_TEXT_DATE, (1, 1): NOTE_ONLY}
# The store afterwards: (verdict, confirmed types, visit, caseworker, note) by fill.
EXPECTED = {
    (0, 0): ("confirmed", ("illness", "housing"), date(2026, 4, 10), "GS01", "已协助申请医疗救助"),
    (0, 1): ("dismissed", (), date(2026, 4, 11), "GS01", None),
    (1, 0): ("confirmed", ("housing",), date(2026, 4, 15), "GS02", None),
}


@pytest.fixture
def exported(alert_store: AlertStore, tmp_path: Path) -> tuple[TownshipExport, list[int]]:
    """Township A's sheet as doudi exports it (2026-05-01 on the store's clock); all ids."""
    settings = write_world(tmp_path / "ws")
    news = [alert(key, village=village) for key, (village, *_) in HOUSEHOLDS.items()]
    ids = list(alert_store.add_alerts(news).created)
    done = export_township(alert_store, TOWNSHIP_A, settings, tmp_path / "sheets")
    return done, ids


def _fill_workbook(source: Path, target: Path, *, reorder: bool) -> dict[tuple[int, int], Any]:
    """Fill FILLS into the exported workbook as a caseworker would; (sheet, row) -> where
    it landed: (alert id, sheet title, spreadsheet row). `reorder`: she also moved the
    columns around and added one of her own."""
    book = load_workbook(source)
    where: dict[tuple[int, int], Any] = {}
    for s, ws in enumerate(book.worksheets):
        header = [c.value for c in ws[1]]
        for r in range(ws.max_row - 1):
            row = ws[r + 2]
            alert_id = int(str(row[header.index(ALERT_ID.header)].value))
            where[(s, r)] = (alert_id, ws.title, r + 2)
            for name, value in FILLS.get((s, r), {}).items():
                row[header.index(name)].value = value
        if reorder:
            table = [[c.value for c in row] for row in ws.iter_rows()]
            ws.delete_rows(1, ws.max_row)
            for i, values in enumerate(table):
                ws.append(["入户情况" if i == 0 else "已电话预约", *reversed(values)])
    book.save(target)
    return where


def _fill_csv(source: Path, target: Path) -> dict[tuple[int, int], Any]:
    """The GBK CSV filled the same way (one table: the township's rows in sheet order) and
    saved again as GBK, as Excel/WPS on Chinese Windows does."""
    rows = list(csv.reader(io.StringIO(source.read_bytes().decode("gbk"), newline="")))
    header = rows[0]
    village_of = [row[header.index(H["village_name"])] for row in rows[1:]]
    villages = list(dict.fromkeys(village_of))
    where: dict[tuple[int, int], Any] = {}
    seen: dict[str, int] = {}
    for i, row in enumerate(rows[1:]):
        s = villages.index(village_of[i])
        r = seen[village_of[i]] = seen.get(village_of[i], -1) + 1
        where[(s, r)] = (int(row[header.index(ALERT_ID.header)].strip()), None, i + 2)
        for name, value in FILLS.get((s, r), {}).items():
            # Excel saves a date cell as it shows it: 2026/4/10
            row[header.index(name)] = (f"{value.year}/{value.month}/{value.day}"
                                       if isinstance(value, datetime) else value)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    target.write_bytes(buffer.getvalue().encode("gbk"))
    return where


def _assert_round_trip(store: AlertStore, report: ImportReport, where: dict[tuple[int, int], Any],
                       all_ids: list[int]) -> None:
    wrong_id, wrong_sheet, wrong_row = where[(0, 2)]
    (problem,) = report.skipped
    assert (problem.sheet, problem.row, problem.column, problem.alert_id) == (
        wrong_sheet, wrong_row, H["visited_on"], wrong_id)
    assert problem.rule == "must be a date like 2026-03-15"
    assert (report.rows, report.imported, report.already_recorded) == (7, 3, 0)
    assert (report.not_visited, report.conflicts) == (3, [])
    verdicts = {}
    for alert_id in all_ids:
        v = store.get(alert_id).verdict
        if v is not None:
            verdicts[alert_id] = (v.verdict, v.risk_types, v.visited_on, v.caseworker, v.note)
    assert verdicts == {where[place][0]: expected for place, expected in EXPECTED.items()}
    assert store.get(wrong_id).status == "dispatched"


@pytest.mark.parametrize("reorder", [False, True], ids=["as-exported", "columns-reordered"])
def test_the_exported_workbook_comes_back(
    alert_store: AlertStore, store_clock: FrozenClock, exported: tuple[TownshipExport, list[int]],
    tmp_path: Path, reorder: bool,
) -> None:
    done, ids = exported
    returned = tmp_path / "returned.xlsx"
    where = _fill_workbook(done.workbook, returned, reorder=reorder)
    assert len(where) == 7 and len({w[1] for w in where.values()}) == 2  # one sheet per village
    report = import_feedback(alert_store, returned, actor="clerk01")
    _assert_round_trip(alert_store, report, where, ids)

    history = {i: len(alert_store.get(i).history) for i in ids}
    again = import_feedback(alert_store, returned, actor="clerk01")
    assert (again.imported, again.already_recorded, again.not_visited) == (0, 3, 3)
    assert again.skipped == report.skipped
    assert {i: len(alert_store.get(i).history) for i in ids} == history

    # The wrong row corrected and the file returned once more: now everything is clean.
    book = load_workbook(returned)
    _, sheet, row = where[(0, 2)]
    header = [c.value for c in book[sheet][1]]
    book[sheet].cell(row, header.index(H["visited_on"]) + 1).value = datetime(2026, 4, 12)
    book.save(returned)
    fixed = import_feedback(alert_store, returned, actor="clerk01")
    assert (fixed.imported, fixed.already_recorded, fixed.clean) == (1, 3, True)

    store_clock.advance(days=16)  # the export's date + response_days (15) has passed
    (status,) = township_status(alert_store, today=store_clock.now.date(),
                                response_days=15).to_dict("records")
    assert status == {"township_code": TOWNSHIP_A, "sent": 7, "visited": 4, "confirmed": 3,
                      "dismissed": 1, "overdue": 3}


def test_the_exported_gbk_csv_comes_back(
    alert_store: AlertStore, exported: tuple[TownshipExport, list[int]], tmp_path: Path
) -> None:
    done, ids = exported
    returned = tmp_path / "returned.csv"
    where = _fill_csv(done.csv, returned)
    report = import_feedback(alert_store, returned, actor="clerk01")
    _assert_round_trip(alert_store, report, where, ids)
    again = import_feedback(alert_store, returned, actor="clerk01")
    assert (again.imported, again.already_recorded, again.skipped) == (0, 3, report.skipped)

    # The operator's view: township A by name, as of the alerts' month.
    result = doudi(tmp_path / "ws", "alerts", "status", "--as-of", f"{AS_OF:%Y-%m}",
                   "--format", "json", "--database-url", store_url_of(alert_store))
    assert result.code == 0, result.err
    (status,) = json.loads(result.out)
    assert {k: status[k] for k in ("township_code", "township_name", "sent", "visited")} == {
        "township_code": TOWNSHIP_A, "township_name": "城关镇", "sent": 7, "visited": 3}
