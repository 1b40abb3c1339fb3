"""Reading the warehouse as of a month end T: the only way `features` sees data.

A row counts at T only if `reported_date <= T` and its event date (the feed's
contract `event_column`) is `<= T`. Rows with the same record key are versions:
the latest `reported_date` known at T wins (persons: latest `status_date`
first, then latest `reported_date`); ties break on provenance so the result is
deterministic.

Two entry points with the same semantics:
- `read_feed_as_of`: one feed, one T, in DuckDB (filter + QUALIFY row_number()).
- `load_history` + `VersionedFeed.as_of`: load a county's rows once (sorted by
  key and version), then take the version known at each of many T in numpy.
  The feature builder uses this so that 24 as-of months cost one read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from doudi.contract import Kind
from doudi.contract import feed as contract_feed
from doudi.errors import UserError
from doudi.months import Month, require_available
from doudi.warehouse import (
    COUNTY_DIR_PREFIX,
    county_of,
    data_files,
    feed_dir,
    latest_delivered_month,
    table_schema,
    warehouse_name,
)

# Contract columns `features` never reads (kept out of memory).
_UNUSED_COLUMNS: dict[str, frozenset[str]] = {
    "monitoring_events": frozenset({"category", "source"}),
}


# -- months ----------------------------------------------------------------------
# Users' months are `doudi.months.Month` (parsed once at the edge); these helpers do the
# day arithmetic inside `features` on month-end dates.
def month_end(value: date | Month) -> date:
    """The calendar month end of a day (or of a Month)."""
    return value.end if isinstance(value, Month) else Month.of(value).end


def month_index(day: date) -> int:
    """Months since 1970-01 (the unit of every window)."""
    return Month.of(day).index


def month_end_of_index(index: int) -> date:
    return Month(index).end


def add_months(as_of: date, months: int) -> date:
    """The month end `months` calendar months after month end `as_of`."""
    return (Month.of(as_of) + months).end


def month_range(first: Month, last: Month) -> list[date]:
    """Month ends from `first` to `last` inclusive."""
    if first > last:
        raise UserError(f"--from {first} is after the as-of month {last}")
    return [m.end for m in first.through(last)]


def require_delivered(
    warehouse: Path, month: Month, *, what: str = "--as-of", allow_undelivered: bool = False,
) -> Month:
    """`month`, refused (one-line UserError) when in the future or after the warehouse's
    latest delivered month (unless `allow_undelivered`): see `doudi.months.require_available`."""
    return require_available(month, latest_delivered_month(Path(warehouse)), what=what,
                             allow_undelivered=allow_undelivered)


def months_of(values: np.ndarray) -> np.ndarray:
    """datetime64 array -> int64 months since 1970-01 (NaT -> a very small number)."""
    return values.astype("datetime64[M]").astype(np.int64)


def spell_covers(start: np.ndarray | pd.Series, end: np.ndarray | pd.Series, as_of: date
                 ) -> np.ndarray:
    """Spells (benefit, programme) in force on day `as_of`: started by then and not ended
    before it (`start <= T` and `end` empty or `>= T`). Dates as datetime64 or Timestamps."""
    t = np.datetime64(as_of, "D")
    start_day = np.asarray(start).astype("datetime64[D]")
    end_day = np.asarray(end).astype("datetime64[D]")
    return (start_day <= t) & (np.isnat(end_day) | (end_day >= t))


# -- warehouse layout ------------------------------------------------------------------
def counties(warehouse: Path) -> list[str]:
    """Counties on the roster (county folders of the required households feed, holding
    month partitions, year files or both; a compaction removes a county folder it empties)."""
    root = feed_dir(warehouse, "households")
    if not root.is_dir():
        raise UserError(f"no households table in the warehouse {warehouse} (run ingest first)")
    found = sorted(county_of(p) for p in root.glob(f"{COUNTY_DIR_PREFIX}*") if p.is_dir())
    if not found:
        raise UserError(f"the households table in {warehouse} has no county partitions")
    return found


def partition_files(
    warehouse: Path, feed_name: str, county: str | None, upto: date,
    since: date | None = None,
) -> list[str]:
    """Parquet files holding rows reported in [since, upto] months (pruned by the path: a
    month partition's month, a year file's month range). A year file may also hold months
    after `upto` or before `since`: callers filter rows on `reported_date`."""
    hi = f"{upto:%Y-%m}"
    lo = f"{since:%Y-%m}" if since else ""
    return [str(f.path) for f in data_files(warehouse, feed_name, county) if f.meets(lo, hi)]


def _read_listed(list_files: Callable[[], list[str]],
                 read: Callable[[list[str]], pa.Table]) -> pa.Table | None:
    """`read(files)` on the files listed now (None when there are none). A compaction may
    remove a listed file between listing and reading (it adds the year file first): when
    DuckDB fails and a listed file is gone, list again and read once more."""
    files = list_files()
    if not files:
        return None
    try:
        return read(files)
    except duckdb.Error:
        if all(Path(f).exists() for f in files):
            raise
    files = list_files()
    return read(files) if files else None


def feed_columns(feed_name: str) -> list[str]:
    """Warehouse columns of a feed that features read."""
    unused = _UNUSED_COLUMNS.get(feed_name, frozenset())
    return [warehouse_name(c) for c in contract_feed(feed_name).column_names if c not in unused]


def _key_columns(feed_name: str) -> list[str]:
    return [warehouse_name(k) for k in contract_feed(feed_name).key]


def _version_order(feed_name: str) -> list[str]:
    """Order of versions within a key, oldest first (the last one wins)."""
    order = ["status_date"] if feed_name == "persons" else []
    return [*order, "reported_date", "source_file", "source_row"]


def event_sql(feed_name: str) -> str | None:
    """SQL for the date of the event a row describes (a year counts from its January 1)."""
    spec = contract_feed(feed_name)
    if spec.event_column is None:
        return None
    if spec.column(spec.event_column).kind == Kind.INT:
        return f"make_date(CAST({spec.event_column} AS INTEGER), 1, 1)"
    return spec.event_column


def event_dates(feed_name: str, rows: pd.DataFrame) -> np.ndarray | None:
    """datetime64[D] of each row's event (see `event_sql`)."""
    spec = contract_feed(feed_name)
    if spec.event_column is None:
        return None
    values = rows[spec.event_column]
    if spec.column(spec.event_column).kind == Kind.INT:
        years = values.astype("float64").to_numpy()
        out = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[D]")
        ok = ~np.isnan(years)
        out[ok] = (years[ok].astype(np.int64) - 1970).astype("datetime64[Y]").astype(
            "datetime64[D]")
        return out
    return values.to_numpy().astype("datetime64[D]")


