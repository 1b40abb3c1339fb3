"""Household features as of T for one county: pure functions over a partition.

`CountyHistory` holds a county's rows of every feed (read once);
`county_features(history, T, settings)` turns the versions known at T into one
row per roster household. Nothing here knows about processes or files, so the
same functions can run under a distributed engine (one county per task).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
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
from features.registry import (
    DISABILITY_TYPE_ZH,
    FEATURES,
    KEY_COLUMNS,
    OPTIONAL_FEEDS,
    PROGRAM_ZH,
    feature_names,
    group_column_names,
)

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
LIVING_STATUSES = ("living", "moved_in")
WORK_STATUSES = ("employed_local", "migrant", "self_employed", "public_welfare_post")
SENIOR_OR_HIGHER = ("senior_secondary", "vocational", "higher")
GRADE_LEVEL = {"A": 1.0, "B": 2.0, "C": 3.0, "D": 4.0}
DAMAGE_LEVEL = {"none": 0.0, "minor": 1.0, "severe": 2.0, "collapsed": 3.0}
MAJORITY_ETHNICITY = "汉族"


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


def _nonblank(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Rows whose (categorical) string `column` holds something other than blanks."""
    col = frame[column]
    if not isinstance(col.dtype, pd.CategoricalDtype):
        return col.fillna("").astype(str).str.strip().to_numpy() != ""
    filled = [c for c in col.cat.categories if str(c).strip()]
    return is_one_of(frame, column, *filled)


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


