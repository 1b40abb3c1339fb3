"""The caseworker sheet as a work order and a return form (docs/caseworker-sheet.md):
who (name, masked ID, phone), where (village name), why (reasons, rules in words), what
to do first, by when; empty return columns with validation; one worksheet per village;
a page layout that prints."""

from __future__ import annotations

import zipfile
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest
from openpyxl import load_workbook
from pydantic import ValidationError

from doudi.contract import RISK_TYPES
from doudi.settings import DEFAULT_FIRST_STEPS, Settings
from serving.export import TownshipExport, export_township
from serving.sheet import BY_KEY, SHEET_COLUMNS, VERDICT_CHOICES, Part
from serving.store import AlertStore, NewAlert, Reason, open_store
from serving.workbook import LINE_POINTS, lines_needed, row_height, sheet_titles
from tests.serving.export_world import (
    DIVISIONS,
    HEAD_NAMES,
    HOUSEHOLDS,
    TOWNSHIP_A,
    TOWNSHIP_B,
    phone_of,
    write_world,
)

AS_OF = date(2026, 6, 30)
EXPORTED_AT = datetime(2026, 7, 3, 9, 30, tzinfo=UTC)
HEADERS = [c.header for c in SHEET_COLUMNS]
COLUMN = {c.key: i for i, c in enumerate(SHEET_COLUMNS)}  # key -> 0-based position
REASONS = (
    Reason(1, "medical_oop", "近12个月住院自付医疗费用 38,200 元〔风险 +4.1 个百分点〕", 4.1),
    Reason(2, "housing_safety", "住房安全鉴定为D级危房〔风险 +2.3 个百分点〕", 2.3),
    Reason(3, "wage", "近12个月务工月数 2 个月（上年 10 个月）〔风险 +1.2 个百分点〕", 1.2),
)
SIXTEEN_DIGITS = "6201220010030076"  # a float in a spreadsheet: 6201220010030080


def _alerts(store: AlertStore) -> dict[str, int]:
    """One alert per world household: illness + housing, two rules, three reasons; the
    last household's alert was raised by a rule the registry no longer has."""
    keys = list(HOUSEHOLDS)
    report = store.add_alerts(
        NewAlert(household_key=key, village_code=village, as_of=AS_OF,
                 model_version="doudi-risk/7", tier="red", risk=0.9 - i / 100,
                 risk_types=("illness", "housing"), source="both", reasons=REASONS,
                 rule_triggers=("R_MED_OOP", "R_HOUSE_D") if key != keys[-1] else ("R_GONE",))
        for i, (key, (village, *_)) in enumerate(HOUSEHOLDS.items()))
    return dict(zip(HOUSEHOLDS, report.created, strict=True))


@pytest.fixture
def world(tmp_path: Path):
    households = {**HOUSEHOLDS}
    first = next(iter(households))
    households[first] = (households[first][0], SIXTEEN_DIGITS, *households[first][2:])
    settings = write_world(tmp_path / "ws", households).model_copy(
        update={"response_days": 10, "first_steps": {**DEFAULT_FIRST_STEPS,
                                                     "housing": "联系住建所鉴定并申请危房改造"}})
    store = open_store(f"sqlite:///{tmp_path / 'alerts.db'}", clock=lambda: EXPORTED_AT)
    ids = _alerts(store)
    yield settings, store, ids
    store.dispose()


def _export(world, tmp_path: Path, township: str = TOWNSHIP_A) -> TownshipExport:
    settings, store, _ = world
    return export_township(store, township, settings, tmp_path / "sheets")


def _rows(done: TownshipExport) -> dict[str, list[tuple]]:
    book = load_workbook(done.workbook)
    return {ws.title: list(ws.iter_rows(min_row=2, values_only=True)) for ws in book.worksheets}


def test_one_worksheet_per_village_named_after_it(world, tmp_path: Path) -> None:
    _, _, ids = world
    rows = _rows(_export(world, tmp_path))
    assert list(rows) == ["兴隆村", "新庄村"]  # village code order
    for village, code in (("兴隆村", "001"), ("新庄村", "002")):
        mine = [ids[k] for k, v in HOUSEHOLDS.items() if v[0] == TOWNSHIP_A + code]
        assert sorted(int(r[COLUMN["alert_id"]]) for r in rows[village]) == sorted(mine)
        assert {r[COLUMN["village_name"]] for r in rows[village]} == {village}
    # A village the divisions feed does not name: its code, on the sheet and as the title.
    b = _rows(_export(world, tmp_path, TOWNSHIP_B))
    assert list(b) == [TOWNSHIP_B + "001"]
    assert {r[COLUMN["village_name"]] for r in b[TOWNSHIP_B + "001"]} == {TOWNSHIP_B + "001"}


