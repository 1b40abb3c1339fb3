"""Who already receives help: the input of the duplicate-assistance and omission reports."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from doudi.months import Month
from features.asof import read_feed_as_of


def current_assistance(warehouse: Path, as_of: Month) -> dict[str, list[str]]:
    """household_key -> programme codes of the assistance spells covering month end `as_of`.

    A spell covers T when `start_date <= T` and `end_date` is empty or `>= T`, on the
    latest version of each spell reported by T (a closing row ends it). One-off
    `temporary` payments count in the month they were paid.
    """
    t = as_of.end
    spells = read_feed_as_of(
        warehouse, "social_assistance", t,
        columns=["household_key", "program", "start_date", "end_date"],
    )
    if spells.empty:
        return {}
    start = pd.to_datetime(spells["start_date"])
    end = pd.to_datetime(spells["end_date"])
    t_stamp = pd.Timestamp(t)
    month_start = t_stamp.replace(day=1)
    temporary = spells["program"] == "temporary"
    covering = (start <= t_stamp) & (end.isna() | (end >= t_stamp))
    paid_this_month = temporary & (start >= month_start) & (start <= t_stamp)
    live = spells[(covering & ~temporary) | paid_this_month]
    grouped = live.groupby("household_key")["program"].agg(lambda p: sorted(set(p)))
    return {str(k): list(v) for k, v in grouped.items()}
