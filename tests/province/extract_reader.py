"""An independent reader and rule checker for raw extracts, built on doudi.contract only.

Used by the generator tests to judge what the generator wrote without trusting any
of its internals: every file is read back as text, headers mapped through the
contract, and every value checked against the contract's rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from doudi import contract
from doudi.contract import FALSE_SPELLINGS, TRUE_SPELLINGS, Kind
from doudi.idnumber import id_problem

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MONTH = re.compile(r"^\d{4}-\d{2}$")
_MONEY = re.compile(r"^-?\d+(\.\d{1,2})?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# the contract's shaped text columns and the rule a wrong shape breaks
_SHAPE_RULES = {"household_id": "bad_household_id", "code": "bad_division_code"}
WARNING_REASONS = frozenset({"reported_before_event"})  # valid rows, only odd
PENDING_REASONS = frozenset({"unknown_household"})  # valid rows, waiting for a referent
Listed = set[tuple[str, str, int, str, str]]


@dataclass
class FeedFile:
    feed: str
    rel: str  # path relative to raw/
    frame: pd.DataFrame  # canonical column names, every value text ("" = empty)
    extra_columns: list[str]


def _as_text(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return repr(round(value, 6)).removesuffix(".0")
    return str(value)


def csv_text(path: Path) -> str:
    """A CSV extract's text: gunzipped where `.gz`, UTF-8 (with or without BOM) or GB18030."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        import gzip

        data = gzip.decompress(data)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("gb18030")


def read_file(raw: Path, path: Path) -> FeedFile:
    feed = path.parent.name
    spec = contract.feed(feed)
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        frame = pd.DataFrame(
            {
                name: [_as_text(v) for v in table.column(name).to_pylist()]
                for name in table.column_names
            }
        )
    else:
        import io

        frame = pd.read_csv(io.StringIO(csv_text(path)), dtype=str, keep_default_na=False)
    lookup = spec.header_lookup()
    extra = [c for c in frame.columns if c not in lookup]
    frame = frame.rename(columns=lookup)
    return FeedFile(feed, str(path.relative_to(raw)), frame, extra)


def read_raw(raw: Path) -> list[FeedFile]:
    files = sorted(p for p in raw.rglob("*") if p.is_file())
    return [read_file(raw, p) for p in files]


@cache
def _day(text: str) -> date | None:
    if not _DATE.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _month_first(text: str) -> date | None:
    if not _MONTH.match(text):
        return None
    try:
        return date(int(text[:4]), int(text[5:7]), 1)
    except ValueError:
        return None


def value_problem(col: contract.Column, value: str) -> str | None:
    """The rule `value` breaks in column `col`, or None."""
    if _CONTROL.search(value):
        return "control_character"
    if value == "":
        return None if col.nullable or col.kind == Kind.STR else "missing_value"
    kind = col.kind
    if col.pattern is not None and not re.fullmatch(col.pattern, value):
        return _SHAPE_RULES[col.name]
    if kind == Kind.ID:
        problem = id_problem(value)
        return problem
    if kind == Kind.ENUM:
        return None if value in col.enum_lookup() else "unknown_enum"
    if kind == Kind.ENUM_LIST:
        parts = value.split(";")
        return None if all(p in col.enum_lookup() for p in parts) else "unknown_enum"
    if kind == Kind.DATE:
        return None if _day(value) else "bad_date"
    if kind == Kind.MONTH:
        return None if _month_first(value) else "bad_date"
    if kind == Kind.MONEY:
        if not _MONEY.match(value):
            return "bad_money"
        return "negative_money" if float(value) < 0 and not col.signed else None
    if kind == Kind.INT:
        return None if re.match(r"^-?\d+$", value) else "bad_int"
    if kind == Kind.FLOAT:
        try:
            float(value)
        except ValueError:
            return "bad_float"
        return None
    if kind == Kind.BOOL:
        return None if value in TRUE_SPELLINGS | FALSE_SPELLINGS else "bad_bool"
    if kind == Kind.VILLAGE:
        return None if re.match(r"^\d{12}$", value) else "bad_village"
    return None


@cache
def _problem(feed: str, column: str, value: str) -> str | None:
    return value_problem(contract.feed(feed).column(column), value)


@cache
def _event_first_day(kind: Kind, value: str) -> date | None:
    if kind == Kind.DATE:
        return _day(value)
    if kind == Kind.MONTH:
        return _month_first(value)
    if kind == Kind.INT and value:
        return date(int(value), 1, 1)
    return None