def test_columns_in_order_and_identifiers_as_text(world, tmp_path: Path) -> None:
    done = _export(world, tmp_path)
    book = load_workbook(done.workbook)
    for ws in book.worksheets:
        assert [c.value for c in ws[1]] == HEADERS
        for row in ws.iter_rows(min_row=2):
            for column in SHEET_COLUMNS:
                cell = row[COLUMN[column.key]]
                if column.verbatim and cell.value is not None:
                    assert cell.data_type == "s" and isinstance(cell.value, str), column.key
    with zipfile.ZipFile(done.workbook) as z:
        xml = "".join(z.read(n).decode() for n in z.namelist() if n.startswith("xl/worksheets/"))
    assert "<f>" not in xml and "<f " not in xml
    first = _rows(done)["兴隆村"][0]
    assert first[COLUMN["household_id"]] == SIXTEEN_DIGITS  # every digit, as text


def test_who_where_and_by_when(world, tmp_path: Path) -> None:
    settings, _, ids = world
    rows = [r for page in _rows(_export(world, tmp_path)).values() for r in page]
    by_alert = {int(r[COLUMN["alert_id"]]): r for r in rows}
    for i, (key, (_village, _number, _head, _id)) in enumerate(HOUSEHOLDS.items()):
        if ids[key] not in by_alert:
            continue  # township B
        row = by_alert[ids[key]]
        assert row[COLUMN["head_name"]] == HEAD_NAMES[i]
        assert row[COLUMN["contact_phone"]] == phone_of(i)
        assert row[COLUMN["month"]] == "2026-06"
        # the export's date (the store's clock) plus settings.response_days (10)
        assert row[COLUMN["respond_by"]] == "2026-07-13"
        assert row[COLUMN["tier"]] == "红色"
    assert settings.response_days == 10


def test_a_household_without_a_phone_gets_an_empty_cell(world, tmp_path: Path) -> None:
    _, _, ids = world
    last = list(HOUSEHOLDS)[-1]  # in township B, no phone on record
    (row,) = [r for page in _rows(_export(world, tmp_path, TOWNSHIP_B)).values() for r in page
              if int(r[COLUMN["alert_id"]]) == ids[last]]
    assert row[COLUMN["contact_phone"]] is None
    assert row[COLUMN["head_name"]] == HEAD_NAMES[len(HOUSEHOLDS) - 1]


def test_why_and_what_to_do_first(world, tmp_path: Path) -> None:
    _, _, ids = world
    rows = [r for page in _rows(_export(world, tmp_path, TOWNSHIP_B)).values() for r in page]
    by_alert = {int(r[COLUMN["alert_id"]]): r for r in rows}
    keys = list(HOUSEHOLDS)
    row = by_alert[ids[keys[7]]]
    assert row[COLUMN["reasons"]] == "\n".join(f"{r.rank}. {r.text_zh}" for r in REASONS)
    assert row[COLUMN["rules"]] == ("近12个月住院自付医疗费用超过标准（脱贫户 5,000 元，其他户 "
                                    "20,000 元）\n住房安全鉴定为D级危房")
    assert row[COLUMN["predicted_risk_types"]] == "因病、住房安全"
    # one line per hardship type, from settings.first_steps (housing overridden)
    assert row[COLUMN["first_steps"]] == (f"因病：{DEFAULT_FIRST_STEPS['illness']}\n"
                                          "住房安全：联系住建所鉴定并申请危房改造")
    assert by_alert[ids[keys[-1]]][COLUMN["rules"]] == "R_GONE"  # not in the registry: its code


def test_return_columns_are_empty_with_validation(world, tmp_path: Path) -> None:
    done = _export(world, tmp_path)
    ws = load_workbook(done.workbook)["兴隆村"]
    last = ws.max_row
    returned = [c for c in SHEET_COLUMNS if c.part is Part.RETURN]
    for row in ws.iter_rows(min_row=2):
        assert all(row[COLUMN[c.key]].value is None for c in returned)

    def letter(key: str) -> str:
        return ws.cell(1, COLUMN[key] + 1).column_letter

    found = {str(v.sqref): v for v in ws.data_validations.dataValidation}
    verdict = found[f"{letter('verdict')}2:{letter('verdict')}{last}"]
    assert verdict.type == "list" and verdict.showErrorMessage
    assert verdict.formula1 == '"' + ",".join(VERDICT_CHOICES) + '"'
    types = found[f"{letter('risk_types')}2:{letter('risk_types')}{last}"]
    assert types.type == "list" and types.formula1.strip('"').split(",") == list(
        RISK_TYPES.values())
    visited = found[f"{letter('visited_on')}2:{letter('visited_on')}{last}"]
    assert visited.type == "date" and visited.operator == "greaterThanOrEqual"
    assert int(visited.formula1) == (date(2026, 6, 30) - date(1899, 12, 30)).days


