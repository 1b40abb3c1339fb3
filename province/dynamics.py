"""One month of latent life in the province: `step(state, month, rng, ...)`.

Vectorised over persons and households. `step` mutates the state and returns a
`MonthOutcome` with what happened this month (the raw material of records).
The oracle calls the very same `step` on tiled copies of the state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from province import timeutil
from province.params import WorldParams
from province.state import (
    DECEASED,
    DIBAO,
    DROPPED_OUT,
    ENROLLED,
    GRADUATED,
    HIGHER,
    JUNIOR,
    LIVING,
    LOCAL,
    MARGINAL,
    MIGRANT,
    MOVED_OUT,
    N_RISKS,
    NO_WORK,
    NULL,
    PRESCHOOL,
    PRIMARY,
    RIGID,
    RISK_ACCIDENT,
    RISK_DISABILITY,
    RISK_DISASTER,
    RISK_EDUCATION,
    RISK_EMPLOYMENT,
    RISK_HOUSING,
    RISK_ILLNESS,
    RISK_INDUSTRY,
    RISK_LABOR,
    RISK_OTHER,
    RISK_WATER,
    SEASONAL,
    SELF_EMPLOYED,
    SENIOR,
    TEKUN,
    TEMPORARY,
    VOCATIONAL,
    WELFARE_POST,
    Persons,
    State,
)
from province.world import grade_of

# share of a year's farm income earned in each calendar month (harvest-heavy)
FARM_SEASON = np.array([0, 0, 0, 0, 0.03, 0.07, 0.2, 0.25, 0.25, 0.15, 0.05, 0])
# hazards by calendar month: contract HAZARD order
# flood, drought, hail, frost, landslide, earthquake, fire, other
HAZARD_BY_MONTH = np.array(
    [
        [0, 0, 0, 0.3, 0, 0.1, 0.4, 0.2],
        [0, 0, 0, 0.4, 0, 0.1, 0.3, 0.2],
        [0, 0, 0, 0.6, 0.1, 0.1, 0.1, 0.1],
        [0.05, 0, 0.1, 0.55, 0.1, 0.1, 0.05, 0.05],
        [0.15, 0, 0.35, 0.2, 0.15, 0.05, 0.05, 0.05],
        [0.3, 0, 0.35, 0, 0.25, 0.05, 0, 0.05],
        [0.45, 0, 0.25, 0, 0.25, 0.03, 0, 0.02],
        [0.45, 0, 0.25, 0, 0.25, 0.03, 0, 0.02],
        [0.35, 0, 0.2, 0.1, 0.25, 0.05, 0, 0.05],
        [0.1, 0, 0.1, 0.5, 0.1, 0.1, 0.05, 0.05],
        [0, 0, 0, 0.5, 0.05, 0.1, 0.2, 0.15],
        [0, 0, 0, 0.3, 0, 0.1, 0.4, 0.2],
    ]
)
DROUGHT = 1
DETECT_SELF, DETECT_VISIT, DETECT_WARNING = 0, 1, 2  # contract DETECTION_SOURCE order


@dataclass
class MonthOutcome:
    """What happened in one month (persons: P arrays; households: N arrays)."""

    month: int
    died: np.ndarray
    moved_out: np.ndarray
    job_lost: np.ndarray
    outpatient: np.ndarray
    inpatient_days: np.ndarray
    total_cost: np.ndarray
    reimbursed: np.ndarray
    certified: np.ndarray  # a disability certificate issued this month
    tuition: np.ndarray  # this term's fees (term months only)
    aid: np.ndarray
    school_changed: np.ndarray  # dropped out or graduated this month (term months)
    disaster_hazard: np.ndarray  # -1 none
    disaster_day: np.ndarray
    disaster_loss: np.ndarray
    disaster_damage: np.ndarray
    assessed: np.ndarray
    assessed_day: np.ndarray
    renovation_funded: np.ndarray
    wage_income: np.ndarray
    operating_income: np.ndarray
    property_income: np.ndarray
    transfer_income: np.ndarray
    rigid_expenditure: np.ndarray
    members: np.ndarray
    per_capita_12m: np.ndarray  # after rigid expenditure
    onset: np.ndarray  # hardship began this month
    identified: np.ndarray
    eliminated: np.ndarray
    assist_started: np.ndarray
    assist_started_program: np.ndarray
    assist_started_amount: np.ndarray
    assist_ended: np.ndarray
    assist_ended_program: np.ndarray
    assist_ended_start: np.ndarray
    assist_ended_amount: np.ndarray

    @property
    def out_of_pocket(self) -> np.ndarray:
        return self.total_cost - self.reimbursed


def cost_of(chronic: np.ndarray, params: WorldParams) -> np.ndarray:
    """Median cost of a hospital stay by chronic-illness level."""
    return np.where(chronic == 2, params.hospital_cost_median_serious, params.hospital_cost_median)


def _chance(rng: np.random.Generator, p: np.ndarray | float, n: int) -> np.ndarray:
    # float32 draws: twice as fast, and monthly rates need no finer resolution
    return rng.random(n, dtype=np.float32) < p


def step(
    state: State,
    month: int,
    rng: np.random.Generator,
    params: WorldParams,
    monitoring_line: float,
    detection: bool = True,
) -> MonthOutcome:
    """Advance the province by one month (mutates `state`)."""
    c, v, h, p = state.counties, state.villages, state.households, state.persons
    n, n_p = len(h.village), len(p.hh)
    cal = timeutil.calendar_month(month)
    month_start = int(timeutil.first_day(month))
    days_in_month = int(timeutil.last_day(month)) - month_start + 1

    # --- county-level shocks -------------------------------------------------
    if cal == 1:
        c.drought_year[:] = _chance(rng, params.drought_year_per_county, len(c.proneness))
    closure = _chance(rng, params.employer_closure_per_county_month, len(c.proneness))

    age = (month - p.birth_month) // 12
    frag_p = h.fragility[p.hh]
    alive = p.status == LIVING

    # --- deaths and departures ----------------------------------------------
    yearly = np.exp(params.mortality_gompertz_a + params.mortality_gompertz_b * age)
    yearly *= (
        1 + 2.5 * (p.chronic == 2) + 0.5 * ((p.disability_grade > 0) & (p.disability_grade <= 2))
    )
    died = alive & _chance(rng, -np.expm1(-yearly / 12), n_p)
    leave = (
        alive
        & ~died
        & (p.relation != 0)
        & (age >= 18)
        & (age <= 35)
        & _chance(rng, params.departure_young_adult, n_p)
    )
    p.status[died] = DECEASED
    p.status[leave] = MOVED_OUT
    changed = died | leave
    p.status_day[changed] = month_start + rng.integers(0, days_in_month, int(changed.sum()))
    p.employed[changed] = False
    alive = p.status == LIVING

    # --- work ---------------------------------------------------------------
    student = (p.school_stage >= 0) & (p.school_status == ENROLLED)
    retire = alive & (age >= 65) & np.isin(p.work, [LOCAL, MIGRANT, SEASONAL])
    p.work[retire] = NO_WORK
    p.employed[retire] = False
    can_start = (
        alive
        & (p.work == NO_WORK)
        & ~student
        & (age >= 16)
        & (age < 50)
        & ((p.disability_grade == 0) | (p.disability_grade >= 3))
    )
    start = can_start & _chance(rng, 0.015, n_p)
    p.work[start] = np.where(rng.random(int(start.sum())) < 0.6, MIGRANT, LOCAL)
    p.wage[start] = np.where(
        p.work[start] == MIGRANT, params.wage_migrant, params.wage_local
    ) * np.exp(
        rng.normal(0, params.wage_sigma, int(start.sum()))
        - params.fragility_wage_effect * frag_p[start]
    )
    p.employed[start] = True

    loss_p = np.select(
        [p.work == LOCAL, p.work == MIGRANT, p.work == SEASONAL, p.work == SELF_EMPLOYED],
        [
            params.job_loss_local,
            params.job_loss_migrant,
            params.job_loss_seasonal,
            params.business_failure,
        ],
        0.0,
    ) * np.exp(0.35 * frag_p)
    closed_here = closure[h.county[p.hh]] & (p.work == LOCAL)
    loss_p = np.where(closed_here, params.employer_closure_job_loss, loss_p)
    job_lost = alive & p.employed & _chance(rng, loss_p, n_p)
    p.employed[job_lost] = False
    rehire_p = params.reemployment * np.exp(-0.35 * frag_p) * np.where(age < 50, 1.0, 0.6)
    rehired = alive & ~p.employed & (p.work != NO_WORK) & ~job_lost & _chance(rng, rehire_p, n_p)
    p.employed[rehired] = True

    # --- health, accidents, disability ---------------------------------------
    onset_year = params.chronic_onset_base_year + params.chronic_onset_per_year_over_30 * np.clip(
        age - 30, 0, None
    )
    new_chronic = (
        alive & (p.chronic == 0) & _chance(rng, onset_year * np.exp(0.2 * frag_p) / 12, n_p)
    )
    p.chronic[new_chronic] = 1
    p.illness_code[new_chronic] = rng.integers(0, 8, int(new_chronic.sum()))
    worse = alive & (p.chronic == 1) & _chance(rng, params.chronic_to_serious_year / 12, n_p)
    p.chronic[worse] = 2
    hosp_p = (
        params.hospital_base * (1 + np.clip(age - 50, 0, None) / 15)
        + params.hospital_chronic * (p.chronic == 1)
        + params.hospital_serious * (p.chronic == 2)
    )
    hospital = alive & _chance(rng, hosp_p, n_p)
    accident = alive & _chance(
        rng, params.accident * np.where((age >= 16) & (age < 65), 1.5, 0.7), n_p
    )
    visits = np.zeros(n_p, dtype=np.int64)
    for level in (0, 1, 2):  # scalar-rate draws on subsets: far cheaper than per-person rates
        who = np.flatnonzero(alive & (p.chronic == level))
        visits[who] = rng.poisson(0.12 + 0.8 * level, len(who))
    total = np.zeros(n_p)
    days = np.zeros(n_p, dtype=np.int64)
    for event, median in ((hospital, None), (accident, params.accident_cost_median)):
        who = np.flatnonzero(event)
        scale = cost_of(p.chronic[who], params) if median is None else median
        total[who] += scale * np.exp(rng.normal(0, 0.8 if median is None else 0.9, len(who)))
        days[who] = np.clip(rng.poisson(9, len(who)) + 2, 1, 31)
    visited = np.flatnonzero(visits > 0)
    total[visited] += visits[visited] * rng.uniform(60, 180, len(visited))
    total = np.round(total, 2)
    rate = (
        params.reimbursement_rate
        + params.medical_assistance_extra * (h.former_poor | h.monitored)[p.hh]
    )
    reimbursed = total * rate + params.critical_illness_extra * np.clip(total - 15000, 0, None)
    reimbursed = np.where(p.insured, np.round(np.minimum(reimbursed, total * 0.92), 2), 0.0)
    oop = total - reimbursed
    p.employed[accident & _chance(rng, 0.5, n_p)] = False  # recovering, off work a while

    disabled_now = (
        alive
        & (p.disability_grade == 0)
        & (
            (accident & _chance(rng, params.accident_disability, n_p))
            | ((p.chronic == 2) & _chance(rng, params.disability_after_serious_year / 12, n_p))
        )
    )
    p.disability_grade[disabled_now] = rng.integers(1, 5, int(disabled_now.sum()))
    p.disability_type[disabled_now] = rng.integers(0, 7, int(disabled_now.sum()))
    p.certify_month[disabled_now] = month + rng.integers(
        1, params.certification_delay_max_months + 1, int(disabled_now.sum())
    )
    severe = disabled_now & (p.disability_grade <= 2)
    p.employed[severe] = False
    p.work[severe] = NO_WORK
    certified = alive & (p.certify_month == month)
    p.certify_month[certified] = NULL

    if cal == 1:  # annual enrolment: some lapse, most re-enrol
        p.insured[:] = rng.random(n_p) > params.uninsured_share * np.exp(0.5 * frag_p)

    # --- education (terms start in March and September) ------------------------
    school_changed = np.zeros(n_p, dtype=bool)
    education_cost = np.zeros(n_p)
    tuition = np.zeros(n_p)
    aid = np.zeros(n_p)
    hardship_p = h.hardship[p.hh]
    if cal == 9:
        _school_year_transitions(p, age, alive, frag_p, rng, params, school_changed)
    if cal in (3, 9):
        enrolled = alive & (p.school_status == ENROLLED) & (p.school_stage >= 0)
        compulsory = (p.school_stage == PRIMARY) | (p.school_stage == JUNIOR)
        drop_p = np.where(
            compulsory, params.compulsory_dropout_per_term, 0.01 * np.exp(0.3 * frag_p)
        ) * (1 + 4 * hardship_p)
        drop = enrolled & (p.school_stage != PRESCHOOL) & _chance(rng, drop_p, n_p)
        p.school_status[drop] = DROPPED_OUT
        school_changed |= drop
        tuition = np.select(
            [
                p.school_stage == SENIOR,
                p.school_stage == VOCATIONAL,
                p.school_stage == HIGHER,
                p.school_stage == PRESCHOOL,
            ],
            [
                params.tuition_senior_term,
                params.tuition_vocational_term,
                params.tuition_higher_term,
                500.0,
            ],
            0.0,
        )
        aided = (h.former_poor | h.monitored)[p.hh] | _chance(rng, 0.25, n_p)
        aid = np.where(
            aided,
            np.select(
                [p.school_stage == SENIOR, p.school_stage == HIGHER, p.school_stage == VOCATIONAL],
                [params.aid_senior_term, params.aid_higher_term, 1000.0],
                0.0,
            ),
            0.0,
        )
        education_cost = np.where(enrolled & ~drop, np.clip(tuition - aid, 0, None), 0.0)

    # --- households: disasters, housing, farming --------------------------------
    hazard = np.full(n, -1, dtype=np.int8)
    loss = np.zeros(n)
    damage = np.zeros(n, dtype=np.int8)
    county_hit = _chance(rng, params.disaster_per_county_month * c.proneness, len(c.proneness))
    county_hazard = (
        (rng.random(len(c.proneness))[:, None] > np.cumsum(HAZARD_BY_MONTH[cal - 1])[None, :])
        .sum(axis=1)
        .clip(0, 7)
    )
    remote = v.remoteness[h.village]
    hit = county_hit[h.county] & _chance(rng, params.disaster_household_hit * (0.5 + remote), n)
    hazard[hit] = county_hazard[h.county[hit]]
    if cal == 7:  # drought years show up as summer drought reports
        dry = c.drought_year[h.county] & (h.land_mu > 0) & ~hit & _chance(rng, 0.5, n)
        hazard[dry] = DROUGHT
        hit |= dry
    loss[hit] = np.round(
        params.disaster_loss_median * np.exp(rng.normal(0, 0.9, int(hit.sum()))), 2
    )
    damage_roll = rng.random(n) * (0.6 + 0.8 * (1 - h.house_score))
    damage[hit] = np.select(
        [damage_roll[hit] > 1.05, damage_roll[hit] > 0.93, damage_roll[hit] > 0.6], [3, 2, 1], 0
    )
    damage[hazard == DROUGHT] = 0
    h.house_score = np.clip(
        h.house_score
        - params.house_decay_year / 12 * (1 + 0.3 * h.fragility.clip(0, None))
        - np.select([damage == 1, damage == 2, damage == 3], [0.08, 0.3, 1.0], 0.0),
        0.03,
        1.0,
    )
    disaster_day = np.where(hit, month_start + rng.integers(0, days_in_month, n), NULL)

    renovated = h.renovation_due == month
    h.house_score[renovated] = 0.95
    h.renovation_due[renovated] = NULL
    assessed = renovated | (damage >= 2) | _chance(rng, params.house_reassessment_year / 12, n)
    assessed_day = np.where(assessed, month_start + rng.integers(0, days_in_month, n), NULL)
    assessed_day = np.where((damage >= 2), np.maximum(assessed_day, disaster_day), assessed_day)
    assessed_day = np.minimum(assessed_day, month_start + days_in_month - 1)
    h.house_grade[assessed] = grade_of(h.house_score[assessed])
    funded = (
        assessed
        & (h.house_grade == 3)
        & (h.monitored | h.former_poor | h.hardship)
        & _chance(rng, 0.7, n)
        & (h.renovation_due == NULL)
    )
    h.renovation_due[funded] = month + rng.integers(4, 11, int(funded.sum()))

    # --- income this month --------------------------------------------------------
    in_season = 3 <= cal <= 11
    wage_person = np.where(
        alive & p.employed,
        np.select(
            [p.work == LOCAL, p.work == MIGRANT, p.work == SEASONAL, p.work == WELFARE_POST],
            [p.wage, p.wage * 0.85, p.wage * in_season, params.wage_public_welfare_post],
            0.0,
        ),
        0.0,
    )
    business = np.where(alive & p.employed & (p.work == SELF_EMPLOYED), p.wage, 0.0)
    wage_income = np.bincount(p.hh, wage_person, n)
    working_age_alive = (
        alive
        & (age >= 16)
        & (age <= 64)
        & ~student
        & ((p.disability_grade == 0) | (p.disability_grade >= 3))
    )
    labor = np.bincount(p.hh, working_age_alive, n)
    farm = h.land_mu * params.farm_income_per_mu_year * FARM_SEASON[cal - 1]
    farm *= np.where(c.drought_year[h.county], 1 - params.drought_farm_loss, 1.0)
    farm *= np.where(labor > 0, 1.0, 0.35)
    operating = (
        farm
        + h.livestock * params.livestock_income_per_unit_year / 12
        + np.bincount(p.hh, business, n)
        - 0.5 * loss
    )
    members = np.bincount(p.hh, alive, n)
    property_income = (
        params.property_income_monthly_mean * (0.5 + 1.5 * h.relocated) * (members > 0)
    )
    pensions = np.bincount(p.hh, alive & (age >= 60), n) * params.pension_monthly
    disability_support = np.bincount(
        p.hh,
        (alive & (p.disability_grade > 0) & (p.disability_grade <= 2))
        * (params.disability_living_subsidy + params.disability_care_subsidy),
        n,
    )
    assistance = np.where(
        (h.assist_program >= 0)
        & (h.assist_start <= month)
        & ((h.assist_program != TEMPORARY) | (h.assist_start == month)),
        h.assist_amount,
        0.0,
    )
    transfer = (
        pensions
        + h.land_mu * params.farm_subsidy_per_mu_year / 12
        + h.former_poor * params.former_poor_subsidy_monthly
        + disability_support
        + assistance
    ) * (members > 0)
    water_problem = (remote > 0.6) & _chance(rng, 0.0004, n)
    rigid = (
        np.bincount(p.hh, np.where(alive, oop, 0.0), n)
        + np.bincount(p.hh, education_cost, n)
        + 400.0 * water_problem
    )
    net = wage_income + operating + property_income + transfer
    slot = month % 12
    h.income_hist[:, slot] = net
    h.rigid_hist[:, slot] = rigid
    per_capita = (h.income_hist.sum(axis=1) - h.rigid_hist.sum(axis=1)) / np.maximum(members, 1)

    # --- causes and true hardship --------------------------------------------------
    hh_oop = np.bincount(p.hh, np.where(alive, oop, 0.0), n)
    cause_now = np.zeros((n, N_RISKS), dtype=bool)
    cause_now[:, RISK_ILLNESS] = (hh_oop > 3000) | (np.bincount(p.hh, worse, n) > 0)
    cause_now[:, RISK_ACCIDENT] = np.bincount(p.hh, accident, n) > 0
    cause_now[:, RISK_DISABILITY] = np.bincount(p.hh, disabled_now, n) > 0
    cause_now[:, RISK_DISASTER] = hit & ((loss > 2000) | (damage >= 2))
    cause_now[:, RISK_EMPLOYMENT] = np.bincount(p.hh, job_lost & (p.work != SELF_EMPLOYED), n) > 0
    cause_now[:, RISK_INDUSTRY] = (
        np.bincount(p.hh, job_lost & (p.work == SELF_EMPLOYED), n) > 0
    ) | ((cal == 9) & c.drought_year[h.county] & (h.land_mu > 8))
    cause_now[:, RISK_EDUCATION] = np.bincount(p.hh, education_cost, n) > 1500
    cause_now[:, RISK_HOUSING] = damage >= 2
    cause_now[:, RISK_WATER] = water_problem
    h.cause_month[cause_now] = month

    compulsory_age = alive & (age >= 6) & (age <= 15)
    guarantee_failure = (
        (np.bincount(p.hh, compulsory_age & (p.school_status == DROPPED_OUT), n) > 0)
        | (np.bincount(p.hh, alive & ~p.insured, n) > 0)
        | (grade_of(h.house_score) == 3)
    )
    was_hardship = h.hardship.copy()
    h.hardship = (members > 0) & ((per_capita < monitoring_line) | guarantee_failure)
    onset = h.hardship & ~was_hardship
    h.stable_months = np.where(h.hardship, 0, h.stable_months + 1).astype(np.int16)

    identified = np.zeros(n, dtype=bool)
    eliminated = np.zeros(n, dtype=bool)
    if detection:
        identified, eliminated = _detect_and_assist(
            state,
            month,
            rng,
            params,
            monitoring_line,
            per_capita,
            hh_oop,
            members,
            labor,
            school_changed,
        )
    assist_started = (h.assist_program >= 0) & (h.assist_start == month)
    started_program = h.assist_program.copy()  # before same-month (temporary) spells close
    started_amount = h.assist_amount.copy()

    # --- assistance spells ending --------------------------------------------------
    lone_tekun_gone = h.tekun & (members == 0) & (h.assist_program == TEKUN)
    h.assist_end_due[lone_tekun_gone] = month
    temporary_done = (h.assist_program == TEMPORARY) & (h.assist_start == month)
    h.assist_end_due[temporary_done] = month
    ended = (h.assist_program >= 0) & (h.assist_end_due == month) & (h.assist_start <= month)
    ended_program = h.assist_program.copy()
    ended_start = h.assist_start.copy()
    ended_amount = h.assist_amount.copy()
    h.assist_program[ended] = -1
    h.assist_start[ended] = NULL
    h.assist_end_due[ended] = NULL
    h.tekun[ended & (ended_program == TEKUN)] = False

    return MonthOutcome(
        month=month,
        died=died,
        moved_out=leave,
        job_lost=job_lost,
        outpatient=visits,
        inpatient_days=days,
        total_cost=total,
        reimbursed=reimbursed,
        certified=certified,
        tuition=tuition,
        aid=aid,
        school_changed=school_changed,
        disaster_hazard=hazard,
        disaster_day=disaster_day,
        disaster_loss=loss,
        disaster_damage=damage,
        assessed=assessed,
        assessed_day=assessed_day,
        renovation_funded=funded,
        wage_income=wage_income,
        operating_income=operating,
        property_income=property_income,
        transfer_income=transfer,
        rigid_expenditure=rigid,
        members=members,
        per_capita_12m=per_capita,
        onset=onset,
        identified=identified,
        eliminated=eliminated,
        assist_started=assist_started,
        assist_started_program=started_program,
        assist_started_amount=started_amount,
        assist_ended=ended,
        assist_ended_program=ended_program,
        assist_ended_start=ended_start,
        assist_ended_amount=ended_amount,
    )


def _school_year_transitions(
    p: Persons,
    age: np.ndarray,
    alive: np.ndarray,
    frag_p: np.ndarray,
    rng: np.random.Generator,
    params: WorldParams,
    changed: np.ndarray,
) -> None:
    """September: children move up a stage, some leave school."""
    n_p = len(p.hh)
    in_school = alive & (p.school_status == ENROLLED) & (p.school_stage >= 0)
    roll = rng.random(n_p)
    start_pre = alive & (age == 3) & (p.school_stage < 0)
    p.school_stage[start_pre] = PRESCHOOL
    p.school_status[start_pre] = ENROLLED
    to_primary = (
        alive & (age == 6) & (p.school_stage <= PRESCHOOL) & (p.school_status != DROPPED_OUT)
    )
    p.school_stage[to_primary] = PRIMARY
    p.school_status[to_primary] = ENROLLED
    to_junior = in_school & (p.school_stage == PRIMARY) & (age >= 12)
    p.school_stage[to_junior] = JUNIOR
    leaving_junior = in_school & (p.school_stage == JUNIOR) & (age >= 15)
    senior_p = params.senior_secondary_entry * np.exp(-0.25 * frag_p.clip(0, None))
    to_senior = leaving_junior & (roll < senior_p)
    to_vocational = leaving_junior & ~to_senior & (roll < senior_p + params.vocational_entry)
    p.school_stage[to_senior] = SENIOR
    p.school_stage[to_vocational] = VOCATIONAL
    finishing = (
        (leaving_junior & ~to_senior & ~to_vocational)
        | (in_school & np.isin(p.school_stage, [SENIOR, VOCATIONAL]) & (age >= 18))
        | (in_school & (p.school_stage == HIGHER) & (age >= 22))
    )
    to_higher = (
        finishing
        & (p.school_stage == SENIOR)
        & (rng.random(n_p) < params.higher_entry * np.exp(-0.2 * frag_p.clip(0, None)))
    )
    p.school_stage[to_higher] = HIGHER
    graduating = finishing & ~to_higher
    p.school_status[graduating] = GRADUATED
    changed |= graduating


def _detect_and_assist(
    state: State,
    month: int,
    rng: np.random.Generator,
    params: WorldParams,
    line: float,
    per_capita: np.ndarray,
    hh_oop: np.ndarray,
    members: np.ndarray,
    labor: np.ndarray,
    school_changed: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Detection (self-report, visits, department warnings), identification, assistance."""
    v, h, p = state.villages, state.households, state.persons
    n, n_p = len(h.village), len(p.hh)
    cal = timeutil.calendar_month(month)
    remote = v.remoteness[h.village]

    # identification of households detected earlier
    due = h.pending_months == 0
    h.pending_months[h.pending_months > 0] -= 1
    identify = due & ~h.monitored & (members > 0)
    h.pending_months[due] = -1

    eligible = ~h.monitored & ~h.tekun & (members > 0) & (h.pending_months < 0) & ~due
    visibility = np.where(h.hidden, params.hidden_detection_factor, 1.0)
    recent_shock = (
        month - h.cause_month[:, [RISK_ILLNESS, RISK_ACCIDENT, RISK_DISASTER, RISK_EMPLOYMENT]]
    ).min(axis=1) <= 2
    income_check_now = ((cal == 3) & (h.income_checked | h.monitored)) | (
        (cal == 8) & h.former_poor
    )
    dropout_now = np.bincount(p.hh, school_changed & (p.school_status == DROPPED_OUT), n) > 0
    warning = (
        ((hh_oop >= params.warning_oop_threshold) & _chance(rng, params.warning_oop_detect, n))
        | (
            income_check_now
            & (per_capita < line)
            & _chance(rng, params.warning_income_check_detect, n)
        )
        | (dropout_now & _chance(rng, 0.6, n))
    )
    visited = (month % v.visit_interval[h.village]) == v.visit_phase[h.village]
    visit = visited & _chance(rng, params.visit_detect * (1 - 0.5 * remote), n)
    self_report = _chance(rng, params.self_report * (1 + 1.5 * recent_shock), n)
    found = h.hardship & eligible & (rng.random(n) < visibility) & (warning | visit | self_report)
    near_line = per_capita < 1.4 * line
    false_alarm = (
        ~h.hardship
        & eligible
        & _chance(
            rng,
            params.false_alarm
            * np.where(near_line | recent_shock, params.false_alarm_near_line_factor, 1.0),
            n,
        )
    )
    source = np.where(warning, DETECT_WARNING, np.where(visit, DETECT_VISIT, DETECT_SELF))
    source = np.where(false_alarm, np.where(visited, DETECT_VISIT, DETECT_SELF), source)
    detected = found | false_alarm
    delay = rng.integers(0, params.identification_delay_max_months + 1, n) + (
        source == DETECT_WARNING
    )
    h.pending_months[detected] = delay[detected]
    h.pending_source[detected] = source[detected]
    identify |= detected & (delay == 0)
    h.pending_months[detected & (delay == 0)] = -1

    # risk types: recent shocks plus the household's standing conditions (identified only)
    who = np.flatnonzero(identify)
    alive = (p.status == LIVING) & identify[p.hh]
    cause = h.cause_month[who]
    bits = ((month - cause) <= 12) & (cause != NULL)
    bits[:, RISK_ILLNESS] |= (np.bincount(p.hh, alive & (p.chronic == 2), n) > 0)[who]
    severe = alive & (p.disability_grade > 0) & (p.disability_grade <= 2)
    bits[:, RISK_DISABILITY] |= (np.bincount(p.hh, severe, n) > 0)[who]
    bits[:, RISK_LABOR] |= labor[who] == 0
    bits[:, RISK_HOUSING] |= grade_of(h.house_score[who]) == 3
    bits[:, RISK_OTHER] |= ~bits.any(axis=1)
    sudden = (month - cause[:, [RISK_ILLNESS, RISK_ACCIDENT, RISK_DISASTER]]).min(axis=1) <= 3

    h.monitored[who] = True
    h.monitored_since[who] = month
    h.category[who] = np.where(h.former_poor[who], 0, np.where(sudden, 2, 1))
    h.risk_bits[who] = (bits * (1 << np.arange(N_RISKS))).sum(axis=1)
    h.source[who] = np.where(h.pending_source[who] < 0, DETECT_SELF, h.pending_source[who])

    # assistance and a public-welfare post follow identification
    helped = (h.assist_program[who] < 0) & ~_chance(rng, params.assistance_none_share, len(who))
    deep = per_capita[who] < 0.6 * line
    rigid_heavy = h.rigid_hist[who].sum(axis=1) > 0.3 * np.maximum(
        h.income_hist[who].sum(axis=1), 1
    )
    program = np.where(
        sudden & ~deep, TEMPORARY, np.where(deep, DIBAO, np.where(rigid_heavy, RIGID, MARGINAL))
    ).astype(np.int8)
    amount = np.select(
        [program == DIBAO, program == MARGINAL, program == RIGID, program == TEMPORARY],
        [
            params.dibao_per_person_month * members[who],
            params.marginal_per_person_month * members[who],
            np.full(len(who), params.rigid_support_month),
            params.temporary_one_off_median * np.exp(rng.normal(0, 0.4, len(who))),
        ],
        0.0,
    )
    gets_help = who[helped]
    program, amount = program[helped], amount[helped]
    h.assist_program[gets_help] = program
    h.assist_amount[gets_help] = np.round(amount, 0)
    h.assist_start[gets_help] = month + rng.integers(1, 3, len(gets_help))
    h.assist_end_due[gets_help] = NULL
    offer = identify & _chance(rng, params.public_welfare_post_offer, n)
    jobless = (p.status == LIVING) & ~p.employed & (p.work != NO_WORK) & offer[p.hh]
    first_jobless = np.zeros(n_p, dtype=bool)
    idx = np.flatnonzero(jobless)
    if len(idx):
        _, first = np.unique(p.hh[idx], return_index=True)
        first_jobless[idx[first]] = True
    p.work[first_jobless] = WELFARE_POST
    p.employed[first_jobless] = True

    # risk elimination after a stable spell; assistance winds down a little later
    eliminate = (
        h.monitored
        & ~identify
        & ((month - h.monitored_since) >= params.elimination_min_months)
        & (h.stable_months >= 3)
        & _chance(rng, params.elimination_per_month, n)
    )
    eliminate |= h.monitored & ~identify & (members == 0)
    h.monitored[eliminate] = False
    winding = (
        eliminate
        & (h.assist_program >= 0)
        & (h.assist_program != TEKUN)
        & (h.assist_program != TEMPORARY)
    )
    h.assist_end_due[winding] = np.maximum(
        month + rng.integers(0, 4, int(winding.sum())), h.assist_start[winding]
    )
    return identify, eliminate