def load_county(
    warehouse: Path, county: str, first_as_of: date, upto: date
) -> CountyHistory:
    """Every feed's rows for `county` reported by `upto`; windowed feeds only as far back
    as the earliest as-of month's longest window needs."""
    since_month = month_index(first_as_of) - HISTORY_MONTHS + 1 - 3
    since = date(1970 + since_month // 12, since_month % 12 + 1, 1)
    with duckdb.connect() as con:
        # one thread per worker process: counties already run in parallel
        con.execute("SET threads TO 1")
        frames = {
            name: load_rows(warehouse, name, county, upto,
                            since if name in WINDOWED_FEEDS else None, con=con, sort=False)
            for name in FEED_NAMES
        }
    # sorting on integer-coded keys is far cheaper than DuckDB sorting pseudonym strings
    return history_from_frames(county, frames)


# -- helpers over household positions -------------------------------------------------
def _last_per(values: np.ndarray) -> np.ndarray:
    """Mask of the last row of each run of equal values (rows sorted by that value)."""
    last = np.ones(len(values), dtype=bool)
    if len(values) > 1:
        last[:-1] = values[:-1] != values[1:]
    return last


def _last_and_previous_per(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the last and the second-to-last row of each run of equal values."""
    last = _last_per(values)
    previous = np.zeros(len(values), dtype=bool)
    previous[:-1] = last[1:] & (values[:-1] == values[1:])
    return last, previous


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


def _dates(frame: pd.DataFrame, column: str) -> np.ndarray:
    return frame[column].to_numpy().astype("datetime64[D]")


def _age_years(birth: np.ndarray, as_of: date) -> np.ndarray:
    """Whole years from birth dates to `as_of` (NaN where unknown)."""
    b = pd.DatetimeIndex(birth)
    stamp = b.year * 10000 + b.month * 100 + b.day
    now = as_of.year * 10000 + as_of.month * 100 + as_of.day
    return ((now - np.asarray(stamp, dtype=np.float64)) // 10000).astype(np.float64)


def _bool(values: pd.Series) -> np.ndarray:
    """Nullable booleans as float 1/0/NaN."""
    return values.astype("float64").to_numpy()


def _delivered(feed: VersionedFeed, as_of: date) -> bool:
    window = DELIVERY_WINDOW_MONTHS[feed.name]
    known = feed.known_mask(as_of)
    if window is None or feed.event is None:
        return bool(known.any())
    recent = months_of(feed.event) > month_index(as_of) - window
    return bool((known & recent).any())


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


# -- the features ------------------------------------------------------------------------
def county_features(history: CountyHistory, as_of: date, settings: Settings) -> pd.DataFrame:
    """One row per roster household of the county at `as_of`: keys, features, groups."""
    f = history.feeds
    m_t = month_index(as_of)
    roster, persons, members = roster_at(history, as_of)
    hh = Households(history, roster, members)
    out: dict[str, np.ndarray] = {}
    delivered = {name: _delivered(f[name], as_of) for name in OPTIONAL_FEEDS}

    # -- demography ----------------------------------------------------------------
    member_age = _age_years(members["birth_date"].to_numpy(), as_of)
    pos = hh.member_pos
    certs = f["disability"].as_of(as_of)
    certs = certs[_last_per(certs["person_key"].to_numpy())]  # latest certificate per person
    severe_person = np.zeros(history.n_persons, dtype=bool)
    severe_person[certs.loc[certs["grade"] <= 2, "person_key"].to_numpy()] = True
    severe = severe_person[members["person_key"].to_numpy()]
    size = hh.total(pos)
    out["household_size"] = size
    for lo, hi in ((0, 5), (6, 11), (12, 14), (15, 17)):
        out[f"members_aged_{lo}_{hi}"] = hh.total(pos, mask=(member_age >= lo) & (member_age <= hi))
    elderly = member_age >= 65
    working_age = (member_age >= 16) & (member_age <= 64)
    out["members_aged_65_plus"] = hh.total(pos, mask=elderly)
    n_working_age = hh.total(pos, mask=working_age)
    out["labour_capable_adults"] = hh.total(pos, mask=working_age & ~severe)
    out["dependency_ratio"] = _ratio(hh.total(pos, mask=(member_age < 16) | elderly),
                                     n_working_age)
    out["no_labour_capable_adult"] = (out["labour_capable_adults"] == 0).astype(np.float64)
    head_row = _head_rows(hh, roster, members)
    has_head = head_row >= 0
    head_age = np.full(hh.n, np.nan)
    head_age[has_head] = member_age[head_row[has_head]]
    out["head_age"] = head_age
    head_female = np.full(hh.n, np.nan)
    head_female[has_head] = is_one_of(members, "sex", "F")[head_row[has_head]]
    out["head_female"] = head_female
    status_month = months_of(_dates(persons, "status_date"))
    person_pos = hh.pos(persons["household_key"])
    for status, name in (("deceased", "deaths_12m"), ("moved_out", "departures_12m")):
        out[name] = hh.total(person_pos, mask=is_one_of(persons, "status", status)
                             & (status_month > m_t - 12))
    deaths_3m = hh.total(person_pos, mask=is_one_of(persons, "status", "deceased")
                         & (status_month > m_t - 3))
    former = is_one_of(roster, "poverty_history", "former_poor")
    out["former_poor"] = former.astype(np.float64)
    lifted = roster["lifted_year"].astype("float64").to_numpy()
    out["years_since_lifted"] = np.where(former, as_of.year - lifted, np.nan)
    out["relocated"] = _bool(roster["relocated"])

    # -- medical ---------------------------------------------------------------------
    med = f["medical"].as_of(as_of)
    med_pos = hh.person_pos(med["person_key"])
    med_age = m_t - months_of(_dates(med, "month"))
    oop = med["out_of_pocket_yuan"].to_numpy()
    for w in (1, 3, 6, 12):
        total = hh.total(med_pos, oop, med_age < w)
        out[f"medical_oop_{w}m"] = total
        out[f"medical_oop_{w}m_per_capita"] = total / size
    in_year = med_age < 12
    cost = hh.total(med_pos, med["total_cost_yuan"].to_numpy(), in_year)
    out["medical_total_cost_12m"] = cost
    out["medical_reimbursed_share_12m"] = _ratio(
        hh.total(med_pos, med["reimbursed_yuan"].to_numpy(), in_year), cost)
    inpatient = med["inpatient_days"].to_numpy()
    out["medical_inpatient_days_3m"] = hh.total(med_pos, inpatient, med_age < 3)
    out["medical_inpatient_days_12m"] = hh.total(med_pos, inpatient, in_year)
    out["medical_outpatient_visits_12m"] = hh.total(
        med_pos, med["outpatient_visits"].to_numpy(), in_year)
    illness = _nonblank(med, "serious_illness")
    med_person = med["person_key"].to_numpy()
    out["medical_serious_illness_members"] = hh.distinct(med_pos, med_person, in_year & illness)
    latest_claim = _last_within(med_person, in_year)
    uninsured = med["insured"].to_numpy(dtype=np.float64) == 0.0
    out["medical_uninsured_members"] = hh.total(med_pos, mask=latest_claim & uninsured)

    # -- employment -------------------------------------------------------------------
    emp = f["employment"].as_of(as_of)
    emp_member = hh.member(emp["person_key"])
    emp_pos = hh.person_pos(emp["person_key"])
    emp_age = m_t - months_of(_dates(emp, "month"))
    emp_person = emp["person_key"].to_numpy()
    latest_3m = _last_within(emp_person, emp_age < 3)
    person_working_age = np.zeros(len(emp), dtype=bool)
    ok = emp_member >= 0
    person_working_age[ok] = working_age[emp_member[ok]]
    working = is_one_of(emp, "status", *WORK_STATUSES)
    unemployed = is_one_of(emp, "status", "unemployed")
    out["employment_employed_share"] = _ratio(
        hh.total(emp_pos, mask=latest_3m & working & person_working_age), n_working_age)
    out["employment_migrant_share"] = _ratio(
        hh.total(emp_pos,
                 mask=latest_3m & is_one_of(emp, "status", "migrant") & person_working_age),
        n_working_age)
    out["employment_unemployed_members"] = hh.total(
        emp_pos, mask=latest_3m & unemployed)
    out["employment_public_welfare_post_members"] = hh.total(
        emp_pos, mask=latest_3m & is_one_of(emp, "status", "public_welfare_post"))
    out["employment_unemployed_months_12m"] = hh.total(
        emp_pos, mask=(emp_age < 12) & unemployed)
    wage = emp["monthly_wage_yuan"].to_numpy()
    wage_now = hh.total(emp_pos, wage, emp_age < 3) / 3.0
    wage_before = hh.total(emp_pos, wage, (emp_age >= 3) & (emp_age < 6)) / 3.0
    out["employment_wage_3m"] = wage_now
    out["employment_wage_change_3m"] = _ratio(wage_now - wage_before, wage_before)
    paid = emp["social_insurance_paid"].astype("float64").to_numpy()
    paid_before = np.zeros(history.n_persons, dtype=bool)
    paid_before[emp_person[(emp_age >= 3) & (emp_age < 12) & (paid == 1.0)]] = True
    stopped = latest_3m & (paid == 0.0) & paid_before[emp_person]
    out["employment_social_insurance_stopped"] = hh.total(emp_pos, mask=stopped)
    share_now = _share(unemployed, latest_3m)
    share_before = _share(unemployed,
                          _last_within(emp_person, (emp_age >= 3) & (emp_age < 6)))
    out["county_unemployed_share_3m"] = np.full(hh.n, share_now)
    out["county_unemployed_share_change"] = np.full(hh.n, share_now - share_before)

    # -- education --------------------------------------------------------------------
    edu = f["education"].as_of(as_of)
    edu_pos = hh.person_pos(edu["person_key"])
    edu_age = m_t - months_of(_dates(edu, "term"))
    edu_person = edu["person_key"].to_numpy()
    edu_year = edu_age < 12
    latest_term = _last_within(edu_person, edu_year)
    enrolled = is_one_of(edu, "status", "enrolled")
    out["education_enrolled_members"] = hh.total(edu_pos, mask=latest_term & enrolled)
    out["education_senior_or_higher_members"] = hh.total(
        edu_pos, mask=latest_term & enrolled & is_one_of(edu, "stage", *SENIOR_OR_HIGHER))
    out["education_net_tuition_12m"] = hh.total(
        edu_pos, edu["tuition_yuan"].to_numpy() - edu["aid_yuan"].to_numpy(), edu_year)
    out["education_dropouts_12m"] = hh.distinct(
        edu_pos, edu_person, edu_year & is_one_of(edu, "status", "dropped_out"))

    # -- housing ------------------------------------------------------------------------
    house = f["housing"].as_of(as_of)  # sorted by household, assessed_date
    house_pos = hh.pos(house["household_key"])
    everything = np.ones(len(house), dtype=bool)
    level = house["safety_grade"].astype(object).map(GRADE_LEVEL).astype("float64").to_numpy()
    out["housing_safety_level"] = hh.latest(house_pos, level, everything)
    out["housing_dangerous"] = np.nan_to_num(out["housing_safety_level"]) >= 3
    out["housing_dangerous"] = out["housing_dangerous"].astype(np.float64)
    out["housing_assessment_age_months"] = m_t - hh.latest(
        house_pos, months_of(_dates(house, "assessed_date")), everything)
    out["housing_renovation_funded"] = np.nan_to_num(hh.latest(
        house_pos, house["renovation_funded"].astype("float64").to_numpy(), everything))

    # -- disability ------------------------------------------------------------------------
    cert_pos = hh.person_pos(certs["person_key"])
    every_cert = np.ones(len(certs), dtype=bool)
    grade = certs["grade"].to_numpy()
    out["disabled_members"] = hh.total(cert_pos, mask=every_cert)
    out["disabled_members_grade_1_2"] = hh.total(cert_pos, mask=grade <= 2)
    out["disabled_members_grade_3_4"] = hh.total(cert_pos, mask=grade >= 3)
    for kind in DISABILITY_TYPE_ZH:
        out[f"disabled_members_{kind}"] = hh.total(
            cert_pos, mask=is_one_of(certs, "disability_type", kind))
    all_certs = f["disability"].as_of(as_of)
    new_cert = months_of(_dates(all_certs, "certified_date")) > m_t - 12
    out["disability_certified_12m"] = hh.distinct(
        hh.person_pos(all_certs["person_key"]), all_certs["person_key"].to_numpy(), new_cert)
    subsidy = ((certs["living_subsidy"].to_numpy(dtype=np.float64) == 1.0)
               | (certs["care_subsidy"].to_numpy(dtype=np.float64) == 1.0))
    out["disability_subsidised_members"] = hh.total(cert_pos, mask=subsidy)

    # -- disasters ---------------------------------------------------------------------------
    dis = f["disasters"].as_of(as_of)
    dis_pos = hh.pos(dis["household_key"])
    dis_age = m_t - months_of(_dates(dis, "event_date"))
    loss = dis["loss_yuan"].to_numpy()
    out["disaster_loss_3m"] = hh.total(dis_pos, loss, dis_age < 3)
    out["disaster_loss_12m"] = hh.total(dis_pos, loss, dis_age < 12)
    out["disaster_events_12m"] = hh.total(dis_pos, mask=dis_age < 12)
    damage = dis["house_damage"].astype(object).map(DAMAGE_LEVEL).astype("float64").to_numpy()
    out["disaster_house_damage_12m"] = hh.maximum(dis_pos, np.nan_to_num(damage), dis_age < 12,
                                                  0.0)
    county_loss = float(np.nansum(loss[dis_age < 3]))
    out["county_disaster_loss_3m_per_household"] = np.full(
        hh.n, county_loss / hh.n if hh.n else np.nan)

    # -- social assistance ------------------------------------------------------------------
    sa = f["social_assistance"].as_of(as_of)
    sa_pos = hh.pos(sa["household_key"])
    t = np.datetime64(as_of, "D")
    start = _dates(sa, "start_date")
    end = _dates(sa, "end_date")
    active = (start <= t) & (np.isnat(end) | (end >= t))
    temporary = is_one_of(sa, "program", "temporary")
    for prog in PROGRAM_ZH:
        covering = hh.total(sa_pos, mask=active & is_one_of(sa, "program", prog))
        out[f"assistance_{prog}_now"] = (covering > 0).astype(np.float64)
    amount = sa["monthly_amount_yuan"].to_numpy()
    out["assistance_monthly_amount_now"] = hh.total(sa_pos, amount, active & ~temporary)
    start_age = m_t - months_of(start)
    out["assistance_temporary_12m"] = hh.total(sa_pos, amount, temporary & (start_age < 12))
    ended = (~temporary & ~np.isnat(end) & (end <= t)
             & (m_t - months_of(end) < 6))
    out["assistance_spells_ended_6m"] = hh.total(sa_pos, mask=ended)

    # -- income checks ---------------------------------------------------------------------
    inc = f["income_checks"].as_of(as_of)  # sorted by household, period_end
    inc = inc[hh.pos(inc["household_key"]) >= 0].reset_index(drop=True)
    inc_hh = inc["household_key"].to_numpy()
    last, prev = _last_and_previous_per(inc_hh)
    latest_rows, prev_rows = inc[last], inc[prev]
    lpos, ppos = hh.pos(latest_rows["household_key"]), hh.pos(prev_rows["household_key"])
    pc = np.full(hh.n, np.nan)
    pc[lpos] = latest_rows["per_capita_net_income_yuan"].to_numpy()
    pc_prev = np.full(hh.n, np.nan)
    pc_prev[ppos] = prev_rows["per_capita_net_income_yuan"].to_numpy()
    period = latest_rows["period_end"].to_numpy().astype("datetime64[D]")
    check_year = pd.DatetimeIndex(period).year.to_numpy()
    lines = {y: settings.monitoring_line(int(y)) for y in np.unique(check_year)}
    line = np.full(hh.n, np.nan)
    line[lpos] = [lines[y] for y in check_year]
    rigid = np.full(hh.n, np.nan)
    rigid[lpos] = latest_rows["rigid_expenditure_yuan"].astype("float64").to_numpy()
    net = np.full(hh.n, np.nan)
    net[lpos] = (latest_rows["wage_income_yuan"].to_numpy()
                 + latest_rows["operating_income_yuan"].to_numpy()
                 + latest_rows["property_income_yuan"].to_numpy()
                 + latest_rows["transfer_income_yuan"].to_numpy())
    wages = np.full(hh.n, np.nan)
    wages[lpos] = latest_rows["wage_income_yuan"].to_numpy()
    check_age = np.full(hh.n, np.nan)
    check_age[lpos] = m_t - months_of(period)
    out["income_per_capita"] = pc
    out["income_to_monitoring_line"] = pc / line
    out["income_after_rigid_to_monitoring_line"] = (pc - rigid / size) / line
    out["income_per_capita_change"] = pc - pc_prev
    out["income_per_capita_change_pct"] = _ratio(pc - pc_prev, np.abs(pc_prev))
    out["income_rigid_expenditure_ratio"] = _ratio(rigid, net)
    out["income_wage_share"] = _ratio(wages, net)
    out["income_check_age_months"] = check_age
    out["medical_oop_12m_income_share"] = _ratio(out["medical_oop_12m"], pc * size)

    # -- agriculture ----------------------------------------------------------------------
    ag = f["agriculture"].as_of(as_of)  # sorted by household, year
    ag = ag[hh.pos(ag["household_key"]) >= 0].reset_index(drop=True)
    ag_hh = ag["household_key"].to_numpy()
    ag_last, ag_prev = _last_and_previous_per(ag_hh)
    a_pos, p_pos = hh.pos(ag["household_key"][ag_last]), hh.pos(ag["household_key"][ag_prev])

    def _latest_ag(column: str, rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
        values = np.full(hh.n, np.nan)
        values[positions] = ag[column].astype("float64").to_numpy()[rows]
        return values

    out["agri_cultivated_land_mu"] = _latest_ag("cultivated_land_mu", ag_last, a_pos)
    out["agri_livestock_units"] = _latest_ag("livestock_units", ag_last, a_pos)
    out["agri_livestock_change"] = out["agri_livestock_units"] - _latest_ag(
        "livestock_units", ag_prev, p_pos)
    out["agri_cooperative_member"] = _latest_ag("cooperative_member", ag_last, a_pos)
    out["agri_industry_support_yuan"] = _latest_ag("industry_support_yuan", ag_last, a_pos)

    # -- assets ---------------------------------------------------------------------------
    assets = f["assets"].as_of(as_of)
    asset_pos = hh.person_pos(assets["person_key"])
    for kind in ("vehicle", "urban_housing", "commercial_property", "business_registration"):
        out[f"assets_{kind}"] = hh.total(asset_pos, mask=is_one_of(assets, "asset_type", kind))
    out["assets_value"] = hh.total(asset_pos, assets["value_yuan"].to_numpy())

    # -- monitoring history and village/county context --------------------------------------
    ev = f["monitoring_events"].as_of(as_of)
    ev_pos = hh.pos(ev["household_key"])
    identified = is_one_of(ev, "event", "identified")
    ev_month = months_of(_dates(ev, "event_date"))
    out["monitoring_times_identified"] = hh.total(ev_pos, mask=identified)
    out["monitoring_months_since_eliminated"] = m_t - hh.maximum(
        ev_pos, ev_month, ~identified, np.nan)
    identified_12m = hh.total(ev_pos, mask=identified & (ev_month > m_t - 12)) > 0
    shock = ((np.nan_to_num(out["disaster_loss_3m"]) > 0)
             | (np.nan_to_num(out["medical_inpatient_days_3m"]) > 0)
             | (np.nan_to_num(out["employment_unemployed_members"]) > 0)
             | (deaths_3m > 0))
    village = roster["village_code"].to_numpy()
    out["village_shock_share_3m"] = _village_mean(village, shock)
    out["village_identified_share_12m"] = _village_mean(village, identified_12m)

    # -- feed absence: features of an absent feed are missing, not zero -------------------
    for name in OPTIONAL_FEEDS:
        out[f"{name}_feed_missing"] = np.full(hh.n, 0.0 if delivered[name] else 1.0)
        if not delivered[name]:
            for spec in FEATURES:
                if spec.feed == name and spec.missing != "always":
                    out[spec.name] = np.full(hh.n, np.nan)
    if not (delivered["medical"] and delivered["income_checks"]):
        out["medical_oop_12m_income_share"] = np.full(hh.n, np.nan)

    frame = pd.DataFrame({
        "household_key": history.household_keys[roster["household_key"].to_numpy()],
        "as_of": np.full(hh.n, np.datetime64(as_of, "D")).astype("datetime64[ms]"),
        "county_code": history.county,
        "village_code": village,
    })
    features = pd.DataFrame(
        {name: np.asarray(out[name], dtype=np.float64) for name in feature_names()})
    groups = _groups(roster, members, head_row, head_age, out, delivered["disability"])
    return pd.concat([frame, features, groups], axis=1)


def _isin(values: np.ndarray, options: Iterable[object]) -> np.ndarray:
    """Hash-based membership (np.isin sorts object arrays: slow for strings)."""
    return pd.Index(values).isin(list(options))


def _last_within(person: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mask of each person's last masked row (rows sorted by person, then time)."""
    idx = np.flatnonzero(mask)
    out = np.zeros(len(person), dtype=bool)
    out[idx[_last_per(person[idx])]] = True
    return out


def _head_rows(hh: Households, roster: pd.DataFrame, members: pd.DataFrame) -> np.ndarray:
    """Member row of each household's head: the roster's head if still a current member,
    else the current member recorded with relation `head` (-1 when neither exists)."""
    rows = hh.member(roster["head_person_key"])
    is_head = np.flatnonzero(is_one_of(members, "relation", "head") & (hh.member_pos >= 0))
    fallback = np.full(hh.n, -1, dtype=np.int64)
    fallback[hh.member_pos[is_head][::-1]] = is_head[::-1]  # first listed head wins
    return np.where(rows >= 0, rows, fallback)


def _share(flag: np.ndarray, rows: np.ndarray) -> float:
    n = int(rows.sum())
    return float((flag & rows).sum() / n) if n else float("nan")


def _village_mean(village: np.ndarray, flag: np.ndarray) -> np.ndarray:
    frame = pd.DataFrame({"v": village, "f": flag.astype(np.float64)})
    return frame.groupby("v")["f"].transform("mean").to_numpy()


def _groups(roster: pd.DataFrame, members: pd.DataFrame, head_row: np.ndarray,
            head_age: np.ndarray, out: dict[str, np.ndarray],
            disability_delivered: bool) -> pd.DataFrame:
    n = len(roster)
    has_head = head_row >= 0
    minority = np.full(n, np.nan)
    ethnicity = members["ethnicity"].astype(object).to_numpy()[head_row[has_head]]
    known = pd.notna(ethnicity) & (pd.Series(ethnicity, dtype="str").str.strip() != "")
    minority_values = np.where(known, ethnicity != MAJORITY_ETHNICITY, np.nan)
    minority[has_head] = minority_values
    disabled = (out["disabled_members"] > 0).astype(np.float64)
    if not disability_delivered:
        disabled = np.full(n, np.nan)
    return pd.DataFrame({
        "group_head_ethnic_minority": minority,
        "group_head_elderly": np.where(np.isnan(head_age), np.nan, head_age >= 65),
        "group_disabled_member": disabled,
        "group_former_poor": out["former_poor"],
        "group_relocated": out["relocated"],
    })


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


def output_columns() -> list[str]:
    return [*KEY_COLUMNS, *feature_names(), *group_column_names()]
