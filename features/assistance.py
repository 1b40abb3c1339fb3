"""Who already receives help: the input of the duplicate-assistance and omission reports."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from doudi.months import Month
from features.asof import read_feed_as_of, spell_covers
from features.codes import TEMPORARY


def current_assistance(warehouse: Path, as_of: Month) -> dict[str, list[str]]:
    """household_key -> programme codes of the assistance spells covering month end `as_of`
    (`features.asof.spell_covers`), on the latest version of each spell reported by T (a
    closing row ends it). One-off `temporary` payments count in the month they were paid.
    """
    t = as_of.end
    spells = read_feed_as_of(
        warehouse, "social_assistance", t,
        columns=["household_key", "program", "start_date", "end_date"],
    )
    if spells.empty:
        return {}
    start = pd.to_datetime(spells["start_date"])
    t_stamp = pd.Timestamp(t)
    month_start = t_stamp.replace(day=1)
    temporary = spells["program"] == TEMPORARY
    covering = spell_covers(start, pd.to_datetime(spells["end_date"]), t)
    paid_this_month = temporary & (start >= month_start) & (start <= t_stamp)
    live = spells[(covering & ~temporary) | paid_this_month]
    grouped = live.groupby("household_key")["program"].agg(lambda p: sorted(set(p)))
    return {str(k): list(v) for k, v in grouped.items()}
