"""Caseworkers' verdicts back into the store: the sheet doudi exported, returned.

`doudi feedback import FILE` reads the caseworker sheet (`serving/sheet.py`) as doudi
wrote it and a caseworker edited it in Excel/WPS: the .xlsx workbook (one worksheet per
village: every worksheet with a 预警编号 column is read) or the GBK CSV beside it (UTF-8
too). Columns are found by their header, Chinese or the English key, so reordered,
hidden or added columns do not matter. Only 预警编号 and the return columns (核实结果,
确认风险类型, 走访日期, 核实人, 备注) are read: the predicted columns (预测风险类型 and the
rest of the work order) are never taken for a verdict, and names or phones never read.

Per row (docs/alerts.md "Feedback from caseworkers"):
- no 核实结果, 确认风险类型, 走访日期 or 核实人: not yet visited (counted, not an error;
  a 备注 alone is not a visit and is not kept);
- a row breaking a rule is skipped and reported (file, sheet, row, column, rule) while
  the good rows are imported; with `all_or_nothing` any such row stops the import;
- the verdict already stored, identically: already recorded (a second import of the same
  file changes nothing);
- a different verdict for one alert, stored or on another row of the file: a conflict,
  reported and not imported; the store keeps what it has (corrections are not imported).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from doudi.contract import RISK_TYPES
from doudi.errors import UserError
from serving.sheet import ALERT_ID, BY_KEY, RETURN_COLUMNS, VERDICT_CHOICES
from serving.store.database import chunks
from serving.store.inputs import VerdictInput, contains_id_number
from serving.store.lifecycle import Status
from serving.store.models import Alert, Verdict
from serving.store.store import AlertStore
from serving.store.verdicts import stored_verdicts

# The columns the import reads, by key: the row's key and the caseworker's part of the sheet.
READ_COLUMNS = (ALERT_ID, *RETURN_COLUMNS)
REQUIRED = ("alert_id", "verdict", "visited_on", "caseworker")
# Filled in by a visit: a row with none of them is not yet visited (a 备注 alone is not a visit).
VISIT_KEYS = ("verdict", "risk_types", "visited_on", "caseworker")
VERDICT_SPELLINGS = VERDICT_CHOICES | {v: v for v in VERDICT_CHOICES.values()}
RISK_TYPE_LOOKUP = {code: code for code in RISK_TYPES} | {
    zh: code for code, zh in RISK_TYPES.items() if zh
}
NO_RISK_TYPES = frozenset({"无", "-", "—"})  # what a caseworker writes for "none"
_LIST_SEPARATORS = re.compile(r"[;；,，、/\s]+")
# 2026-04-02, 2026/4/2, 2026.4.2, 2026年4月2日; a midnight time that Excel adds is allowed.
_DATE = re.compile(r"^(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?(?:\s+0?0:00(?::00)?)?$")
# A spreadsheet keeps an identifier as text behind a leading tab (how doudi writes the CSV)
# or apostrophe (how Excel/WPS users type it).
_TEXT_MARKS = "\t '‘’"
# Rows above the header: a title row or two may sit above it.
HEADER_SEARCH_ROWS = 10
MAX_NOTE = 500
MAX_PROBLEMS_SHOWN = 20


@dataclass(frozen=True)
class Problem:
    """Why one row (or the header) was not imported: where, and the rule it breaks."""

    sheet: str | None  # the worksheet's name; None for a CSV file
    row: int  # spreadsheet row (the first row is 1)
    column: str | None  # the header as the file spells it
    rule: str
    alert_id: int | None = None

    def __str__(self) -> str:
        where = f"sheet {self.sheet} " if self.sheet is not None else ""
        column = f" column {self.column}" if self.column else ""
        return f"{where}row {self.row}{column}: {self.rule}"

    def as_dict(self) -> dict[str, Any]:
        return {"sheet": self.sheet, "row": self.row, "column": self.column,
                "rule": self.rule, "alert_id": self.alert_id}


@dataclass(frozen=True)
class VerdictRow:
    """One valid row of a feedback file."""

    sheet: str | None
    row: int
    headers: dict[str, str]  # key -> header as this sheet spells it (for messages)
    alert_id: int
    verdict: str
    risk_types: tuple[str, ...]
    visited_on: date
    caseworker: str
    note: str | None

    def finding(self) -> VerdictInput:
        return VerdictInput(self.alert_id, self.verdict, self.risk_types, self.visited_on,
                            self.caseworker, self.note)

    def same_finding(self, other: VerdictRow) -> bool:
        return (self.verdict, sorted(self.risk_types), self.visited_on, self.caseworker,
                self.note) == (other.verdict, sorted(other.risk_types), other.visited_on,
                               other.caseworker, other.note)

    def problem(self, key: str, rule: str) -> Problem:
        return Problem(self.sheet, self.row, self.headers[key], rule, self.alert_id)

    def place(self) -> str:
        return f"sheet {self.sheet} row {self.row}" if self.sheet is not None else f"row {self.row}"


@dataclass(frozen=True)
class FeedbackFile:
    """What a feedback file holds, checked on its own (no store)."""

    file: str
    sheets: list[str]  # worksheets read (a CSV: none)
    rows: list[VerdictRow]
    not_visited: int
    problems: list[Problem]  # rows breaking a rule, one entry per column at fault

    @property
    def rows_read(self) -> int:
        return len(self.rows) + self.not_visited + len({(p.sheet, p.row) for p in self.problems})


@dataclass(frozen=True)
class ImportReport:
    """`import_feedback`'s outcome: every row read lands in exactly one count."""

    file: str
    sheets: list[str]
    rows: int  # rows read (blank rows not counted)
    imported: int
    already_recorded: int  # identical verdict stored already, or on an earlier row of the file
    not_visited: int
    skipped: list[Problem] = field(default_factory=list)  # rows breaking a rule
    conflicts: list[Problem] = field(default_factory=list)  # a different verdict, not imported

    @property
    def skipped_rows(self) -> int:
        return len({(p.sheet, p.row) for p in self.skipped})

    @property
    def clean(self) -> bool:
        """Every row imported, already recorded or not yet visited."""
        return not self.skipped and not self.conflicts

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file, "sheets": self.sheets, "rows": self.rows,
            "imported": self.imported, "already_recorded": self.already_recorded,
            "not_visited": self.not_visited, "skipped_rows": self.skipped_rows,
            "skipped": [p.as_dict() for p in self.skipped],
            "conflicts": [p.as_dict() for p in self.conflicts],
        }

    def to_text(self) -> str:
        sheets = f" from {len(self.sheets)} sheet(s)" if self.sheets else ""
        lines = [
            f"{self.file}: {self.rows} row(s) read{sheets}",
            f"  imported          {self.imported}",
            f"  already recorded  {self.already_recorded}",
            f"  not yet visited   {self.not_visited}",
            f"  skipped           {self.skipped_rows}",
            f"  conflicts         {len(self.conflicts)}",
        ]
        if self.skipped:
            lines.append("skipped (correct these rows and import the file again):")
            lines += _shown(self.skipped)
        if self.conflicts:
            lines.append("conflicts (not imported; the store keeps the verdict it has):")
            lines += _shown(self.conflicts)
        return "\n".join(lines) + "\n"


