"""The caseworker's sheet: one layout for the work order doudi exports and the return form
`doudi feedback import` reads back (docs/caseworker-sheet.md).

The export writes these columns in this order; the import finds them by header (a
caseworker may reorder, hide or add columns in Excel/WPS) and reads only the return
columns: the predicted columns are never taken for a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum


class Part(StrEnum):
    """Who fills a column: doudi (the work order) or the caseworker (the return form)."""

    WORK_ORDER = "work_order"
    RETURN = "return"


@dataclass(frozen=True)
class SheetColumn:
    key: str  # canonical name (English headers are accepted on import too)
    header: str  # the Chinese header on the sheet
    width: int  # Excel column width units (a digit 1, a Chinese character about 2)
    part: Part
    verbatim: bool = False  # an identifier: kept as text, never a number or a date
    multiline: bool = False  # lines doudi composes (reasons, rules, first steps)


SHEET_COLUMNS: tuple[SheetColumn, ...] = (
    SheetColumn("month", "预警月份", 8, Part.WORK_ORDER, verbatim=True),
    SheetColumn("respond_by", "反馈截止日期", 11, Part.WORK_ORDER, verbatim=True),
    SheetColumn("village_name", "村名称", 9, Part.WORK_ORDER),
    SheetColumn("household_id", "户编号", 18, Part.WORK_ORDER, verbatim=True),
    SheetColumn("head_name", "户主姓名", 8, Part.WORK_ORDER),
    SheetColumn("head_id_masked", "户主身份证号", 19, Part.WORK_ORDER, verbatim=True),
    SheetColumn("contact_phone", "联系电话", 12, Part.WORK_ORDER, verbatim=True),
    SheetColumn("tier", "分层", 5, Part.WORK_ORDER),
    SheetColumn("predicted_risk_types", "预测风险类型", 10, Part.WORK_ORDER),
    SheetColumn("reasons", "预警原因", 40, Part.WORK_ORDER, multiline=True),
    SheetColumn("rules", "触发规则", 20, Part.WORK_ORDER, multiline=True),
    SheetColumn("departments", "帮扶部门", 10, Part.WORK_ORDER),
    SheetColumn("first_steps", "建议措施", 22, Part.WORK_ORDER, multiline=True),
    SheetColumn("alert_id", "预警编号", 8, Part.WORK_ORDER, verbatim=True),
    SheetColumn("verdict", "核实结果", 8, Part.RETURN),
    SheetColumn("risk_types", "确认风险类型", 12, Part.RETURN),
    SheetColumn("visited_on", "走访日期", 11, Part.RETURN),
    SheetColumn("caseworker", "核实人", 8, Part.RETURN),
    SheetColumn("note", "备注", 14, Part.RETURN),
)
BY_KEY = {c.key: c for c in SHEET_COLUMNS}
RETURN_COLUMNS = tuple(c for c in SHEET_COLUMNS if c.part is Part.RETURN)
# The key of each row: doudi writes it, the import needs it.
ALERT_ID = BY_KEY["alert_id"]
# 核实结果's drop-down list (data validation) and what each choice means.
VERDICT_CHOICES: dict[str, str] = {"属实": "confirmed", "不属实": "dismissed"}


def respond_by(exported_at: date | datetime, response_days: int) -> date:
    """反馈截止日期: the day a township's sheet is due back (`settings.response_days` after
    the export's date on the store's clock). After it, unreturned rows are overdue."""
    day = exported_at.date() if isinstance(exported_at, datetime) else exported_at
    return day + timedelta(days=response_days)
