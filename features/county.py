"""One county's rows, read once, and the county as of a month end T.

`CountyHistory` holds a county's rows of every feed, keys coded as dense integers;
`CountyAsOf` is that county at T: the roster, its current members and what the
builders of several feeds share (ages, household size, heads, latest disability
certificates, which optional feeds were delivered). Nothing here knows about
processes or files beyond `load_county`, so the same functions can run under a
distributed engine (one county per task).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from doudi.contract import FEED_NAMES, Kind
from doudi.contract import feed as contract_feed
from doudi.settings import Settings
from doudi.warehouse import warehouse_name
from features.asof import (
    VersionedFeed,
    empty_frame,
    feed_columns,
    load_rows,
    month_index,
    months_of,
    versioned_from_frame,
)
from features.codes import LIVING_STATUSES
from features.registry import OPTIONAL_FEEDS

# Longest look-back of any windowed feature (12 months); load_county reads 3
# months more as a margin.
HISTORY_MONTHS = 12
# Feeds read with an event-date lower bound (only windowed features use them).
WINDOWED_FEEDS: frozenset[str] = frozenset({"medical", "employment", "education"})
# A feed is absent for a county at T when it has no county row whose event
# falls in the last N months (feeds with rows every month or term), or no county
# row at all known at T (None: registers that change now and then, and event
# feeds such as disasters where a quiet year legitimately has no rows). Medical
# gets 4 months because claims settle a month or two after the care.
DELIVERY_WINDOW_MONTHS: dict[str, int | None] = {
    "medical": 4, "employment": 3, "education": 12, "disasters": None,
    "housing": None, "disability": None, "social_assistance": None,
    "income_checks": None, "agriculture": None, "assets": None,
}


# -- a county's rows -------------------------------------------------------------------
@dataclass
class CountyHistory:
    """A county's rows of every feed, keys coded as dense integers for fast joins."""

    county: str
    feeds: dict[str, VersionedFeed]
    household_keys: np.ndarray  # household code -> pseudonymous household_key
    n_persons: int  # person codes are 0 .. n_persons-1

    @property
    def n_households(self) -> int:
        return len(self.household_keys)


HOUSEHOLD_KEY_COLUMNS = ("household_key",)
PERSON_KEY_COLUMNS = ("person_key", "head_person_key")


def _encode(frames: dict[str, pd.DataFrame], columns: tuple[str, ...]) -> np.ndarray:
    """Replace `columns` in every frame by int64 codes of one shared dictionary."""
    parts = [(name, c) for name, f in frames.items() for c in columns if c in f]
    values = pd.concat([frames[name][c].astype(object) for name, c in parts],
                       ignore_index=True)
    codes, uniques = pd.factorize(values)
    start = 0
    for name, c in parts:
        n = len(frames[name])
        frames[name][c] = codes[start:start + n].astype(np.int64)
        start += n
    return np.asarray(uniques, dtype=object)


KEY_LIKE = frozenset({*HOUSEHOLD_KEY_COLUMNS, *PERSON_KEY_COLUMNS, "source_file"})


