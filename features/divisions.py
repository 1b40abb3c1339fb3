"""Division names as of T: the `divisions` feed (county, township and village names).

Names are public, not personal data: reports and caseworker sheets show them beside
codes. A renamed division is a new row with a later `reported_date`; the name as of
T is that of the latest row reported by T (ties: the later file and row).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds

from doudi.months import Month
from doudi.warehouse import feed_dir, table_schema


def _cutoff(as_of: Month | date) -> date:
    """The last reported_date that counts: a Month means its month end."""
    return as_of if isinstance(as_of, date) else as_of.end


def division_names(warehouse: Path, as_of: Month | date) -> dict[str, str]:
    """Division code (6, 9 or 12 digits) -> its name as of `as_of` (a Month: its month
    end; a date: that day). Empty when the feed was never delivered."""
    folder = feed_dir(warehouse, "divisions")
    if not folder.is_dir():
        return {}
    table = ds.dataset(str(folder), format="parquet", schema=table_schema("divisions")).to_table(
        columns=["code", "name", "reported_date", "source_file", "source_row"],
        filter=pc.field("reported_date") <= _cutoff(as_of),
    )
    order = [("code", "ascending"), ("reported_date", "ascending"),
             ("source_file", "ascending"), ("source_row", "ascending")]
    rows = table.sort_by(order)
    # the last row of each code wins: walking in order, later rows overwrite earlier ones
    return dict(zip(rows["code"].to_pylist(), rows["name"].to_pylist(), strict=True))
