"""The caseworker sheet as an Excel workbook: a work order to print and a form to fill in.

One worksheet per village (named after it), the `serving.sheet` columns in order. For
the screen: wrapped text, frozen header and who-columns. For paper: A4 landscape, fit to
the page width, the header row repeated on every page, row heights that show every line
(openpyxl does not fit them: `row_height` estimates from the text and column widths).
The return columns carry data validation: 核实结果 a drop-down (`VERDICT_CHOICES`),
确认风险类型 a drop-down of the hardship names (several may be typed, 、-separated),
走访日期 a date. Every text cell is a typed string cell (`doudi.safe_text.xlsx_cell`):
never a formula; identifiers are text, never numbers.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from copy import copy
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from doudi.contract import RISK_TYPES
from doudi.safe_text import xlsx_cell
from serving.sheet import BY_KEY, SHEET_COLUMNS, VERDICT_CHOICES, Part

FONT_SIZE = 11
# Column widths count the default font's (Calibri 11) digit widths. At FONT_SIZE a digit
# takes one; a Chinese character about 2.1 in Excel and WPS (a 15-pixel glyph against a
# 7-pixel digit), about 1.6 in LibreOffice. Rows are sized for the widest, so that no line
# is ever cut (a line that does not fit is not shown or printed at all); LibreOffice then
# shows some room below the text, which the return columns use for handwriting.
NARROW_UNITS = 1.0
WIDE_UNITS = 2.1
CELL_PADDING_UNITS = 1.0
LINE_POINTS = 15.0  # one wrapped line at FONT_SIZE, CJK fonts included
ROW_PADDING_POINTS = 4.0
MIN_ROW_LINES = 2  # a household's row leaves room to write the verdict by hand
SHEET_TITLE_LIMIT = 31  # Excel's limit for a worksheet name
_TITLE_FORBIDDEN = re.compile(r"[\[\]:*?/\\]")
# 1900 date system: Excel's serial day 0 (a validation's bounds are serial days)
_EXCEL_EPOCH = date(1899, 12, 30)
TIER_FILLS = {"红色": "F8CBAD", "橙色": "FCE4D6", "黄色": "FFF2CC"}
RETURN_FILL = "E2EFDA"  # the caseworker's columns, light green
HEADER_FILL = "D9D9D9"


BY_HEADER = {c.header: c for c in SHEET_COLUMNS}


class RenderError(Exception):
    """A row could not be written. `label` names it by alert id (`alert 17`), never by a
    value: the cause's own text may quote one (openpyxl's does)."""

    def __init__(self, label: str, cause: Exception) -> None:
        super().__init__(f"{label}: {type(cause).__name__}")
        self.label = label
        self.cause_name = type(cause).__name__


def text_width(line: str) -> float:
    """`line`'s width in column units (Chinese and other wide characters are wider)."""
    return sum(WIDE_UNITS if unicodedata.east_asian_width(c) in "WF" else NARROW_UNITS
               for c in line)


def lines_needed(text: str, width: float) -> int:
    """Lines a wrapped cell of `width` (column units) needs to show all of `text`."""
    usable = max(1.0, width - CELL_PADDING_UNITS)
    return sum(max(1, math.ceil(text_width(line) / usable)) for line in text.split("\n"))


def row_height(values: Sequence[Any], widths: Sequence[float], min_lines: int = 1) -> float:
    """Points a row needs so that its tallest wrapped cell shows every line."""
    tallest = max((lines_needed(v, w) for v, w in zip(values, widths, strict=True)
                   if isinstance(v, str) and v), default=1)
    return max(tallest, min_lines) * LINE_POINTS + ROW_PADDING_POINTS


def sheet_titles(names: Sequence[str]) -> list[str]:
    """Worksheet names for `names`: Excel's forbidden characters dropped, at most 31
    characters, unique (a repeated name gets ` (2)`, ` (3)`)."""
    titles: list[str] = []
    taken: set[str] = set()
    for name in names:
        base = _TITLE_FORBIDDEN.sub("", name).strip().strip("'")[:SHEET_TITLE_LIMIT] or "村"
        title, n = base, 1
        while title.casefold() in taken:
            n += 1
            suffix = f" ({n})"
            title = base[: SHEET_TITLE_LIMIT - len(suffix)] + suffix
        taken.add(title.casefold())
        titles.append(title)
    return titles


def excel_serial(day: date) -> int:
    return (day - _EXCEL_EPOCH).days


def _validations(first_visit: date) -> dict[str, Any]:
    """Return-column key -> its data validation (openpyxl), ranges added per sheet."""
    from openpyxl.worksheet.datavalidation import DataValidation

    verdict = DataValidation(
        type="list", formula1='"' + ",".join(VERDICT_CHOICES) + '"', allow_blank=True,
        showErrorMessage=True, errorTitle="核实结果", error="请从下拉列表选择："
        + "、".join(VERDICT_CHOICES) + "（未走访的留空）",
        showInputMessage=True, promptTitle="核实结果", prompt="走访核实后选择："
        + "、".join(VERDICT_CHOICES) + "；未走访的留空")
    # Several types are allowed (因病、住房安全): the list offers one, typing more is fine.
    types = DataValidation(
        type="list", formula1='"' + ",".join(RISK_TYPES.values()) + '"', allow_blank=True,
        showErrorMessage=False, showInputMessage=True, promptTitle="确认风险类型",
        prompt="核实属实的风险类型；可填多个，用“、”分隔")
    visited = DataValidation(
        type="date", operator="greaterThanOrEqual", formula1=str(excel_serial(first_visit)),
        allow_blank=True, showErrorMessage=True, errorTitle="走访日期",
        error=f"请填写日期，如 {first_visit.isoformat()}（不早于预警月份最后一天）",
        showInputMessage=True, promptTitle="走访日期", prompt="格式：2026-07-05")
    return {"verdict": verdict, "risk_types": types, "visited_on": visited}


