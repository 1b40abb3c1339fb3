"""Household features as of T for one county: pure functions over a partition.

`county_features(history, T, settings)` turns the versions known at T into one row
per roster household: keys, the registry's features (each feed's builder in
`features.builders`, chosen by the registry's `feed`; then feed absence) and the
fairness audit's group columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import numpy as np
import pandas as pd

from doudi.settings import Settings
from features.builders import BUILDERS
from features.county import CountyAsOf, CountyHistory
from features.registry import (
    DERIVED,
    FEATURE_FEEDS,
    FEATURES,
    FEED_MISSING,
    KEY_COLUMNS,
    feature_names,
    group_column_names,
)

MAJORITY_ETHNICITY = "汉族"


def county_features(history: CountyHistory, as_of: date, settings: Settings) -> pd.DataFrame:
    """One row per roster household of the county at `as_of`: keys, features, groups."""
    county = CountyAsOf(history, as_of, settings)
    built = feature_columns(county)
    keys = pd.DataFrame({
        "household_key": history.household_keys[county.roster["household_key"].to_numpy()],
        "as_of": np.full(county.n, np.datetime64(as_of, "D")).astype("datetime64[ms]"),
        "county_code": history.county,
        "village_code": county.roster["village_code"].to_numpy(),
    })
    features = pd.DataFrame(
        {name: np.asarray(built[name], dtype=np.float64) for name in feature_names()})
    return pd.concat([keys, features, _groups(county, built)], axis=1)


def feature_columns(county: CountyAsOf) -> dict[str, np.ndarray]:
    """Every registry feature of the county at T: the feed builders, then the DERIVED one
    (it reads theirs), then feed absence (an absent feed's features are missing, not 0)."""
    built: dict[str, np.ndarray] = {}
    for feed in (*(f for f in FEATURE_FEEDS if f != DERIVED), DERIVED):
        built.update(BUILDERS[feed](county, built))
    built.update(absence_indicators(county))
    for spec in FEATURES:
        if spec.feed in county.delivered and not county.delivered[spec.feed] \
                and spec.missing != "always":
            built[spec.name] = np.full(county.n, np.nan)
    return built


def absence_indicators(county: CountyAsOf) -> dict[str, np.ndarray]:
    """`<feed>_feed_missing` of every optional feed: 1 when absent for the county at T."""
    return {name: np.full(county.n, 0.0 if county.delivered[feed] else 1.0)
            for feed, name in FEED_MISSING.names().items()}


def _groups(county: CountyAsOf, built: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """The fairness audit's group columns (registry.GROUP_COLUMNS)."""
    head_row, head_age = county.head_row, built["head_age"]
    has_head = head_row >= 0
    minority = np.full(county.n, np.nan)
    ethnicity = county.members["ethnicity"].astype(object).to_numpy()[head_row[has_head]]
    known = pd.notna(ethnicity) & (pd.Series(ethnicity, dtype="str").str.strip() != "")
    minority[has_head] = np.where(known, ethnicity != MAJORITY_ETHNICITY, np.nan)
    disabled = (built["disabled_members"] > 0).astype(np.float64)
    if not county.delivered["disability"]:
        disabled = np.full(county.n, np.nan)
    return pd.DataFrame({
        "group_head_ethnic_minority": minority,
        "group_head_elderly": np.where(np.isnan(head_age), np.nan, head_age >= 65),
        "group_disabled_member": disabled,
        "group_former_poor": built["former_poor"],
        "group_relocated": built["relocated"],
    })


def output_columns() -> list[str]:
    return [*KEY_COLUMNS, *feature_names(), *group_column_names()]