def find_violations(files: list[FeedFile]) -> Listed:
    """(feed, file, row, column, reason) for every row breaking a contract rule."""
    return {v for v in find_problems(files) if v[4] not in WARNING_REASONS | PENDING_REASONS}


def find_warnings(files: list[FeedFile]) -> Listed:
    """(feed, file, row, column, reason) for every valid but odd row (reported early)."""
    return {v for v in find_problems(files) if v[4] in WARNING_REASONS}


def find_pending(files: list[FeedFile]) -> Listed:
    """(feed, file, row, column, reason) for every valid row whose household is unknown."""
    return {v for v in find_problems(files) if v[4] in PENDING_REASONS}


def find_problems(files: list[FeedFile]) -> Listed:
    """Every row breaking a contract rule, reported before its event or of no household."""
    roster = set()
    for f in files:
        if f.feed == "households":
            roster |= set(f.frame["household_id"])
    found: set[tuple[str, str, int, str, str]] = set()
    for f in files:
        spec = contract.feed(f.feed)
        names = [c.name for c in spec.contract_columns]
        columns = [f.frame[name].tolist() for name in names]
        event_at = names.index(spec.event_column) if spec.event_column else None
        event_kind = spec.column(spec.event_column).kind if spec.event_column else None
        reported_at = names.index("reported_date")
        household_at = names.index("household_id") if f.feed == "persons" else None
        for i, values in enumerate(zip(*columns, strict=True), start=1):
            problems = [
                (name, problem)
                for name, value in zip(names, values, strict=True)
                if (problem := _problem(f.feed, name, value))
            ]
            if not problems and event_at is not None and event_kind is not None:
                event = _event_first_day(event_kind, values[event_at])
                reported = _day(values[reported_at])
                if event and reported and reported < event:
                    problems.append(("reported_date", "reported_before_event"))
            if not problems and household_at is not None and values[household_at] not in roster:
                problems.append(("household_id", "unknown_household"))
            for column, reason in problems:
                found.add((f.feed, f.rel, i, column, reason))
    return found


def load_bad_rows(truth: Path, name: str = "bad_rows.csv") -> Listed:
    """Rows listed in truth/bad_rows.csv (or another list of the same layout)."""
    frame = pd.read_csv(truth / name, dtype={"row": int})
    return {(r.feed, r.file, int(r.row), r.column, r.reason) for r in frame.itertuples()}


def load_warning_rows(truth: Path) -> Listed:
    """Rows listed in truth/warning_rows.csv: valid, kept by ingest with a warning."""
    return load_bad_rows(truth, "warning_rows.csv")


def load_pending_rows(truth: Path) -> Listed:
    """Rows listed in truth/pending_rows.csv: of a household never on the roster."""
    return load_bad_rows(truth, "pending_rows.csv")


def clean_frames(
    files: list[FeedFile], bad: set[tuple[str, str, int, str, str]]
) -> dict[str, pd.DataFrame]:
    """Each feed's rows without the listed rows, exact duplicates dropped (every contract
    column, names and phones included)."""
    bad_rows = {(b[1], b[2]) for b in bad}
    parts: dict[str, list[pd.DataFrame]] = {}
    for f in files:
        spec = contract.feed(f.feed)
        keep = [i for i in range(1, len(f.frame) + 1) if (f.rel, i) not in bad_rows]
        names = [c.name for c in spec.contract_columns]
        frame = f.frame.iloc[[i - 1 for i in keep]][names].copy()
        frame = frame.assign(_file=f.rel)
        parts.setdefault(f.feed, []).append(frame)
    out = {}
    for feed, frames in parts.items():
        spec = contract.feed(feed)
        frame = pd.concat(frames, ignore_index=True)
        names = [c.name for c in spec.contract_columns]
        out[feed] = frame.drop_duplicates(subset=names).reset_index(drop=True)
    return out


def canonical_enum(feed: str, column: str, series: pd.Series) -> pd.Series:
    lookup = contract.feed(feed).column(column).enum_lookup()
    return series.map(lambda v: lookup.get(v, v) if v else v)


def canonical_risk_types(series: pd.Series) -> pd.Series:
    lookup = contract.feed("monitoring_events").column("risk_types").enum_lookup()
    order = {code: k for k, code in enumerate(contract.RISK_TYPES)}

    def norm(value: str) -> str:
        codes = {lookup[p] for p in value.split(";")} if value else set()
        return ";".join(sorted(codes, key=order.__getitem__))

    return series.map(norm)
