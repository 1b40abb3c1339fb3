"""Rows waiting for their household or person: `<home>/pending/<feed>/part-<run>.parquet`.

Departments deliver late and the contract does not order feeds, so a medical row may
arrive a month before its person's roster row. Such a row breaks no rule of its own:
it is checked, pseudonymised and kept here (0700 folder, 0600 files; pseudonyms only,
no raw identifier: names and phones of pending rows go to the vault as usual) with
its row hash. Every later ingest places the rows whose household or person has become
known into the warehouse, under their own `reported_date` (point in time holds: the
row counts as of T only once it was reported by T), and rewrites the pending part of
that feed without them; both happen in the run's atomic commit. Rows still waiting
`Settings.pending_alert_months` delivered months after their own `reported_month`
are reported loudly (report and `doudi monthly`), never dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from doudi.settings import Settings
from doudi.warehouse import table_schema

AREA = "pending"
ROW_HASH = "row_hash"
SINCE = "pending_run"  # the run that first kept the row waiting
# why a row waits: the referent it lacks, per kind of feed
PERSON_RULE, HOUSEHOLD_RULE = "unknown_person", "unknown_household"


def pending_dir(settings: Settings) -> Path:
    return settings.home / AREA


def schema(feed_name: str) -> pa.Schema:
    """The warehouse row without its county (unknown until placed), plus hash and run."""
    fields = [f for f in table_schema(feed_name) if f.name != "county_code"]
    return pa.schema([*fields, pa.field(ROW_HASH, pa.uint64()), pa.field(SINCE, pa.string())])


def parts(settings: Settings, feed_name: str) -> list[Path]:
    folder = pending_dir(settings) / feed_name
    return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []


def read(settings: Settings, feed_name: str) -> pa.Table:
    """Every row of `feed_name` waiting now (empty table when none)."""
    files = parts(settings, feed_name)
    if not files:
        return schema(feed_name).empty_table()
    return ds.dataset([str(p) for p in files], format="parquet",
                      schema=schema(feed_name)).to_table()


def month_number(text: str) -> int:
    """Months since 1970-01 of 'YYYY-MM'."""
    return int(np.datetime64(text, "M").astype(np.int64))


def ages(table: pa.Table, clock: int) -> np.ndarray:
    """Months from each row's reported month to `clock` (a month number)."""
    if not table.num_rows:
        return np.zeros(0, dtype=np.int64)
    months = pc.strptime(pc.binary_join_element_wise(table["reported_month"], "01", "-"),
                         format="%Y-%m-%d", unit="s").cast(pa.date32())
    days = months.cast(pa.int32()).to_numpy(zero_copy_only=False).astype("datetime64[D]")
    return clock - days.astype("datetime64[M]").astype(np.int64)


def stored_months(warehouse: Path) -> list[int]:
    """Reported months present in the warehouse (from the row-hash index's folders)."""
    root = warehouse / "_rowhash"
    if not root.is_dir():
        return []
    return sorted({month_number(p.name.removeprefix("reported_month="))
                   for p in root.glob("*/reported_month=*")})
