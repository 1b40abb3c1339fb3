"""The warehouse layout: what ingest writes and `features` reads. One definition.

    <home>/warehouse/<feed>/county=<6-digit county>/reported_month=<YYYY-MM>/part-<id>.parquet

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


def partition_dir(feed_name: str, county: str, reported_month: str) -> str:
    """The partition folder of one county and reported month, relative to the warehouse."""
    return f"{feed_name}/{COUNTY_DIR_PREFIX}{county}/{MONTH_DIR_PREFIX}{reported_month}"


def county_of(folder: Path) -> str:
    """The county code of a `county=...` partition folder."""
    return folder.name.removeprefix(COUNTY_DIR_PREFIX)


def month_of(folder: Path) -> str:
    """The `YYYY-MM` of a `reported_month=...` partition folder."""
    return folder.name.removeprefix(MONTH_DIR_PREFIX)


def latest_delivered_month(warehouse: Path) -> Month | None:
    """The newest `reported_month` partition of any feed; None for an empty warehouse."""
    latest: Month | None = None
    for folder in Path(warehouse).glob(f"*/{COUNTY_DIR_PREFIX}*/{MONTH_DIR_PREFIX}*"):
        try:
            month = Month.parse(month_of(folder), what="partition")
        except UserError:  # not a partition ingest wrote: not a delivery
            continue
        if folder.is_dir() and (latest is None or month > latest):
            latest = month
    return latest


def fingerprint_through(warehouse: Path, last: Month) -> str:
    """A digest of every warehouse file reported by `last` (path, size, modification time):
    what anything computed point in time as of `last` or earlier can have read. Ingest only
    adds partitions of later months, so it stays the same until a file reported by `last`
    is written or removed (a late re-ingest of an old month changes it)."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(Path(warehouse).glob(f"*/{COUNTY_DIR_PREFIX}*/{MONTH_DIR_PREFIX}*/*")):
        if month_of(path.parent) > str(last):
            continue
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
