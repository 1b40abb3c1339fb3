"""Caseworkers' verdicts back into the store: CSV (UTF-8 or GBK) or Excel .xlsx.

Rows are keyed by alert id. Headers may be canonical or Chinese (预警编号,
核实结果, 风险类型, 走访日期, 核实人, 备注); other columns are ignored and never
read (a caseworker sheet carries names and addresses). Every row is checked
first; any bad row stops the import with errors naming file, row, column and
rule, and nothing is written. Valid files are imported in one transaction;
re-importing the same file changes nothing.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from doudi.contract import RISK_TYPES
from doudi.errors import UserError
from serving.store.database import chunks
from serving.store.inputs import VerdictInput, contains_id_number
from serving.store.lifecycle import Status
from serving.store.models import Alert
from serving.store.store import AlertStore
from serving.store.verdicts import stored_verdicts

# canonical name -> Chinese header
COLUMNS: dict[str, str] = {
    "alert_id": "预警编号",
    "verdict": "核实结果",
    "risk_types": "风险类型",
    "visited_on": "走访日期",
    "caseworker": "核实人",
    "note": "备注",
}
REQUIRED = ("alert_id", "verdict", "visited_on", "caseworker")
VERDICT_SPELLINGS = {
    "confirmed": "confirmed",
    "属实": "confirmed",
    "dismissed": "dismissed",
    "不属实": "dismissed",
}
RISK_TYPE_LOOKUP = {code: code for code in RISK_TYPES} | {
    zh: code for code, zh in RISK_TYPES.items() if zh
}
_LIST_SEPARATORS = re.compile(r"[;；,，、/\s]+")
_DATE = re.compile(r"^(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?$")
MAX_NOTE = 500
MAX_ERRORS_SHOWN = 20


@dataclass(frozen=True)
class VerdictRow:
    """One valid row of a feedback file (`row` = spreadsheet row, header = 1)."""

    row: int
    alert_id: int
    verdict: str
    risk_types: tuple[str, ...]
    visited_on: date
    caseworker: str
    note: str | None

    def finding(self) -> VerdictInput:
        return VerdictInput(
            self.alert_id,
            self.verdict,
            self.risk_types,
            self.visited_on,
            self.caseworker,
            self.note,
        )


@dataclass(frozen=True)
class ImportReport:
    file: str
    rows: int
    recorded: int
    unchanged: int  # identical verdicts already in the store (re-import)


class FeedbackError(UserError):
    """A feedback file with bad rows; `problems` lists them all."""

    def __init__(self, file: str, problems: Sequence[str]) -> None:
        shown = list(problems[:MAX_ERRORS_SHOWN])
        more = len(problems) - len(shown)
        lines = [f"{file}: {len(problems)} problem(s), nothing imported:", *shown]
        if more:
            lines.append(f"... and {more} more")
        super().__init__("\n  ".join(lines))
        self.file = file
        self.problems = list(problems)


# -- reading -----------------------------------------------------------------


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030")  # a superset of GBK
    except UnicodeDecodeError:
        raise UserError(f"{path}: neither UTF-8 nor GBK text") from None


def _csv_rows(path: Path) -> Iterator[list[Any]]:
    yield from csv.reader(io.StringIO(_decode(path), newline=""))


def _xlsx_rows(path: Path) -> Iterator[list[Any]]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except Exception as err:  # openpyxl raises many types for a damaged file
        raise UserError(f"{path}: not a readable .xlsx workbook ({type(err).__name__})") from None
    try:
        sheet = workbook.worksheets[0]
        for values in sheet.iter_rows(values_only=True):
            yield list(values)
    finally:
        workbook.close()


def _rows(path: Path) -> Iterator[list[Any]]:
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        return _xlsx_rows(path)
    if suffix in (".csv", ".txt"):
        return _csv_rows(path)
    raise UserError(f"{path}: unsupported file type {suffix!r}; use .csv (UTF-8/GBK) or .xlsx")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


class _RowError(Exception):
    pass


def _alert_id(value: Any) -> int:
    if isinstance(value, bool):
        raise _RowError("must be a whole number (the alert id)")
    if isinstance(value, int):
        result = value
    elif isinstance(value, float) and value.is_integer():
        result = int(value)  # Excel stores numbers as floats
    elif isinstance(value, str) and value.strip().isdigit():
        result = int(value.strip())
    else:
        raise _RowError("must be a whole number (the alert id)")
    if result <= 0:
        raise _RowError("must be a positive alert id")
    return result


def _verdict(value: Any) -> str:
    text = _text(value)
    found = VERDICT_SPELLINGS.get(text) or VERDICT_SPELLINGS.get(text.lower())
    if found is None:
        raise _RowError("must be 属实/不属实 or confirmed/dismissed")
    return found


def _risk_types(value: Any) -> tuple[str, ...]:
    out: list[str] = []
    for part in _LIST_SEPARATORS.split(_text(value)):
        if not part:
            continue
        code = RISK_TYPE_LOOKUP.get(part) or RISK_TYPE_LOOKUP.get(part.lower())
        if code is None:
            raise _RowError(
                "unknown risk type; use codes or terms of the contract "
                f"({', '.join(f'{c} {zh}' for c, zh in RISK_TYPES.items())})"
            )
        if code not in out:
            out.append(code)
    return tuple(out)


def _date(value: Any, today: date) -> date:
    if isinstance(value, datetime):
        result = value.date()
    elif isinstance(value, date):
        result = value
    else:
        match = _DATE.match(_text(value))
        if not match:
            raise _RowError("must be a date like 2026-03-15")
        try:
            result = date(int(match[1]), int(match[2]), int(match[3]))
        except ValueError:
            raise _RowError("is not a calendar date") from None
    if result > today:
        raise _RowError(f"is after today ({today})")
    return result


def _caseworker(value: Any) -> str:
    text = _text(value)
    if not text:
        raise _RowError("is required (the caseworker's staff code)")
    if len(text) > 32:
        raise _RowError("must be at most 32 characters (a staff code)")
    if contains_id_number(text):
        raise _RowError("must be a caseworker's staff code, not a resident ID number")
    return text


def _note(value: Any) -> str | None:
    text = _text(value)
    if len(text) > MAX_NOTE:
        raise _RowError(f"must be at most {MAX_NOTE} characters")
    if contains_id_number(text):
        raise _RowError("must not contain an identity number")
    return text or None


def read_feedback(path: Path, *, today: date) -> list[VerdictRow]:
    """Parse and check a feedback file on its own (no store); FeedbackError on bad rows."""
    return _parse(path, today=today)[0]


def _parse(path: Path, *, today: date) -> tuple[list[VerdictRow], dict[str, str]]:
    """Valid rows, and canonical name -> header as the file spells it (for messages)."""
    file = str(path)
    if not path.is_file():
        raise UserError(f"{file}: no such file")
    rows = _rows(path)
    header = next(rows, None)
    if header is None:
        raise FeedbackError(file, ["row 1: the file is empty (a header row is expected)"])
    accepted = {name: name for name in COLUMNS} | {zh: name for name, zh in COLUMNS.items()}
    position: dict[str, int] = {}
    shown_header: dict[str, str] = {}
    problems: list[str] = []
    for i, cell in enumerate(header):
        name = accepted.get(_text(cell)) or accepted.get(_text(cell).lower())
        if name is None:
            continue  # other columns (names, addresses...) are ignored
        if name in position:
            problems.append(f"row 1 column {_text(cell)}: repeats column {name}")
        position[name] = i
        shown_header[name] = _text(cell)
    for name in REQUIRED:
        if name not in position:
            problems.append(f"row 1: missing column {COLUMNS[name]} ({name})")
    if problems:
        raise FeedbackError(file, problems)

    out: list[VerdictRow] = []
    first_row_of: dict[int, int] = {}
    for number, cells in enumerate(rows, start=2):
        if all(_blank(c) for c in cells):
            continue
        values = {n: (cells[i] if i < len(cells) else None) for n, i in position.items()}
        parsed: dict[str, Any] = {}
        row_ok = True
        parsers = {
            "alert_id": _alert_id,
            "verdict": _verdict,
            "risk_types": _risk_types,
            "visited_on": lambda v: _date(v, today),
            "caseworker": _caseworker,
            "note": _note,
        }
        for name, parse in parsers.items():
            value = values.get(name)
            if name in REQUIRED and _blank(value):
                problems.append(f"row {number} column {shown_header[name]}: is required")
                row_ok = False
                continue
            try:
                parsed[name] = parse(value)
            except _RowError as err:
                column = shown_header.get(name, COLUMNS[name])
                problems.append(f"row {number} column {column}: {err}")
                row_ok = False
        if not row_ok:
            continue
        types_column = shown_header.get("risk_types", COLUMNS["risk_types"])
        if parsed["verdict"] == "confirmed" and not parsed["risk_types"]:
            problems.append(
                f"row {number} column {types_column}: is required when the verdict is 属实"
            )
            continue
        if parsed["verdict"] == "dismissed" and parsed["risk_types"]:
            problems.append(f"row {number} column {types_column}: must be empty when 不属实")
            continue
        row = VerdictRow(number, **parsed)
        earlier = first_row_of.setdefault(row.alert_id, number)
        if earlier != number:
            problems.append(
                f"row {number} column {shown_header['alert_id']}: "
                f"alert {row.alert_id} is already on row {earlier}"
            )
            continue
        out.append(row)
    if problems:
        raise FeedbackError(file, problems)
    return out, dict(COLUMNS) | shown_header


# -- importing ---------------------------------------------------------------


def import_feedback(
    store: AlertStore, path: Path, *, actor: str, today: date | None = None
) -> ImportReport:
    """Check a feedback file against the store and record its verdicts, all or nothing."""
    today = today or store.now().date()
    rows, header = _parse(path, today=today)
    file = str(path)
    problems: list[str] = []
    with store.transaction() as session:
        ids = [r.alert_id for r in rows]
        alerts: dict[int, Alert] = {}
        for chunk in chunks(ids):
            # Locked until commit: no one else changes these alerts mid-import.
            locked = select(Alert).where(Alert.id.in_(chunk)).with_for_update()
            alerts.update((a.id, a) for a in session.scalars(locked))
        verdicts = stored_verdicts(session, ids)
        for row in rows:
            where = f"row {row.row} column"
            alert = alerts.get(row.alert_id)
            if alert is None:
                problems.append(
                    f"{where} {header['alert_id']}: no alert {row.alert_id} in the store"
                )
                continue
            existing = verdicts.get(row.alert_id)
            if existing is not None:
                if not row.finding().same_as(existing):
                    problems.append(
                        f"{where} {header['verdict']}: alert {row.alert_id} already has a "
                        f"different verdict (visited {existing.visited_on}); "
                        "corrections are not imported"
                    )
                continue
            if alert.status != Status.DISPATCHED.value:
                problems.append(
                    f"{where} {header['alert_id']}: alert {row.alert_id} is {alert.status!r}; "
                    "verdicts are accepted for dispatched alerts"
                )
                continue
            if row.visited_on < alert.as_of:
                problems.append(
                    f"{where} {header['visited_on']}: visit {row.visited_on} is before the "
                    f"alert's as-of date {alert.as_of}"
                )
        if problems:
            raise FeedbackError(file, problems)
        findings = [r.finding() for r in rows]
        # Same transaction as the checks above: all rows or none.
        stored = store.record_verdicts_in(session, findings, actor=actor, source_file=path.name)
        recorded = sum(stored)
        unchanged = len(stored) - recorded
    return ImportReport(file=file, rows=len(rows), recorded=recorded, unchanged=unchanged)
