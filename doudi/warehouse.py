"""The warehouse layout: what ingest writes and `features` reads. One definition.

    <home>/warehouse/<feed>/county=<6-digit county>/reported_month=<YYYY-MM>/part-<id>.parquet
    <home>/warehouse/<feed>/county=<c>/reported_year=<YYYY>/months-<YYYY-MM>-<YYYY-MM>-<run>.parquet

Ingest writes month partitions; `doudi compact` (ingest/compact.py) rewrites the files
of a closed year into one year file per feed x county x year, whose name carries the
first and last reported month it holds (readers prune by name, never by footer). A
late delivery into a compacted year lands in a month folder beside the year file.
Readers list data files with `data_files` (both kinds, each with its month range) and
filter rows on `reported_date`: a year file may hold months after the one asked for.

Columns are the contract's canonical names and types, except that identifiers
are keyed pseudonyms under their own names (`person_id` -> `person_key`,
`household_id` -> `household_key`, `head_person_id` -> `head_person_key`);
`persons.sex` and `persons.birth_date` are those of the ID number. Every table
also carries `county_code`, `reported_month` (partition keys, also stored as
columns) and the row's provenance (`source_file`, `source_row`).
MONTH columns are dates (first day of the month); ENUM_LIST columns are the
canonical codes joined by ';' in contract order.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pyarrow as pa

from doudi.contract import FEEDS, Feed, Kind, feed
from doudi.errors import UserError
from doudi.months import Month

PSEUDONYM_NAMES: dict[str, str] = {
    "person_id": "person_key",
    "household_id": "household_key",
    "head_person_id": "head_person_key",
}
PARTITION_COLUMNS: tuple[str, ...] = ("county_code", "reported_month")
PROVENANCE_COLUMNS: tuple[str, ...] = ("source_file", "source_row")

_ARROW_TYPES: dict[Kind, pa.DataType] = {
    Kind.ID: pa.string(),
    Kind.STR: pa.string(),
    Kind.VILLAGE: pa.string(),
    Kind.ENUM: pa.string(),
    Kind.ENUM_LIST: pa.string(),
    Kind.DATE: pa.date32(),
    Kind.MONTH: pa.date32(),
    Kind.INT: pa.int64(),
    Kind.FLOAT: pa.float64(),
    Kind.MONEY: pa.float64(),
    Kind.BOOL: pa.bool_(),
}


def warehouse_name(column: str) -> str:
    """The warehouse name of a contract column (pseudonymised identifiers renamed)."""
    return PSEUDONYM_NAMES.get(column, column)


@cache
def table_schema(feed_name: str) -> pa.Schema:
    """The Arrow schema of one warehouse table."""
    spec: Feed = feed(feed_name)
    fields = [
        pa.field(warehouse_name(c.name), _ARROW_TYPES[c.kind], nullable=c.nullable)
        for c in spec.columns
    ]
    fields += [
        pa.field("county_code", pa.string(), nullable=False),
        pa.field("reported_month", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
    ]
    return pa.schema(fields)


COUNTY_DIR_PREFIX = "county="
MONTH_DIR_PREFIX = "reported_month="
YEAR_DIR_PREFIX = "reported_year="
YEAR_FILE_PREFIX = "months-"
_MONTH_TEXT = len("YYYY-MM")


def partition_dir(feed_name: str, county: str, reported_month: str) -> str:
    """The partition folder of one county and reported month, relative to the warehouse."""
    return f"{feed_name}/{COUNTY_DIR_PREFIX}{county}/{MONTH_DIR_PREFIX}{reported_month}"


def year_dir(feed_name: str, county: str, year: int) -> str:
    """The folder of one county's compacted year files, relative to the warehouse."""
    return f"{feed_name}/{COUNTY_DIR_PREFIX}{county}/{YEAR_DIR_PREFIX}{year:04d}"


def year_file_name(first: Month, last: Month, run_id: str) -> str:
    """`months-<first>-<last>-<run>.parquet`: a year file holding reported months first..last."""
    if first > last or first.year != last.year:
        raise ValueError(f"a year file holds months of one year: {first}..{last}")
    return f"{YEAR_FILE_PREFIX}{first}-{last}-{run_id}.parquet"


def parse_year_file(name: str) -> tuple[Month, Month] | None:
    """(first, last) reported month of a year file's name; None for any other name."""
    if not (name.startswith(YEAR_FILE_PREFIX) and name.endswith(".parquet")):
        return None
    rest = name.removeprefix(YEAR_FILE_PREFIX)
    first, last = rest[:_MONTH_TEXT], rest[_MONTH_TEXT + 1:2 * _MONTH_TEXT + 1]
    if rest[_MONTH_TEXT:_MONTH_TEXT + 1] != "-" or rest[2 * _MONTH_TEXT + 1:][:1] != "-":
        return None
    try:
        months = (Month.parse(first, what="year file"), Month.parse(last, what="year file"))
    except UserError:
        return None
    return months if months[0] <= months[1] and months[0].year == months[1].year else None