def _shown(problems: Sequence[Problem]) -> list[str]:
    lines = [f"  {p}" for p in problems[:MAX_PROBLEMS_SHOWN]]
    if len(problems) > MAX_PROBLEMS_SHOWN:
        lines.append(f"  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more "
                     "(`--format json` lists all)")
    return lines


class FeedbackError(UserError):
    """A file that cannot be imported (or, all or nothing, has bad rows); nothing written."""

    def __init__(self, file: str, problems: Sequence[Problem | str]) -> None:
        shown = [str(p) for p in problems[:MAX_PROBLEMS_SHOWN]]
        more = len(problems) - len(shown)
        lines = [f"{file}: {len(problems)} problem(s), nothing imported:", *shown]
        if more:
            lines.append(f"... and {more} more")
        super().__init__("\n  ".join(lines))
        self.file = file
        self.problems = list(problems)


# -- reading the file ----------------------------------------------------------------


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


Table = tuple[str | None, Iterator[list[Any]]]  # (worksheet name or None, rows of cells)


def _csv_tables(path: Path) -> Iterator[Table]:
    yield None, csv.reader(io.StringIO(_decode(path), newline=""))


def _xlsx_tables(path: Path) -> Iterator[Table]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except Exception as err:  # openpyxl raises many types for a damaged file
        raise UserError(f"{path}: not a readable .xlsx workbook ({type(err).__name__})") from None
    try:
        for sheet in workbook.worksheets:
            if hasattr(sheet, "reset_dimensions"):  # some writers store wrong dimensions
                sheet.reset_dimensions()
            yield sheet.title, (list(v) for v in sheet.iter_rows(values_only=True))
    finally:
        workbook.close()


