"""The feature builders: one per feed of the registry, selected by the registry's `feed`.

A builder turns a `CountyAsOf` into `{feature name: float array over the roster}` for
exactly the features `registry.built_from(feed)` lists (tests/features/
test_feature_builders.py holds them to it). Names generated from a template come from
the registry's `FeatureFamily`s. The DERIVED builder runs last and also reads what
the feed builders built (`built`); the others ignore it. Feed absence (NaN for an
absent feed's features) is applied afterwards, in `features.build`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from features.asof import months_of, spell_covers
from features.codes import DAMAGE_LEVEL, GRADE_LEVEL, SENIOR_OR_HIGHER, TEMPORARY, WORK_STATUSES
from features.county import (
    CountyAsOf,
    dates,
    is_nonblank,
    is_one_of,
    last_per,
)
from features.registry import (
    ASSETS_BY_TYPE,
    ASSISTANCE_NOW,
    DERIVED,
    DISABLED_BY_TYPE,
    MEDICAL_OOP,
    MEDICAL_OOP_PER_CAPITA,
    MEMBERS_AGED,
)

Features = dict[str, np.ndarray]
Builder = Callable[[CountyAsOf, Mapping[str, np.ndarray]], Features]

BUILDERS: dict[str, Builder] = {}


def builds(feed: str) -> Callable[[Builder], Builder]:
    """Register the decorated function as the builder of `feed`'s features."""
    def register(builder: Builder) -> Builder:
        if feed in BUILDERS:
            raise ValueError(f"two builders for the {feed} feed")
        BUILDERS[feed] = builder
        return builder
    return register