def _row_label(rows: pd.DataFrame, position: int) -> str:
    header = BY_KEY["alert_id"].header
    if header in rows.columns:
        return f"alert {rows[header].iloc[position]}"
    return f"row {position + 2}"


def _fill(color: str) -> Any:
    from openpyxl.styles import PatternFill

    return PatternFill("solid", start_color=color, end_color=color)


def _write_page(ws: Any, rows: pd.DataFrame, page_title: str, first_visit: date) -> None:
    from openpyxl.styles import Alignment, Border, Font, Side
    from openpyxl.utils import get_column_letter

    wrap = Alignment(wrap_text=True, vertical="top")
    thin = Side(style="thin", color="808080")
    border = Border(left=thin, right=thin, top=thin, bottom=thin)
    header_font, body = Font(size=FONT_SIZE, bold=True), Font(size=FONT_SIZE)
    columns = [BY_HEADER[h] for h in rows.columns]
    widths = [float(c.width) for c in columns]
    for c, column in enumerate(columns, 1):
        cell = ws.cell(1, c)
        xlsx_cell(cell, column.header)
        cell.alignment, cell.font, cell.border = wrap, header_font, border
        cell.fill = _fill(RETURN_FILL if column.part is Part.RETURN else HEADER_FILL)
        ws.column_dimensions[get_column_letter(c)].width = column.width
    ws.row_dimensions[1].height = row_height([c.header for c in columns], widths)
    tier_at = next((i for i, c in enumerate(columns) if c.key == "tier"), None)
    # A body cell's style, set once per kind then copied: assigning style objects cell by
    # cell makes openpyxl hash them each time, most of a township's export time at 1M.
    styles: dict[bool, Any] = {}
    tier_styles: dict[str, Any] = {}
    for r, values in enumerate(rows.itertuples(index=False), 2):
        try:
            for c, (value, column) in enumerate(zip(values, columns, strict=True), 1):
                cell = ws.cell(r, c)
                xlsx_cell(cell, value, multiline=column.multiline)
                is_date = column.key == "visited_on"
                if is_date in styles:
                    cell._style = copy(styles[is_date])
                    continue
                cell.alignment, cell.font, cell.border = wrap, body, border
                if is_date:
                    cell.number_format = "yyyy-mm-dd"
                styles[is_date] = copy(cell._style)
        except Exception as exc:
            raise RenderError(_row_label(rows, r - 2), exc) from None
        if tier_at is not None and values[tier_at] in TIER_FILLS:
            tier_cell = ws.cell(r, tier_at + 1)
            if values[tier_at] in tier_styles:
                tier_cell._style = copy(tier_styles[values[tier_at]])
            else:
                tier_cell.fill = _fill(TIER_FILLS[values[tier_at]])
                tier_styles[values[tier_at]] = copy(tier_cell._style)
        ws.row_dimensions[r].height = row_height(list(values), widths, MIN_ROW_LINES)
    last = ws.max_row
    if last >= 2:
        for key, validation in _validations(first_visit).items():
            if BY_KEY[key].header in rows.columns:
                letter = get_column_letter(list(rows.columns).index(BY_KEY[key].header) + 1)
                validation.add(f"{letter}2:{letter}{last}")
                ws.add_data_validation(validation)
    # Screen: header and the who-columns stay in view (up to the head's name).
    names_at = list(rows.columns).index(BY_KEY["head_name"].header) + 2 \
        if BY_KEY["head_name"].header in rows.columns else 1
    ws.freeze_panes = f"{get_column_letter(names_at)}2"
    # Paper: A4 landscape, every column on the page, header on every page.
    ws.page_setup.orientation = "landscape"
    ws.page_setup.paperSize = ws.PAPERSIZE_A4
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0  # as many pages down as the rows need
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.print_title_rows = "1:1"
    ws.print_options.horizontalCentered = True
    ws.page_margins.left = ws.page_margins.right = 0.3
    ws.page_margins.top = ws.page_margins.bottom = 0.6
    ws.page_margins.header = ws.page_margins.footer = 0.25
    ws.oddHeader.center.text = page_title.replace("&", "&&")
    ws.oddFooter.center.text = "第 &P 页，共 &N 页"


def write_workbook(pages: Sequence[tuple[str, pd.DataFrame]], path: Path, title: str,
                   first_visit: date) -> None:
    """Write one worksheet per (name, rows) page; `title` heads every printed page.

    `first_visit`: the earliest 走访日期 the date validation accepts (the alert month's
    last day, its as-of date: the import refuses a visit before it). Raises RenderError
    naming the failing row's position in its page.
    """
    from openpyxl import Workbook

    book = Workbook()
    book.remove(book.active)
    for name, (_, rows) in zip(sheet_titles([n for n, _ in pages]), pages, strict=True):
        _write_page(book.create_sheet(name), rows, f"{title} {name}", first_visit)
    if not pages:  # nothing new: an empty sheet with the header, still a valid workbook
        _write_page(book.create_sheet("预警"), pd.DataFrame(columns=list(BY_HEADER)),
                    title, first_visit)
    with path.open("wb") as fh:  # the staged file exists already, 0600
        book.save(fh)