def _tables(path: Path) -> Iterator[Table]:
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        return _xlsx_tables(path)
    if suffix in (".csv", ".txt"):
        return _csv_tables(path)
    raise UserError(f"{path}: unsupported file type {suffix!r}; use .csv (UTF-8/GBK) or .xlsx")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _header_name(value: Any) -> str:
    # Excel users wrap long headers (Alt+Enter) and pad them: compare without whitespace.
    return re.sub(r"\s+", "", _text(value))


ACCEPTED_HEADERS = {c.key: c.key for c in READ_COLUMNS} | {c.header: c.key for c in READ_COLUMNS}


class _RowError(Exception):
    pass


def _alert_id(value: Any) -> int:
    if isinstance(value, bool):
        raise _RowError("must be a whole number (the alert id)")
    if isinstance(value, int):
        result = value
    elif isinstance(value, float) and value.is_integer():
        result = int(value)  # Excel stores numbers as floats
    elif isinstance(value, str) and value.strip(_TEXT_MARKS).isdigit():
        result = int(value.strip(_TEXT_MARKS))
    else:
        raise _RowError("must be a whole number (the alert id)")
    if result <= 0:
        raise _RowError("must be a positive alert id")
    return result


def _verdict(value: Any) -> str:
    text = _text(value)
    found = VERDICT_SPELLINGS.get(text) or VERDICT_SPELLINGS.get(text.lower())
    if found is None:
        choices = "/".join(VERDICT_CHOICES)
        raise _RowError(f"must be {choices} or {'/'.join(VERDICT_CHOICES.values())}")
    return found


def _risk_types(value: Any) -> tuple[str, ...]:
    out: list[str] = []
    for part in _LIST_SEPARATORS.split(_text(value)):
        if not part or part in NO_RISK_TYPES:
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


def _find_header(rows: Iterator[list[Any]]) -> tuple[int, list[Any]] | None:
    """(row number, cells) of the first row naming the alert id column, near the top."""
    for number, cells in enumerate(rows, start=1):
        if any(ACCEPTED_HEADERS.get(_header_name(c)) == ALERT_ID.key for c in cells):
            return number, cells
        if number >= HEADER_SEARCH_ROWS:
            break
    return None


Columns = tuple[dict[str, int], dict[str, str], list[Problem]]


def _columns(sheet: str | None, number: int, cells: list[Any]) -> Columns:
    """key -> position, key -> header as spelled (for the columns the import reads), and
    the header's problems."""
    position: dict[str, int] = {}
    spelled: dict[str, str] = {}
    problems: list[Problem] = []
    for i, cell in enumerate(cells):
        key = ACCEPTED_HEADERS.get(_header_name(cell))
        if key is None:
            continue  # the work order, names, phones, the caseworker's own columns: not read
        if key in position:
            problems.append(Problem(sheet, number, _text(cell), f"repeats column {key}"))
        position[key] = i
        spelled[key] = _text(cell)
    for key in REQUIRED:
        if key not in position:
            problems.append(Problem(sheet, number, None,
                                    f"missing column {BY_KEY[key].header} ({key})"))
    return position, {c.key: c.header for c in READ_COLUMNS} | spelled, problems


_PARSERS = {
    "alert_id": _alert_id,
    "verdict": _verdict,
    "risk_types": _risk_types,
    "caseworker": _caseworker,
    "note": _note,
}