# -- helpers ------------------------------------------------------------------------------
def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _last_and_previous_per(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the last and the second-to-last row of each run of equal values."""
    last = last_per(values)
    previous = np.zeros(len(values), dtype=bool)
    previous[:-1] = last[1:] & (values[:-1] == values[1:])
    return last, previous


def _last_within(person: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mask of each person's last masked row (rows sorted by person, then time)."""
    idx = np.flatnonzero(mask)
    out = np.zeros(len(person), dtype=bool)
    out[idx[last_per(person[idx])]] = True
    return out


def _share(flag: np.ndarray, rows: np.ndarray) -> float:
    n = int(rows.sum())
    return float((flag & rows).sum() / n) if n else float("nan")


def _village_mean(village: np.ndarray, flag: np.ndarray) -> np.ndarray:
    frame = pd.DataFrame({"v": village, "f": flag.astype(np.float64)})
    return frame.groupby("v")["f"].transform("mean").to_numpy()


def _levels(frame: pd.DataFrame, column: str, levels: Mapping[str, float]) -> np.ndarray:
    return frame[column].astype(object).map(levels).astype("float64").to_numpy()


def _household_rows(county: CountyAsOf, feed_name: str) -> pd.DataFrame:
    """The feed's records of roster households only (rows of others dropped)."""
    rows = county.rows(feed_name)
    on_roster = county.households.pos(rows["household_key"]) >= 0
    return rows[on_roster].reset_index(drop=True)


# -- the builders, in registry order ----------------------------------------------------------
@builds("persons")
def _persons(county: CountyAsOf, built: Mapping[str, np.ndarray]) -> Features:
    hh, pos, age = county.households, county.households.member_pos, county.member_age
    out: Features = {"household_size": county.size}
    for (lo, hi), name in MEMBERS_AGED.names().items():
        out[name] = hh.total(pos, mask=(age >= lo) & (age <= hi))
    elderly = age >= 65
    out["members_aged_65_plus"] = hh.total(pos, mask=elderly)
    out["dependency_ratio"] = _ratio(hh.total(pos, mask=(age < 16) | elderly),
                                     county.n_working_age)
    head_row = county.head_row
    has_head = head_row >= 0
    out["head_age"] = np.full(hh.n, np.nan)
    out["head_age"][has_head] = age[head_row[has_head]]
    out["head_female"] = np.full(hh.n, np.nan)
    out["head_female"][has_head] = is_one_of(county.members, "sex", "F")[head_row[has_head]]
    out["deaths_12m"] = county.people_with_status_within("deceased", 12)
    out["departures_12m"] = county.people_with_status_within("moved_out", 12)
    return out


@builds("households")
def _households(county: CountyAsOf, built: Mapping[str, np.ndarray]) -> Features:
    roster = county.roster
    former = is_one_of(roster, "poverty_history", "former_poor")
    lifted = roster["lifted_year"].astype("float64").to_numpy()
    return {
        "former_poor": former.astype(np.float64),
        "years_since_lifted": np.where(former, county.as_of.year - lifted, np.nan),
        "relocated": roster["relocated"].astype("float64").to_numpy(),
    }


@builds("medical")
def _medical(county: CountyAsOf, built: Mapping[str, np.ndarray]) -> Features:
    hh, claims = county.households, county.records("medical", "month")
    oop = claims.column("out_of_pocket_yuan")
    out: Features = {}
    for w in MEDICAL_OOP.codes:
        total = hh.total(claims.pos, oop, claims.age < w)
        out[MEDICAL_OOP.name(w)] = total
        out[MEDICAL_OOP_PER_CAPITA.name(w)] = total / county.size
    in_year = claims.age < 12
    cost = hh.total(claims.pos, claims.column("total_cost_yuan"), in_year)
    out["medical_total_cost_12m"] = cost
    out["medical_reimbursed_share_12m"] = _ratio(
        hh.total(claims.pos, claims.column("reimbursed_yuan"), in_year), cost)
    inpatient = claims.column("inpatient_days")
    out["medical_inpatient_days_3m"] = hh.total(claims.pos, inpatient, claims.age < 3)
    out["medical_inpatient_days_12m"] = hh.total(claims.pos, inpatient, in_year)
    out["medical_outpatient_visits_12m"] = hh.total(
        claims.pos, claims.column("outpatient_visits"), in_year)
    person = claims.column("person_key")
    out["medical_serious_illness_members"] = hh.distinct(
        claims.pos, person, in_year & is_nonblank(claims.rows, "serious_illness"))
    uninsured = claims.rows["insured"].to_numpy(dtype=np.float64) == 0.0
    out["medical_uninsured_members"] = hh.total(
        claims.pos, mask=_last_within(person, in_year) & uninsured)
    return out


@builds("employment")
def _employment(county: CountyAsOf, built: Mapping[str, np.ndarray]) -> Features:
    hh, records = county.households, county.records("employment", "month")
    emp, emp_pos, emp_age = records.rows, records.pos, records.age
    emp_member = hh.member(emp["person_key"])
    emp_person = emp["person_key"].to_numpy()
    latest_3m = _last_within(emp_person, emp_age < 3)
    working_age = np.zeros(len(emp), dtype=bool)
    member = emp_member >= 0
    working_age[member] = county.working_age[emp_member[member]]
    working = is_one_of(emp, "status", *WORK_STATUSES)
    unemployed = is_one_of(emp, "status", "unemployed")
    out: Features = {
        "employment_employed_share": _ratio(
            hh.total(emp_pos, mask=latest_3m & working & working_age), county.n_working_age),
        "employment_migrant_share": _ratio(
            hh.total(emp_pos,
                     mask=latest_3m & is_one_of(emp, "status", "migrant") & working_age),
            county.n_working_age),
        "employment_unemployed_members": hh.total(emp_pos, mask=latest_3m & unemployed),
        "employment_public_welfare_post_members": hh.total(
            emp_pos, mask=latest_3m & is_one_of(emp, "status", "public_welfare_post")),
        "employment_unemployed_months_12m": hh.total(
            emp_pos, mask=(emp_age < 12) & unemployed),
    }
    wage = emp["monthly_wage_yuan"].to_numpy()
    wage_now = hh.total(emp_pos, wage, emp_age < 3) / 3.0
    wage_before = hh.total(emp_pos, wage, (emp_age >= 3) & (emp_age < 6)) / 3.0
    out["employment_wage_3m"] = wage_now
    out["employment_wage_change_3m"] = _ratio(wage_now - wage_before, wage_before)
    paid = emp["social_insurance_paid"].astype("float64").to_numpy()
    paid_before = np.zeros(county.history.n_persons, dtype=bool)
    paid_before[emp_person[(emp_age >= 3) & (emp_age < 12) & (paid == 1.0)]] = True
    stopped = latest_3m & (paid == 0.0) & paid_before[emp_person]
    out["employment_social_insurance_stopped"] = hh.total(emp_pos, mask=stopped)
    # the county's share of people (any age, on the roster or not) registered unemployed
    share_now = _share(unemployed, latest_3m)
    share_before = _share(unemployed,
                          _last_within(emp_person, (emp_age >= 3) & (emp_age < 6)))
    out["county_unemployed_share_3m"] = np.full(hh.n, share_now)
    out["county_unemployed_share_change"] = np.full(hh.n, share_now - share_before)
    return out


@builds("education")
def _education(county: CountyAsOf, built: Mapping[str, np.ndarray]) -> Features:
    hh, terms = county.households, county.records("education", "term")
    person = terms.column("person_key")
    in_year = terms.age < 12
    enrolled_now = (_last_within(person, in_year)
                    & is_one_of(terms.rows, "status", "enrolled"))
    return {
        "education_enrolled_members": hh.total(terms.pos, mask=enrolled_now),
        "education_senior_or_higher_members": hh.total(
            terms.pos, mask=enrolled_now & is_one_of(terms.rows, "stage", *SENIOR_OR_HIGHER)),
        "education_net_tuition_12m": hh.total(
            terms.pos, terms.column("tuition_yuan") - terms.column("aid_yuan"), in_year),
        "education_dropouts_12m": hh.distinct(
            terms.pos, person, in_year & is_one_of(terms.rows, "status", "dropped_out")),
    }


@builds("housing")
def _housing(county: CountyAsOf, built: Mapping[str, np.ndarray]) -> Features:
    hh, house = county.households, county.rows("housing")  # by household, assessed_date
    house_pos = hh.pos(house["household_key"])
    everything = np.ones(len(house), dtype=bool)
    level = hh.latest(house_pos, _levels(house, "safety_grade", GRADE_LEVEL), everything)
    assessed = hh.latest(house_pos, months_of(dates(house, "assessed_date")), everything)
    funded = hh.latest(house_pos, house["renovation_funded"].astype("float64").to_numpy(),
                       everything)
    return {
        "housing_safety_level": level,
        "housing_dangerous": (np.nan_to_num(level) >= 3).astype(np.float64),
        "housing_assessment_age_months": county.month - assessed,
        "housing_renovation_funded": np.nan_to_num(funded),
    }


@builds("disability")
def _disability(county: CountyAsOf, built: Mapping[str, np.ndarray]) -> Features:
    hh, certs = county.households, county.certificates  # each person's latest certificate
    cert_pos = hh.person_pos(certs["person_key"])
    grade = certs["grade"].to_numpy()
    out: Features = {
        "disabled_members": hh.total(cert_pos, mask=np.ones(len(certs), dtype=bool)),
        "disabled_members_grade_1_2": hh.total(cert_pos, mask=grade <= 2),
        "disabled_members_grade_3_4": hh.total(cert_pos, mask=grade >= 3),
    }
    for kind, name in DISABLED_BY_TYPE.names().items():
        out[name] = hh.total(cert_pos, mask=is_one_of(certs, "disability_type", kind))
    every_cert = county.rows("disability")
    new_cert = months_of(dates(every_cert, "certified_date")) > county.month - 12
    out["disability_certified_12m"] = hh.distinct(
        hh.person_pos(every_cert["person_key"]), every_cert["person_key"].to_numpy(), new_cert)
    subsidy = ((certs["living_subsidy"].to_numpy(dtype=np.float64) == 1.0)
               | (certs["care_subsidy"].to_numpy(dtype=np.float64) == 1.0))
    out["disability_subsidised_members"] = hh.total(cert_pos, mask=subsidy)
    return out


@builds("disasters")
def _disasters(county: CountyAsOf, built: Mapping[str, np.ndarray]) -> Features:
    hh, events = county.households, county.records("disasters", "event_date")
    loss = events.column("loss_yuan")
    damage = np.nan_to_num(_levels(events.rows, "house_damage", DAMAGE_LEVEL))
    county_loss = float(np.nansum(loss[events.age < 3]))
    return {
        "disaster_loss_3m": hh.total(events.pos, loss, events.age < 3),
        "disaster_loss_12m": hh.total(events.pos, loss, events.age < 12),
        "disaster_events_12m": hh.total(events.pos, mask=events.age < 12),
        "disaster_house_damage_12m": hh.maximum(events.pos, damage, events.age < 12, 0.0),
        "county_disaster_loss_3m_per_household": np.full(
            hh.n, county_loss / hh.n if hh.n else np.nan),
    }


@builds("social_assistance")
def _social_assistance(county: CountyAsOf, built: Mapping[str, np.ndarray]) -> Features:
    hh, sa = county.households, county.rows("social_assistance")
    sa_pos = hh.pos(sa["household_key"])
    start, end = dates(sa, "start_date"), dates(sa, "end_date")
    covering = spell_covers(start, end, county.as_of)
    temporary = is_one_of(sa, "program", TEMPORARY)
    out: Features = {}
    for programme, name in ASSISTANCE_NOW.names().items():
        spells = hh.total(sa_pos, mask=covering & is_one_of(sa, "program", programme))
        out[name] = (spells > 0).astype(np.float64)
    amount = sa["monthly_amount_yuan"].to_numpy()
    out["assistance_monthly_amount_now"] = hh.total(sa_pos, amount, covering & ~temporary)
    paid_in_year = temporary & (county.month - months_of(start) < 12)
    out["assistance_temporary_12m"] = hh.total(sa_pos, amount, paid_in_year)
    t = np.datetime64(county.as_of, "D")
    ended = (~temporary & ~np.isnat(end) & (end <= t)
             & (county.month - months_of(end) < 6))
    out["assistance_spells_ended_6m"] = hh.total(sa_pos, mask=ended)
    return out


@builds("income_checks")
def _income_checks(county: CountyAsOf, built: Mapping[str, np.ndarray]) -> Features:
    hh = county.households
    checks = _household_rows(county, "income_checks")  # by household, period_end
    last, previous = _last_and_previous_per(checks["household_key"].to_numpy())
    latest_rows = checks[last]
    at = hh.pos(latest_rows["household_key"])  # positions of the latest checks

    def latest(values: np.ndarray) -> np.ndarray:
        out = np.full(hh.n, np.nan)
        out[at] = values
        return out

    pc = latest(latest_rows["per_capita_net_income_yuan"].to_numpy())
    pc_prev = np.full(hh.n, np.nan)
    pc_prev[hh.pos(checks[previous]["household_key"])] = checks[previous][
        "per_capita_net_income_yuan"].to_numpy()
    period = dates(latest_rows, "period_end")
    check_year = pd.DatetimeIndex(period).year.to_numpy()
    lines = {y: county.settings.monitoring_line(int(y)) for y in np.unique(check_year)}
    line = latest(np.array([lines[y] for y in check_year], dtype=np.float64))
    rigid = latest(latest_rows["rigid_expenditure_yuan"].astype("float64").to_numpy())
    net = latest(latest_rows["wage_income_yuan"].to_numpy()
                 + latest_rows["operating_income_yuan"].to_numpy()
                 + latest_rows["property_income_yuan"].to_numpy()
                 + latest_rows["transfer_income_yuan"].to_numpy())
    wages = latest(latest_rows["wage_income_yuan"].to_numpy())
    return {
        "income_per_capita": pc,
        "income_to_monitoring_line": pc / line,
        "income_after_rigid_to_monitoring_line": (pc - rigid / county.size) / line,
        "income_per_capita_change": pc - pc_prev,
        "income_per_capita_change_pct": _ratio(pc - pc_prev, np.abs(pc_prev)),
        "income_rigid_expenditure_ratio": _ratio(rigid, net),
        "income_wage_share": _ratio(wages, net),
        "income_check_age_months": latest(county.month - months_of(period)),
    }


@builds("agriculture")
def _agriculture(county: CountyAsOf, built: Mapping[str, np.ndarray]) -> Features:
    hh = county.households
    years = _household_rows(county, "agriculture")  # by household, year
    last, previous = _last_and_previous_per(years["household_key"].to_numpy())

    def of_year(column: str, rows: np.ndarray) -> np.ndarray:
        values = np.full(hh.n, np.nan)
        values[hh.pos(years["household_key"][rows])] = years[column].astype(
            "float64").to_numpy()[rows]
        return values

    livestock = of_year("livestock_units", last)
    return {
        "agri_cultivated_land_mu": of_year("cultivated_land_mu", last),
        "agri_livestock_units": livestock,
        "agri_livestock_change": livestock - of_year("livestock_units", previous),
        "agri_cooperative_member": of_year("cooperative_member", last),
        "agri_industry_support_yuan": of_year("industry_support_yuan", last),
    }


@builds("assets")
def _assets(county: CountyAsOf, built: Mapping[str, np.ndarray]) -> Features:
    hh, assets = county.households, county.rows("assets")
    asset_pos = hh.person_pos(assets["person_key"])
    out = {name: hh.total(asset_pos, mask=is_one_of(assets, "asset_type", kind))
           for kind, name in ASSETS_BY_TYPE.names().items()}
    out["assets_value"] = hh.total(asset_pos, assets["value_yuan"].to_numpy())
    return out


@builds("monitoring_events")
def _monitoring_events(county: CountyAsOf, built: Mapping[str, np.ndarray]) -> Features:
    hh, ev = county.households, county.rows("monitoring_events")
    ev_pos = hh.pos(ev["household_key"])
    identified = is_one_of(ev, "event", "identified")
    ev_month = months_of(dates(ev, "event_date"))
    identified_12m = hh.total(ev_pos, mask=identified & (ev_month > county.month - 12)) > 0
    eliminated = hh.maximum(ev_pos, ev_month, ~identified, np.nan)
    return {
        "monitoring_times_identified": hh.total(ev_pos, mask=identified),
        "monitoring_months_since_eliminated": county.month - eliminated,
        "village_identified_share_12m": _village_mean(
            county.roster["village_code"].to_numpy(), identified_12m),
    }


@builds(DERIVED)
def _derived(county: CountyAsOf, built: Mapping[str, np.ndarray]) -> Features:
    """Features combining feeds: read from `built` (before feed absence is applied)."""
    hh = county.households
    severe_person = np.zeros(county.history.n_persons, dtype=bool)
    certs = county.certificates
    severe_person[certs.loc[certs["grade"] <= 2, "person_key"].to_numpy()] = True
    severe = severe_person[county.members["person_key"].to_numpy()]
    labour = hh.total(hh.member_pos, mask=county.working_age & ~severe)
    income_share = _ratio(built[MEDICAL_OOP.name(12)], built["income_per_capita"] * county.size)
    if not (county.delivered["medical"] and county.delivered["income_checks"]):
        income_share = np.full(hh.n, np.nan)
    shock = ((np.nan_to_num(built["disaster_loss_3m"]) > 0)
             | (np.nan_to_num(built["medical_inpatient_days_3m"]) > 0)
             | (np.nan_to_num(built["employment_unemployed_members"]) > 0)
             | (county.people_with_status_within("deceased", 3) > 0))
    return {
        "labour_capable_adults": labour,
        "no_labour_capable_adult": (labour == 0).astype(np.float64),
        "medical_oop_12m_income_share": income_share,
        "village_shock_share_3m": _village_mean(county.roster["village_code"].to_numpy(), shock),
    }
