"""Warehouse compaction: a closed year's files -> one year file per feed x county x year.

Ingest writes a part file per feed x county x reported month (and more on late
deliveries): 36 months of a province are thousands of small files that every reader
lists and opens. A year is closed once its December is delivered (<= `through`,
default the latest delivered month); then each feed x county x year holding more than
one file (month folders, or an older year file plus months a late re-ingest wrote)
is rewritten as one file (`doudi.warehouse.year_file_name`): the same rows verbatim,
sorted by `reported_date` then the feed's key (row-group statistics prune dates), zstd.

Atomic like ingest (`ingest.store.Stager`, under the ingest lock, `recover` first):
the commit moves the year file in before it removes the old files, so a reader
without the lock sees the old files, or old and new (exact duplicate rows, which the
as-of rule's latest version per key collapses), never neither. `_rowhash` is not
touched: re-ingesting an extract stays a no-op. A rerun changes nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from doudi.contract import FEED_NAMES
from doudi.contract import feed as contract_feed
from doudi.errors import UserError
from doudi.months import Month, require_not_future
from doudi.settings import Settings
from doudi.warehouse import (
    DataFile,
    data_files,
    latest_delivered_month,
    table_schema,
    warehouse_name,
    year_dir,
    year_file_name,
)
from ingest.store import (
    WRITER_THREADS,
    Stager,
    load_manifest,
    new_run_id,
    recover,
    workspace_lock,
)

# Rows per row group: about a month of a county's rows of a busy feed, so a reader's
# `reported_date` filter skips most of a year file's row groups by their statistics.
ROW_GROUP_ROWS = 65_536


@dataclass(frozen=True)
class YearGroup:
    """The files of one feed x county x closed year that become one year file."""

    feed: str
    county: str
    year: int
    files: tuple[DataFile, ...]

    @property
    def label(self) -> str:
        return f"{self.feed}/county={self.county}/{self.year}"


@dataclass
class CompactionReport:
    """What one compaction did (or, with `dry_run`, would do)."""

    through: str  # YYYY-MM: years whose December is <= this were closed; "" if empty
    dry_run: bool
    files_before: int  # data files of every feed table
    files_after: int
    bytes_before: int
    bytes_after: int  # a dry run writes nothing: the old files' bytes less the groups'
    rows: int  # rows rewritten into year files
    years: list[str] = field(default_factory=list)  # feed/county=<c>/<year> compacted
    seconds: float = 0.0
    run_id: str = ""

    def line(self) -> str:
        """One line for the monthly summary."""
        verb = "would compact" if self.dry_run else "compacted"
        if not self.years:
            through = f" through {self.through}" if self.through else ""
            return (f"nothing to compact{through} ({self.files_before:,} warehouse file(s); "
                    f"{self.seconds:.1f}s)")
        return (f"{verb} {len(self.years):,} feed x county x year group(s) through "
                f"{self.through}: {self.files_before:,} -> {self.files_after:,} warehouse "
                f"file(s), {self.rows:,} row(s) ({self.seconds:.1f}s)")

    def to_text(self) -> str:
        lines = [f"compaction{' (dry run)' if self.dry_run else ''}: {self.line()}"]
        if self.years:
            per_year = Counter(label.rsplit("/", 1)[1] for label in self.years)
            lines += [f"  {year}: {n:,} feed x county file group(s) -> one year file each"
                      for year, n in sorted(per_year.items())]
            size = "" if self.dry_run else f" -> {self.bytes_after:,}"
            lines.append(f"  bytes: {self.bytes_before:,}{size}")
        return "\n".join(lines) + "\n"


def plan(warehouse: Path, through: Month) -> tuple[list[YearGroup], list[DataFile]]:
    """(groups to compact, every data file): closed years holding more than one file."""
    every: list[DataFile] = []
    groups: list[YearGroup] = []
    for feed_name in FEED_NAMES:
        files = data_files(warehouse, feed_name)
        every += files
        by_year: dict[tuple[str, int], list[DataFile]] = {}
        for f in files:
            by_year.setdefault((f.county, int(f.year)), []).append(f)
        for (county, year), members in sorted(by_year.items()):
            if len(members) > 1 and Month.from_ym(year, 12) <= through:
                groups.append(YearGroup(feed_name, county, year, tuple(members)))
    return groups, every


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with `schema`'s columns in its order (a column an older file lacks: nulls)."""
    columns = [table[f.name] if f.name in table.column_names else pa.nulls(len(table), f.type)
               for f in schema]
    return pa.table(columns, schema=schema.remove_metadata()).cast(schema)


