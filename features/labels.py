"""The prediction target (DATA_CONTRACT, "The prediction target"), per county partition.

Scope at T uses only what was known at T: on the roster with >= 1 current member,
not under monitoring (the last event up to T, `risk_eliminated` after
`identified` on the same date, is not `identified`), not in a `tekun` spell
covering T. The label uses monitoring events known by `known_by` (the model
month): 1 if an `identified` event has event_date in (T, T+H]; its risk types
become `label_<risk_type>` (union over the horizon's events).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from doudi.contract import RISK_TYPES
from features.asof import VersionedFeed, add_months, spell_covers
from features.codes import TEKUN
from features.county import CountyHistory, dates, is_one_of, roster_at

LABEL_COLUMNS: tuple[str, ...] = ("label", *(f"label_{r}" for r in RISK_TYPES))


# What labels and scope read (roster_at: households, persons): a labels-only task loads
# these feeds and leaves the other ten empty.
LABEL_FEEDS: tuple[str, ...] = ("households", "persons", "social_assistance",
                                "monitoring_events")


def under_monitoring(events: VersionedFeed, as_of: date) -> set[int]:
    """Households whose last monitoring event known at T is `identified`."""
    known = events.as_of(as_of)
    if known.empty:
        return set()
    # Same date: risk_eliminated (order 1) sorts after identified (order 0).
    order = is_one_of(known, "event", "risk_eliminated").astype(np.int8)
    ordered = known.assign(_order=order).sort_values(
        ["household_key", "event_date", "_order"], kind="stable")
    last = ordered.drop_duplicates("household_key", keep="last")
    return set(last.loc[is_one_of(last, "event", "identified"), "household_key"])


def in_tekun(assistance: VersionedFeed, as_of: date) -> set[int]:
    """Households in a tekun (特困供养) spell covering T."""
    spells = assistance.as_of(as_of)
    covering = is_one_of(spells, "program", TEKUN) & spell_covers(
        dates(spells, "start_date"), dates(spells, "end_date"), as_of)
    return set(spells.loc[covering, "household_key"])


def county_labels(
    history: CountyHistory, as_of: date, known_by: date, horizon_months: int
) -> pd.DataFrame:
    """household_key, as_of, in_scope, label, label_<risk_type> for roster households at T."""
    f = history.feeds
    roster, _, _ = roster_at(history, as_of)
    keys = roster["household_key"]  # codes; history.household_keys holds the keys
    excluded = under_monitoring(f["monitoring_events"], as_of) | in_tekun(
        f["social_assistance"], as_of)
    frame = pd.DataFrame({
        "household_key": history.household_keys[keys.to_numpy()],
        "as_of": np.full(len(roster), np.datetime64(as_of, "D")).astype("datetime64[ms]"),
        "in_scope": ~keys.isin(excluded).to_numpy(),
    })
    events = f["monitoring_events"].as_of(known_by)
    start, stop = np.datetime64(as_of, "D"), np.datetime64(add_months(as_of, horizon_months), "D")
    day = dates(events, "event_date")
    hits = events[is_one_of(events, "event", "identified") & (day > start) & (day <= stop)]
    index = pd.Index(keys.to_numpy())
    pos = index.get_indexer(hits["household_key"].to_numpy())
    on_roster = pos >= 0
    label = np.zeros(len(roster), dtype=np.int8)
    label[pos[on_roster]] = 1
    frame["label"] = label
    types = hits["risk_types"].astype(object).fillna("").to_numpy()[on_roster]
    for risk in RISK_TYPES:
        has = np.array([risk in str(t).split(";") for t in types], dtype=bool)
        column = np.zeros(len(roster), dtype=np.int8)
        column[pos[on_roster][has]] = 1
        frame[f"label_{risk}"] = column
    return frame