def empty_frame(feed_name: str, columns: list[str] | None = None) -> pd.DataFrame:
    schema = table_schema(feed_name)
    columns = columns or feed_columns(feed_name)
    arrays = [pa.array([], type=schema.field(c).type) for c in columns]
    return pa.table(arrays, names=columns).to_pandas(date_as_object=False)


def _sql_list(files: list[str]) -> str:
    return "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"


def read_feed_as_of(
    warehouse: Path, feed_name: str, as_of: date | Month, county: str | None = None,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """The records of one feed as known at month end `as_of` (latest version per key)."""
    t = month_end(as_of)
    cols = columns or feed_columns(feed_name)
    keys = ", ".join(_key_columns(feed_name))
    order = ", ".join(f"{c} DESC" for c in _version_order(feed_name))
    event_expr = event_sql(feed_name)
    event = f"AND {event_expr} <= DATE '{t}'" if event_expr else ""

    def read(files: list[str]) -> pa.Table:
        sql = f"""
            SELECT {", ".join(cols)} FROM read_parquet({_sql_list(files)},
                                                       hive_partitioning=false,
                                                       union_by_name=true)
            WHERE reported_date <= DATE '{t}' {event}
            QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {order}) = 1
            ORDER BY {keys}
        """
        with duckdb.connect() as con:
            con.execute("SET threads TO 1")
            return con.sql(sql).to_arrow_table()

    table = _read_listed(lambda: partition_files(warehouse, feed_name, county, t), read)
    if table is None:
        return empty_frame(feed_name, cols)
    return table.to_pandas(date_as_object=False).reset_index(drop=True)


# -- one read, many as-of months --------------------------------------------------------
@dataclass
class VersionedFeed:
    """All rows of a feed (for one county) sorted by key then version, oldest first."""

    name: str
    rows: pd.DataFrame
    key_id: np.ndarray  # int64, equal for versions of one record
    reported: np.ndarray  # datetime64[D]
    event: np.ndarray | None  # datetime64[D] of the contract event column

    @property
    def empty(self) -> bool:
        return len(self.rows) == 0

    def known_mask(self, as_of: date) -> np.ndarray:
        t = np.datetime64(as_of, "D")
        mask = self.reported <= t
        if self.event is not None:
            mask &= self.event <= t
        return mask

    def as_of(self, as_of: date) -> pd.DataFrame:
        """The latest version of each record known at `as_of` (sorted by key)."""
        idx = np.flatnonzero(self.known_mask(as_of))
        keys = self.key_id[idx]
        last = np.ones(len(idx), dtype=bool)
        last[:-1] = keys[:-1] != keys[1:]
        return self.rows.iloc[idx[last]].reset_index(drop=True)


def load_history(
    warehouse: Path, feed_name: str, county: str, upto: date, event_since: date | None = None,
) -> VersionedFeed:
    """A county's rows of one feed reported by `upto` (and with events since `event_since`)."""
    return _versioned(feed_name, load_rows(warehouse, feed_name, county, upto, event_since))


def load_rows(
    warehouse: Path, feed_name: str, county: str, upto: date, event_since: date | None = None,
    con: duckdb.DuckDBPyConnection | None = None, sort: bool = True,
) -> pd.DataFrame:
    """load_history's rows, sorted by key then version (oldest first); with `sort=False`
    unsorted but with the provenance columns, for the caller to sort on coded keys."""
    cols = feed_columns(feed_name)
    if not sort:
        cols = [*cols, "source_file", "source_row"]
    event_expr = event_sql(feed_name)
    # reported_date never precedes the event date, so an event lower bound prunes partitions.
    since = event_since if event_expr else None
    keys = _key_columns(feed_name)
    where = f"reported_date <= DATE '{upto}'"
    if since is not None:
        where += f" AND {event_expr} >= DATE '{since}'"

    def read(files: list[str]) -> pa.Table:
        sql = f"""
            SELECT {", ".join(cols)} FROM read_parquet({_sql_list(files)},
                                                       hive_partitioning=false,
                                                       union_by_name=true)
            WHERE {where}
        """
        if sort:
            sql += f" ORDER BY {', '.join(keys + _version_order(feed_name))}"
        if con is None:
            with duckdb.connect() as own:
                own.execute("SET threads TO 1")
                return own.sql(sql).to_arrow_table()
        return con.sql(sql).to_arrow_table()

    table = _read_listed(lambda: partition_files(warehouse, feed_name, county, upto, since),
                         read)
    if table is None:
        return empty_frame(feed_name, cols)
    return table.to_pandas(date_as_object=False)


def _versioned(feed_name: str, rows: pd.DataFrame) -> VersionedFeed:
    keys = _key_columns(feed_name)
    n = len(rows)
    change = np.zeros(n, dtype=bool)
    if n:
        change[0] = True
        for k in keys:
            col = rows[k]
            change[1:] |= (col.iloc[1:].to_numpy() != col.iloc[:-1].to_numpy()) | (
                col.iloc[1:].isna().to_numpy() != col.iloc[:-1].isna().to_numpy()
            )
    key_id = np.cumsum(change).astype(np.int64)
    reported = rows["reported_date"].to_numpy().astype("datetime64[D]")
    return VersionedFeed(feed_name, rows, key_id, reported, event_dates(feed_name, rows))


def versioned_from_frame(
    feed_name: str, rows: pd.DataFrame, presorted: bool = False,
) -> VersionedFeed:
    """A VersionedFeed from rows in memory (same order rules as `load_history`); rows
    already in `load_rows` order (records contiguous, versions oldest first) need no sort."""
    if not presorted and len(rows):
        order = [c for c in _key_columns(feed_name) + _version_order(feed_name) if c in rows]
        if "source_file" in order:  # sort provenance as lexicographic codes: much faster
            codes, _ = pd.factorize(rows["source_file"], sort=True)
            rows = rows.assign(source_file=codes)
        rows = rows.sort_values(order, kind="stable")
    return _versioned(feed_name, rows[feed_columns(feed_name)].reset_index(drop=True))