def _sort_keys(feed_name: str) -> list[tuple[str, str]]:
    keys = [warehouse_name(k) for k in contract_feed(feed_name).key]
    order = ["reported_date", *[k for k in keys if k != "reported_date"], "source_file",
             "source_row"]
    return [(c, "ascending") for c in order]


def year_table(group: YearGroup) -> pa.Table:
    """Every row of the group's files (verbatim), sorted by reported date, key, provenance."""
    schema = table_schema(group.feed)
    parts = [_conform(pq.read_table(f.path), schema) for f in group.files]
    return pa.concat_tables(parts).sort_by(_sort_keys(group.feed))


def _stage(stager: Stager, group: YearGroup) -> int:
    """Write the group's year file into staging; its old files go on commit. Rows written."""
    table = year_table(group)
    expected = sum(pq.ParquetFile(f.path).metadata.num_rows for f in group.files)
    if table.num_rows != expected:  # never lose or invent a row
        raise RuntimeError(f"{group.label}: read {table.num_rows} rows of {expected}")
    months = table["reported_month"]
    first = Month.parse(str(pc.min(months)), what="reported_month")
    last = Month.parse(str(pc.max(months)), what="reported_month")
    relative = (f"{year_dir(group.feed, group.county, group.year)}/"
                f"{year_file_name(first, last, stager.run_id)}")
    pq.write_table(table, stager.path("warehouse", relative), compression="zstd",
                   row_group_size=ROW_GROUP_ROWS)
    for old in group.files:
        stager.remove_on_commit(old.path)
    return table.num_rows


def _require_delivered(through: Month, latest: Month | None) -> None:
    """A one-line UserError for a `--through` in the future or after the last delivery
    (a year not yet delivered cannot be closed; no --allow-undelivered here)."""
    require_not_future(through, what="--through", latest=latest)
    if latest is None:
        raise UserError(f"--through {through}: the warehouse is empty; run `doudi ingest` "
                        "first")
    if through > latest:
        raise UserError(f"--through {through} is after the latest delivered month {latest}: "
                        "leave --through out to compact the years closed by then")


def compact_warehouse(settings: Settings, through: Month | None = None,
                      dry_run: bool = False) -> CompactionReport:
    """Compact every closed year (December <= `through`, default the latest delivered
    month) holding more than one file per feed x county; atomic, idempotent. A `through`
    in the future or after the latest delivered month is a UserError."""
    started = time.perf_counter()
    warehouse = settings.warehouse_dir
    with workspace_lock(settings):
        recover(settings)
        latest = latest_delivered_month(warehouse)
        if through is not None:
            _require_delivered(through, latest)
        limit = through or latest
        if limit is None:  # an empty warehouse: nothing delivered, nothing closed
            return CompactionReport("", dry_run, 0, 0, 0, 0, 0,
                                    seconds=time.perf_counter() - started)
        groups, every = plan(warehouse, limit)
        replaced = sum(len(g.files) for g in groups)
        sizes = {f.path: f.path.stat().st_size for f in every}
        bytes_before = sum(sizes.values())
        report = CompactionReport(
            through=str(limit), dry_run=dry_run, files_before=len(every),
            files_after=len(every) - replaced + len(groups), bytes_before=bytes_before,
            bytes_after=bytes_before, rows=0, years=[g.label for g in groups])
        if dry_run or not groups:
            report.rows = sum(pq.ParquetFile(f.path).metadata.num_rows
                              for g in groups for f in g.files)
            report.seconds = time.perf_counter() - started
            return report
        report.run_id = new_run_id()
        stager = Stager(settings, report.run_id)
        try:
            # Arrow reads, sorts and encodes without the GIL: groups in parallel threads.
            with ThreadPoolExecutor(max_workers=WRITER_THREADS) as pool:
                staged = list(pool.map(partial(_stage, stager), groups))
            written = sum(p.stat().st_size for p in stager.roots["warehouse"].rglob("*.parquet"))
            stager.commit(load_manifest(settings))  # the manifest lists ingested files: same
        except BaseException:
            stager.abort()
            raise
        report.rows = sum(staged)
        report.bytes_after = (bytes_before + written
                              - sum(sizes[f.path] for g in groups for f in g.files))
        report.seconds = time.perf_counter() - started
        return report
