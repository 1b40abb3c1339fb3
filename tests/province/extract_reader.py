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
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            import gzip

            data = gzip.decompress(data)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode("gb18030")
        import io

        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
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
    if value == "":
        return None if col.nullable or col.kind == Kind.STR else "missing_value"
    kind = col.kind
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


def find_violations(files: list[FeedFile]) -> set[tuple[str, str, int, str, str]]:
    """(feed, file, row, column, reason) for every row breaking a contract rule."""
    roster = set()
    for f in files:
        if f.feed == "households":
            roster |= set(f.frame["household_id"])
    found: set[tuple[str, str, int, str, str]] = set()
    for f in files:
        spec = contract.feed(f.feed)
        names = list(spec.column_names)
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


def load_bad_rows(truth: Path) -> set[tuple[str, str, int, str, str]]:
    frame = pd.read_csv(truth / "bad_rows.csv", dtype={"row": int})
    return {(r.feed, r.file, int(r.row), r.column, r.reason) for r in frame.itertuples()}


def clean_frames(
    files: list[FeedFile], bad: set[tuple[str, str, int, str, str]]
) -> dict[str, pd.DataFrame]:
    """Each feed's rows without the listed bad rows, exact duplicates dropped."""
    bad_rows = {(b[1], b[2]) for b in bad}
    parts: dict[str, list[pd.DataFrame]] = {}
    for f in files:
        spec = contract.feed(f.feed)
        keep = [i for i in range(1, len(f.frame) + 1) if (f.rel, i) not in bad_rows]
        frame = f.frame.iloc[[i - 1 for i in keep]][list(spec.column_names)].copy()
        frame = frame.assign(_file=f.rel)
        parts.setdefault(f.feed, []).append(frame)
    out = {}
    for feed, frames in parts.items():
        spec = contract.feed(feed)
        frame = pd.concat(frames, ignore_index=True)
        out[feed] = frame.drop_duplicates(subset=list(spec.column_names)).reset_index(drop=True)
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