def _compact(feed_name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Column types that stay cheap per as-of month: strings -> categorical (compared by
    code), booleans (nullable) -> float 1/0/NaN. Keys are coded separately."""
    for column in contract_feed(feed_name).columns:
        name = warehouse_name(column.name)
        if name in KEY_LIKE or name not in frame:
            continue
        if column.kind == Kind.BOOL:
            frame[name] = frame[name].astype("float64")
        elif column.kind in (Kind.STR, Kind.ENUM, Kind.ENUM_LIST, Kind.VILLAGE):
            frame[name] = frame[name].astype("category")
    return frame


def is_one_of(frame: pd.DataFrame, column: str, *values: str) -> np.ndarray:
    """Rows whose (categorical) `column` is one of `values`, compared by category code."""
    col = frame[column]
    if not isinstance(col.dtype, pd.CategoricalDtype):
        return _isin(col.to_numpy(), values)
    categories = col.cat.categories
    wanted = np.flatnonzero(categories.isin(list(values)))
    codes = col.cat.codes.to_numpy()
    if len(wanted) == 1:
        return codes == wanted[0]
    return np.isin(codes, wanted)


def is_nonblank(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Rows whose (categorical) string `column` holds something other than blanks."""
    col = frame[column]
    if not isinstance(col.dtype, pd.CategoricalDtype):
        return col.fillna("").astype(str).str.strip().to_numpy() != ""
    filled = [c for c in col.cat.categories if str(c).strip()]
    return is_one_of(frame, column, *filled)


def _isin(values: np.ndarray, options: Iterable[object]) -> np.ndarray:
    """Hash-based membership (np.isin sorts object arrays: slow for strings)."""
    return pd.Index(values).isin(list(options))


def history_from_frames(
    county: str, frames: dict[str, pd.DataFrame], presorted: bool = False,
) -> CountyHistory:
    """A CountyHistory from warehouse rows in memory (feeds not given are empty)."""
    rows = {}
    for name in FEED_NAMES:
        frame = frames.get(name)
        frame = empty_frame(name, feed_columns(name)) if frame is None else frame.copy()
        rows[name] = _compact(name, frame)
    household_keys = _encode(rows, HOUSEHOLD_KEY_COLUMNS)
    person_keys = _encode(rows, PERSON_KEY_COLUMNS)
    feeds = {name: versioned_from_frame(name, rows[name], presorted) for name in FEED_NAMES}
    return CountyHistory(county, feeds, household_keys, len(person_keys))


def history_since(first_as_of: date) -> date:
    """The first event day windowed feeds are read from for as-of months from
    `first_as_of` on: the longest window, plus a quarter for the change features."""
    since_month = month_index(first_as_of) - HISTORY_MONTHS + 1 - 3
    return date(1970 + since_month // 12, since_month % 12 + 1, 1)


def county_frames(
    warehouse: Path, county: str, first_as_of: date, upto: date,
    feeds: Iterable[str] = FEED_NAMES,
) -> dict[str, pd.DataFrame]:
    """`feeds`' warehouse rows for `county` reported by `upto`, unsorted, as
    `history_from_frames` takes them (windowed feeds from `history_since`)."""
    since = history_since(first_as_of)
    wanted = set(feeds)
    with duckdb.connect() as con:
        # one thread: counties (or API requests) already run in parallel
        con.execute("SET threads TO 1")
        return {
            name: load_rows(warehouse, name, county, upto,
                            since if name in WINDOWED_FEEDS else None, con=con, sort=False)
            for name in FEED_NAMES if name in wanted
        }


def load_county(
    warehouse: Path, county: str, first_as_of: date, upto: date,
    feeds: Iterable[str] = FEED_NAMES,
) -> CountyHistory:
    """`feeds`' rows for `county` reported by `upto` (the others empty); windowed feeds
    only as far back as the earliest as-of month's longest window needs."""
    # sorting on integer-coded keys is far cheaper than DuckDB sorting pseudonym strings
    return history_from_frames(county, county_frames(warehouse, county, first_as_of, upto,
                                                     feeds))


def roster_at(
    history: CountyHistory, as_of: date
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(roster households with >= 1 current member, persons as of T, current members)."""
    roster = history.feeds["households"].as_of(as_of)
    people = history.feeds["persons"].as_of(as_of)
    members = people[is_one_of(people, "status", *LIVING_STATUSES)]
    has_member = np.zeros(history.n_households, dtype=bool)
    has_member[members["household_key"].to_numpy()] = True
    roster = roster[has_member[roster["household_key"].to_numpy()]].reset_index(drop=True)
    on_roster = np.zeros(history.n_households, dtype=bool)
    on_roster[roster["household_key"].to_numpy()] = True
    members = members[on_roster[members["household_key"].to_numpy()]]
    return roster, people, members.reset_index(drop=True)


# -- per-household sums over rows ---------------------------------------------------------
def last_per(values: np.ndarray) -> np.ndarray:
    """Mask of the last row of each run of equal values (rows sorted by that value)."""
    last = np.ones(len(values), dtype=bool)
    if len(values) > 1:
        last[:-1] = values[:-1] != values[1:]
    return last


class Households:
    """Positions of roster households and of their current members (by key code)."""

    def __init__(self, history: CountyHistory, roster: pd.DataFrame,
                 members: pd.DataFrame) -> None:
        self.n = len(roster)
        self._position = np.full(history.n_households, -1, dtype=np.int64)
        self._position[roster["household_key"].to_numpy()] = np.arange(self.n)
        self._member_row = np.full(history.n_persons, -1, dtype=np.int64)
        self._member_row[members["person_key"].to_numpy()] = np.arange(len(members))
        self.member_pos = self._position[members["household_key"].to_numpy()]

    def pos(self, household_codes: pd.Series) -> np.ndarray:
        """Roster position of each household code (-1: not on the roster at T)."""
        return self._position[household_codes.to_numpy()]

    def member(self, person_codes: pd.Series) -> np.ndarray:
        """Row in the member table of each person (-1: not a current member)."""
        return self._member_row[person_codes.to_numpy()]

    def person_pos(self, person_keys: pd.Series) -> np.ndarray:
        m = self.member(person_keys)
        out = np.full(len(m), -1, dtype=np.int64)
        ok = m >= 0
        out[ok] = self.member_pos[m[ok]]
        return out

    def total(self, pos: np.ndarray, weights: np.ndarray | None = None,
              mask: np.ndarray | None = None) -> np.ndarray:
        keep = pos >= 0 if mask is None else (pos >= 0) & mask
        w = None if weights is None else np.nan_to_num(
            np.asarray(weights, dtype=np.float64)[keep])
        return np.bincount(pos[keep], weights=w, minlength=self.n).astype(np.float64)

    def distinct(self, pos: np.ndarray, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Per household, the number of distinct ids among masked rows."""
        keep = (pos >= 0) & mask
        pairs = pd.DataFrame({"p": pos[keep], "i": ids[keep]}).drop_duplicates()
        return np.bincount(pairs["p"].to_numpy(), minlength=self.n).astype(np.float64)

    def maximum(self, pos: np.ndarray, values: np.ndarray, mask: np.ndarray,
                empty: float) -> np.ndarray:
        out = np.full(self.n, -np.inf)
        keep = (pos >= 0) & mask
        np.maximum.at(out, pos[keep], values[keep].astype(np.float64))
        out[np.isneginf(out)] = empty
        return out

    def latest(self, pos: np.ndarray, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The value of the last masked row per household (rows sorted oldest first)."""
        out = np.full(self.n, np.nan)
        keep = np.flatnonzero((pos >= 0) & mask)
        out[pos[keep]] = values[keep].astype(np.float64)  # later rows overwrite earlier
        return out


def dates(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A date column as datetime64[D]."""
    return frame[column].to_numpy().astype("datetime64[D]")


def _age_years(birth: np.ndarray, as_of: date) -> np.ndarray:
    """Whole years from birth dates to `as_of` (NaN where unknown)."""
    b = pd.DatetimeIndex(birth)
    stamp = b.year * 10000 + b.month * 100 + b.day
    now = as_of.year * 10000 + as_of.month * 100 + as_of.day
    return ((now - np.asarray(stamp, dtype=np.float64)) // 10000).astype(np.float64)


def _delivered(feed: VersionedFeed, as_of: date) -> bool:
    window = DELIVERY_WINDOW_MONTHS[feed.name]
    known = feed.known_mask(as_of)
    if window is None or feed.event is None:
        return bool(known.any())
    recent = months_of(feed.event) > month_index(as_of) - window
    return bool((known & recent).any())


# -- the county at T ------------------------------------------------------------------------
@dataclass(frozen=True)
class Records:
    """A feed's records known at T, each with its household's roster position (-1: not on
    the roster, or for person records not a current member) and its age in months."""

    rows: pd.DataFrame
    pos: np.ndarray
    age: np.ndarray  # whole months from the record's date to T (0: T's own month)

    def column(self, name: str) -> np.ndarray:
        return self.rows[name].to_numpy()


class CountyAsOf:
    """A county at month end `as_of`: what every feed's features are computed from."""

    def __init__(self, history: CountyHistory, as_of: date, settings: Settings) -> None:
        self.history = history
        self.as_of = as_of
        self.settings = settings
        self.month = month_index(as_of)
        self.roster, self.persons, self.members = roster_at(history, as_of)
        self.households = Households(history, self.roster, self.members)
        self.member_age = _age_years(self.members["birth_date"].to_numpy(), as_of)
        self.working_age = (self.member_age >= 16) & (self.member_age <= 64)
        self.size = self.households.total(self.households.member_pos)  # current members
        self.n_working_age = self.households.total(self.households.member_pos,
                                                   mask=self.working_age)
        self.delivered = {name: _delivered(history.feeds[name], as_of) for name in OPTIONAL_FEEDS}
        self._rows: dict[str, pd.DataFrame] = {}

    @property
    def n(self) -> int:
        """Roster households (the rows of every feature)."""
        return self.households.n

    def rows(self, feed_name: str) -> pd.DataFrame:
        """The feed's records known at T (latest version per key, sorted by key); shared
        by the builders, so never modified."""
        if feed_name not in self._rows:
            self._rows[feed_name] = self.history.feeds[feed_name].as_of(self.as_of)
        return self._rows[feed_name]

    def records(self, feed_name: str, date_column: str) -> Records:
        """The feed's records known at T, placed on the roster, aged by `date_column`."""
        rows = self.rows(feed_name)
        hh = self.households
        pos = (hh.person_pos(rows["person_key"]) if contract_feed(feed_name).person_level
               else hh.pos(rows["household_key"]))
        return Records(rows, pos, self.month - months_of(dates(rows, date_column)))

    @cached_property
    def certificates(self) -> pd.DataFrame:
        """Each person's latest disability certificate known at T."""
        certs = self.rows("disability")
        return certs[last_per(certs["person_key"].to_numpy())]

    @cached_property
    def head_row(self) -> np.ndarray:
        """Member row of each household's head: the roster's head if still a current member,
        else the current member recorded with relation `head` (-1 when neither exists)."""
        hh = self.households
        rows = hh.member(self.roster["head_person_key"])
        is_head = np.flatnonzero(is_one_of(self.members, "relation", "head")
                                 & (hh.member_pos >= 0))
        fallback = np.full(hh.n, -1, dtype=np.int64)
        fallback[hh.member_pos[is_head][::-1]] = is_head[::-1]  # first listed head wins
        return np.where(rows >= 0, rows, fallback)

    def people_with_status_within(self, status: str, months: int) -> np.ndarray:
        """Per household, people recorded with `status` (e.g. deceased) in the last months."""
        persons = self.persons
        recent = months_of(dates(persons, "status_date")) > self.month - months
        return self.households.total(self.households.pos(persons["household_key"]),
                                     mask=is_one_of(persons, "status", status) & recent)