def county_of(folder: Path) -> str:
    """The county code of a `county=...` partition folder."""
    return folder.name.removeprefix(COUNTY_DIR_PREFIX)


def month_of(folder: Path) -> str:
    """The `YYYY-MM` of a `reported_month=...` partition folder."""
    return folder.name.removeprefix(MONTH_DIR_PREFIX)


@dataclass(frozen=True)
class DataFile:
    """One Parquet file of a feed table and the reported months it holds (from its path)."""

    path: Path
    county: str
    first: str  # YYYY-MM
    last: str  # YYYY-MM; == first for a month partition's file

    @property
    def compacted(self) -> bool:
        return self.path.parent.name.startswith(YEAR_DIR_PREFIX)

    @property
    def year(self) -> str:
        return self.first[:4]

    def meets(self, lo: str, hi: str) -> bool:
        """Holds a reported month in [lo, hi] (YYYY-MM; "" for no lower bound)."""
        return self.first <= hi and self.last >= lo


def data_files(warehouse: Path, feed_name: str, county: str | None = None) -> list[DataFile]:
    """Every data file of a feed (all counties, or one), month partitions and year files,
    sorted by path. Folders or files that are not the layout's are not data (skipped)."""
    root = Path(warehouse) / feed_name
    found: list[DataFile] = []
    if not root.is_dir():
        return found
    for county_dir in sorted(root.glob(f"{COUNTY_DIR_PREFIX}{county or '*'}")):
        code = county_of(county_dir)
        for folder in sorted(county_dir.glob(f"{MONTH_DIR_PREFIX}*")):
            month = month_of(folder)
            if _is_month(month):
                found += [DataFile(f, code, month, month) for f in sorted(folder.glob("*.parquet"))]
        for folder in sorted(county_dir.glob(f"{YEAR_DIR_PREFIX}*")):
            for f in sorted(folder.glob(f"{YEAR_FILE_PREFIX}*.parquet")):
                months = parse_year_file(f.name)
                if months is not None:
                    found.append(DataFile(f, code, str(months[0]), str(months[1])))
    return sorted(found, key=lambda d: d.path)


def _is_month(text: str) -> bool:
    try:
        Month.parse(text, what="partition")
    except UserError:
        return False
    return True


def latest_delivered_month(warehouse: Path) -> Month | None:
    """The newest reported month of any feed (month partition folders and the last month
    of year files); None for an empty warehouse."""
    latest: Month | None = None
    for folder in Path(warehouse).glob(f"*/{COUNTY_DIR_PREFIX}*/{MONTH_DIR_PREFIX}*"):
        try:
            month = Month.parse(month_of(folder), what="partition")
        except UserError:  # not a partition ingest wrote: not a delivery
            continue
        if folder.is_dir() and (latest is None or month > latest):
            latest = month
    for path in Path(warehouse).glob(f"*/{COUNTY_DIR_PREFIX}*/{YEAR_DIR_PREFIX}*/"
                                     f"{YEAR_FILE_PREFIX}*.parquet"):
        months = parse_year_file(path.name)
        if months is not None and (latest is None or months[1] > latest):
            latest = months[1]
    return latest


def fingerprint_through(warehouse: Path, last: Month) -> str:
    """A digest of every warehouse file reported by `last` (path, size, modification time):
    what anything computed point in time as of `last` or earlier can have read. Ingest only
    adds partitions of later months, so it stays the same until a file reported by `last`
    is written or removed (a late re-ingest of an old month, or a compaction, changes it).
    A year file counts when its first month is <= `last`."""
    import hashlib

    root = Path(warehouse)
    paths = [path for path in root.glob(f"*/{COUNTY_DIR_PREFIX}*/{MONTH_DIR_PREFIX}*/*")
             if month_of(path.parent) <= str(last)]
    for path in root.glob(f"*/{COUNTY_DIR_PREFIX}*/{YEAR_DIR_PREFIX}*/{YEAR_FILE_PREFIX}*"):
        months = parse_year_file(path.name)
        if months is not None and months[0] <= last:
            paths.append(path)
    digest = hashlib.sha256()
    for path in sorted(paths):
        stat = path.stat()
        digest.update(f"{path.relative_to(warehouse)}\t{stat.st_size}\t{stat.st_mtime_ns}\n"
                      .encode())
    return digest.hexdigest()[:32]


def feed_dir(warehouse: Path, feed_name: str) -> Path:
    return warehouse / feed_name


def feed_glob(warehouse: Path, feed_name: str) -> str:
    """A glob DuckDB/pyarrow can read (`hive_partitioning` optional: columns are stored)."""
    return str(feed_dir(warehouse, feed_name) / "**" / "*.parquet")


def all_schemas() -> dict[str, pa.Schema]:
    return {f.name: table_schema(f.name) for f in FEEDS}