def test_rows_are_tall_enough_for_every_line(world, tmp_path: Path) -> None:
    ws = load_workbook(_export(world, tmp_path).workbook).worksheets[0]
    reasons = BY_KEY["reasons"]
    for r in range(2, ws.max_row + 1):
        text = ws.cell(r, COLUMN["reasons"] + 1).value
        needed = lines_needed(text, reasons.width)
        assert needed >= 3  # three reasons, one per line
        assert ws.row_dimensions[r].height >= needed * LINE_POINTS > 15  # > Excel's default


def test_line_estimate_by_hand() -> None:
    # 5 Chinese characters (2.1 units each = 10.5) in a 10-wide column (9 usable): 2 lines
    assert lines_needed("一二三四五", 10) == 2
    assert lines_needed("一二三四", 10) == 1  # 8.4 units
    assert lines_needed("123456789", 10) == 1  # 9 x 1.0 units
    assert lines_needed("1234567890", 10) == 2
    assert lines_needed("一二三四五六七八九十", 10) == 3  # 21 units
    assert lines_needed("a\nb\n\nc", 10) == 4  # every line, an empty one too
    assert row_height(["一二三四五", None, 3], [10, 10, 10]) == 2 * LINE_POINTS + 4
    assert row_height(["一", None], [10, 10]) == LINE_POINTS + 4
    assert row_height(["一", None], [10, 10], min_lines=2) == 2 * LINE_POINTS + 4


def test_print_setup_landscape_fit_to_width_header_on_every_page(world, tmp_path: Path) -> None:
    for ws in load_workbook(_export(world, tmp_path).workbook).worksheets:
        assert ws.page_setup.orientation == "landscape"
        assert int(ws.page_setup.paperSize) == int(ws.PAPERSIZE_A4)
        assert ws.page_setup.fitToWidth == 1 and ws.page_setup.fitToHeight == 0
        assert ws.sheet_properties.pageSetUpPr.fitToPage
        assert ws.print_title_rows == "$1:$1"
        assert ws.freeze_panes == "F2"  # the header and the columns up to the head's name
        assert ws.oddHeader.center.text.startswith(f"城关镇（{TOWNSHIP_A}）2026-06")


def test_csv_household_number_survives_a_spreadsheet(world, tmp_path: Path) -> None:
    done = _export(world, tmp_path)
    sheet = pd.read_csv(done.csv, encoding="gbk", dtype=str, keep_default_na=False)
    assert list(sheet.columns) == HEADERS
    # a leading tab: Excel and WPS keep the field as text (never ="...": a formula)
    assert f"\t{SIXTEEN_DIGITS}" in set(sheet["户编号"])
    assert all(v.startswith("\t") and v[1:].isdigit() for v in sheet["户编号"])
    assert sheet["预警原因"].str.contains("；2. ").all()  # lines joined, one record per alert
    raw = done.csv.read_bytes().decode("gbk")
    assert "=\"" not in raw and f",{SIXTEEN_DIGITS}," not in raw


def test_sheet_titles_are_excel_safe_and_unique() -> None:
    long = "很长的村名" * 8
    assert sheet_titles(["兴隆村", "兴隆村", "a/b:c*d?", long, "'"]) == [
        "兴隆村", "兴隆村 (2)", "abcd", long[:31], "村"]


def test_first_steps_table_is_per_hardship_type() -> None:
    assert set(DEFAULT_FIRST_STEPS) == set(RISK_TYPES)
    assert Settings(first_steps={"housing": " 危房改造 "}).first_steps == {
        **DEFAULT_FIRST_STEPS, "housing": "危房改造"}
    with pytest.raises(ValidationError, match="unknown risk type"):
        Settings(first_steps={"poverty": "低保"})
    assert "低保" in DEFAULT_FIRST_STEPS["other"] and "临时救助" in DEFAULT_FIRST_STEPS["disaster"]
    assert "医疗救助" in DEFAULT_FIRST_STEPS["illness"] and "大病保险" in DEFAULT_FIRST_STEPS[
        "illness"]


def test_an_empty_first_step_is_left_out(tmp_path: Path) -> None:
    settings = write_world(tmp_path / "ws").model_copy(
        update={"first_steps": {**DEFAULT_FIRST_STEPS, "housing": ""}})
    with open_store(f"sqlite:///{tmp_path / 'alerts.db'}") as store:
        key, (village, *_) = next(iter(HOUSEHOLDS.items()))
        store.add_alerts([replace(NewAlert(household_key=key, village_code=village, as_of=AS_OF,
                                           model_version="m/1", tier="red", risk=0.5,
                                           risk_types=("housing", "illness")),
                                  reasons=REASONS)])
        done = export_township(store, TOWNSHIP_A, settings, tmp_path / "sheets")
    (row,) = _rows(done)[DIVISIONS[village]]
    assert row[COLUMN["first_steps"]] == f"因病：{DEFAULT_FIRST_STEPS['illness']}"