def _read_row(sheet: str | None, number: int, values: dict[str, Any],
              headers: dict[str, str], today: date) -> VerdictRow | list[Problem]:
    """A valid row, or the problems of a visited row that breaks a rule."""
    parsed: dict[str, Any] = {}
    problems: list[Problem] = []

    def fault(key: str, rule: str) -> None:
        problems.append(Problem(sheet, number, headers[key], rule, parsed.get("alert_id")))

    for key in ("alert_id", "verdict", "risk_types", "visited_on", "caseworker", "note"):
        value = values.get(key)
        if key in REQUIRED and _blank(value):
            fault(key, "is required once a visit is recorded on the row"
                  if key != "alert_id" else "is required (the alert id doudi wrote)")
            continue
        try:
            parsed[key] = _date(value, today) if key == "visited_on" else _PARSERS[key](value)
        except _RowError as err:
            fault(key, str(err))
    if problems:
        return problems
    if parsed["verdict"] == "confirmed" and not parsed["risk_types"]:
        return [Problem(sheet, number, headers["risk_types"], "is required when the verdict "
                        f"is {_choice('confirmed')}", parsed["alert_id"])]
    if parsed["verdict"] == "dismissed" and parsed["risk_types"]:
        return [Problem(sheet, number, headers["risk_types"],
                        f"must be empty when {_choice('dismissed')}", parsed["alert_id"])]
    return VerdictRow(sheet, number, headers, **parsed)


def _choice(verdict: str) -> str:
    return next(zh for zh, v in VERDICT_CHOICES.items() if v == verdict)


def read_feedback(path: Path, *, today: date) -> FeedbackFile:
    """Read and check a feedback file on its own (no store).

    A file doudi cannot read as a return form (no sheet with a 预警编号 column, a sheet
    missing 核实结果/走访日期/核实人, a repeated column) is a `FeedbackError`; a row
    breaking a rule is one of the returned `problems`.
    """
    file = str(path)
    if not path.is_file():
        raise UserError(f"{file}: no such file")
    sheets: list[str] = []
    rows: list[VerdictRow] = []
    problems: list[Problem] = []
    header_problems: list[Problem] = []
    not_visited = 0
    forms = 0  # tables with a 预警编号 column
    for sheet, cells_of in _tables(path):
        found = _find_header(cells_of)
        forms += found is not None
        if found is None:
            if sheet is None:
                header_problems.append(Problem(None, 1, None, f"missing column {ALERT_ID.header} "
                                               f"({ALERT_ID.key})"))
            continue  # a worksheet that is not a return form (a caseworker's own notes)
        header_row, header = found
        position, headers, wrong = _columns(sheet, header_row, header)
        header_problems += wrong
        if sheet is not None:
            sheets.append(sheet)
        if wrong:
            continue
        for number, cells in enumerate(cells_of, start=header_row + 1):
            values = {k: (cells[i] if i < len(cells) else None) for k, i in position.items()}
            if all(_blank(v) for v in values.values()):
                if not all(_blank(c) for c in cells):
                    not_visited += 1  # the work order is there, the visit is not yet
                continue
            if all(_blank(values.get(k)) for k in VISIT_KEYS):
                not_visited += 1  # a 备注 alone records no visit
                continue
            read = _read_row(sheet, number, values, headers, today)
            if isinstance(read, VerdictRow):
                rows.append(read)
            else:
                problems += read
    if not forms and not header_problems:
        header_problems.append(Problem(None, 1, None, "no worksheet has a "
                                       f"{ALERT_ID.header} ({ALERT_ID.key}) column"))
    if header_problems:
        raise FeedbackError(file, header_problems)
    return FeedbackFile(file, sheets, rows, not_visited, problems)


# -- checking against the store and importing -------------------------------------------


@dataclass
class _Plan:
    record: list[VerdictRow] = field(default_factory=list)
    already_recorded: int = 0
    skipped: list[Problem] = field(default_factory=list)
    conflicts: list[Problem] = field(default_factory=list)


def _by_alert(rows: Iterable[VerdictRow]) -> dict[int, list[VerdictRow]]:
    groups: dict[int, list[VerdictRow]] = {}
    for row in rows:
        groups.setdefault(row.alert_id, []).append(row)
    return groups


def _plan(rows: Sequence[VerdictRow], alerts: dict[int, Alert],
          verdicts: dict[int, Verdict]) -> _Plan:
    """What to record, and why each other row is not recorded."""
    plan = _Plan()
    for alert_id, group in _by_alert(rows).items():
        first, alert, stored = group[0], alerts.get(alert_id), verdicts.get(alert_id)
        if alert is None:
            plan.skipped += [r.problem("alert_id", f"no alert {alert_id} in the store")
                             for r in group]
        elif any(not r.same_finding(first) for r in group):
            places = "; ".join(r.place() for r in group)
            plan.conflicts += [r.problem("verdict", f"alert {alert_id} has different verdicts "
                                         f"on {places}; none imported") for r in group]
        elif stored is not None:
            if first.finding().same_as(stored):
                plan.already_recorded += len(group)
            else:
                plan.conflicts += [r.problem(
                    "verdict", f"alert {alert_id} already has a different verdict "
                    f"({_choice(stored.verdict)}, visited {stored.visited_on}"
                    + (f", from {stored.source_file}" if stored.source_file else "")
                    + "); corrections are not imported") for r in group]
        elif alert.status != Status.DISPATCHED.value:
            plan.skipped += [r.problem("alert_id", f"alert {alert_id} is {alert.status!r}; "
                                       "verdicts are accepted for dispatched alerts")
                             for r in group]
        elif first.visited_on < alert.as_of:
            plan.skipped += [r.problem("visited_on", f"visit {r.visited_on} is before the "
                                       f"alert's as-of date {alert.as_of}") for r in group]
        else:
            plan.record.append(first)
            plan.already_recorded += len(group) - 1  # identical repeats of the row
    return plan


def read_rows(rows: Sequence[Mapping[str, Any]], *, today: date,
              file: str = "request") -> FeedbackFile:
    """Verdict rows given as key -> value (the sheet's keys: alert_id, verdict, risk_types,
    visited_on, caseworker, note; the API's `/verdicts`), checked by a file row's rules.
    Every row is a visit: a row without one breaks the required-field rules. A problem's
    `row` is the row's position (0 = first), its `column` the key."""
    headers = {c.key: c.key for c in READ_COLUMNS}
    good: list[VerdictRow] = []
    problems: list[Problem] = []
    for number, values in enumerate(rows):
        read = _read_row(None, number, dict(values), headers, today)
        if isinstance(read, VerdictRow):
            good.append(read)
        else:
            problems += read
    return FeedbackFile(file, [], good, 0, problems)


def import_feedback(store: AlertStore, path: Path, *, actor: str, today: date | None = None,
                    all_or_nothing: bool = False) -> ImportReport:
    """Record a feedback file's good rows; report the rest (`ImportReport`).

    In one transaction, the file's alerts locked until it commits. With
    `all_or_nothing`, any skipped row or conflict raises `FeedbackError` and nothing is
    written. A file doudi cannot read as a return form always raises.
    """
    today = today or store.now().date()
    read = read_feedback(path, today=today)
    return record_feedback(store, read, actor=actor, source_file=path.name,
                           all_or_nothing=all_or_nothing)


def record_feedback(store: AlertStore, read: FeedbackFile, *, actor: str,
                    source_file: str | None, all_or_nothing: bool = False) -> ImportReport:
    """Record the good rows of `read` (a file's, or `read_rows`'); `import_feedback`'s
    rules and transaction."""
    with store.transaction() as session:
        ids = sorted({r.alert_id for r in read.rows})
        alerts: dict[int, Alert] = {}
        for chunk in chunks(ids):
            # Locked until commit: no one else changes these alerts mid-import.
            locked = select(Alert).where(Alert.id.in_(chunk)).with_for_update()
            alerts.update((a.id, a) for a in session.scalars(locked))
        plan = _plan(read.rows, alerts, stored_verdicts(session, ids))
        order = _file_order(read.sheets)
        skipped = sorted([*read.problems, *plan.skipped], key=order)
        conflicts = sorted(plan.conflicts, key=order)
        if all_or_nothing and (skipped or conflicts):
            every: list[Problem] = sorted([*skipped, *conflicts], key=order)
            raise FeedbackError(read.file, every)
        findings = [r.finding() for r in plan.record]
        recorded = store.record_verdicts_in(session, findings, actor=actor,
                                            source_file=source_file)
        assert all(recorded), "checked above: none of these alerts had a verdict"
    return ImportReport(file=read.file, sheets=read.sheets, rows=read.rows_read,
                        imported=len(findings), already_recorded=plan.already_recorded,
                        not_visited=read.not_visited, skipped=skipped, conflicts=conflicts)


def _file_order(sheets: Sequence[str]) -> Callable[[Problem], tuple[int, int]]:
    """Problems in the order of the file: worksheet by worksheet, row by row."""
    index = {name: i for i, name in enumerate(sheets)}
    return lambda p: (index.get(p.sheet, -1) if p.sheet is not None else -1, p.row)
