"""One month of latent life in the province: `step(state, month, rng, ...)`.

Vectorised over persons and households. `step` mutates the state and returns a
`MonthOutcome` with what happened this month (the raw material of records).
The oracle calls the very same `step` on tiled copies of the state.

Each process of the month has a function of its own, and `step` calls them in the
month's order. The order is part of the output: every process draws from the one
random stream, so moving a draw changes every draw after it (same seed, same bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from doudi import contract
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
    Counties,
    Households,
    Persons,
    State,
)
from province.world import grade_of

# share of a year's farm income earned in each calendar month (harvest-heavy)
FARM_SEASON = np.array([0, 0, 0, 0, 0.03, 0.07, 0.2, 0.25, 0.25, 0.15, 0.05, 0])
# weight of each hazard among a county's disasters, January to December. Droughts are not
# drawn here: a drought year shows up as the summer drought reports (`_disasters`).
HAZARD_SEASON: dict[str, tuple[float, ...]] = {
    "flood": (0, 0, 0, 0.05, 0.15, 0.3, 0.45, 0.45, 0.35, 0.1, 0, 0),
    "drought": (0,) * 12,
    "hail": (0, 0, 0, 0.1, 0.35, 0.35, 0.25, 0.25, 0.2, 0.1, 0, 0),
    "frost": (0.3, 0.4, 0.6, 0.55, 0.2, 0, 0, 0, 0.1, 0.5, 0.5, 0.3),
    "landslide": (0, 0, 0.1, 0.1, 0.15, 0.25, 0.25, 0.25, 0.25, 0.1, 0.05, 0),
    "earthquake": (0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.03, 0.03, 0.05, 0.1, 0.1, 0.1),
    "fire": (0.4, 0.3, 0.1, 0.05, 0.05, 0, 0, 0, 0, 0.05, 0.2, 0.4),
    "other": (0.2, 0.2, 0.1, 0.05, 0.05, 0.05, 0.02, 0.02, 0.05, 0.05, 0.15, 0.2),
}
# rows: calendar months; columns: hazards in the contract's code order
HAZARD_BY_MONTH = np.array([HAZARD_SEASON[hazard] for hazard in contract.HAZARD]).T.copy()
DROUGHT = list(contract.HAZARD).index("drought")
DETECT_SELF, DETECT_VISIT, DETECT_WARNING = 0, 1, 2  # contract DETECTION_SOURCE order


# --- the outcome of a month, process by process ---------------------------------------------
@dataclass(frozen=True)
class Care:
    """This month's medical care per person and what it cost."""

    accident: np.ndarray
    outpatient: np.ndarray  # visits
    inpatient_days: np.ndarray
    total_cost: np.ndarray
    reimbursed: np.ndarray
    out_of_pocket: np.ndarray


@dataclass(frozen=True)
class Schooling:
    """This month's school changes and term fees per person (fees in term months only)."""

    changed: np.ndarray  # dropped out or graduated
    tuition: np.ndarray
    aid: np.ndarray
    cost: np.ndarray  # tuition net of aid for those still enrolled: rigid expenditure


@dataclass(frozen=True)
class Disasters:
    """Disasters that hit households this month."""

    hit: np.ndarray
    hazard: np.ndarray  # contract HAZARD position, -1 none
    day: np.ndarray  # NULL where not hit
    loss: np.ndarray
    damage: np.ndarray  # house damage 0 none .. 3 collapsed


@dataclass(frozen=True)
class Assessments:
    """House safety assessments this month."""

    assessed: np.ndarray
    day: np.ndarray
    renovation_funded: np.ndarray


@dataclass(frozen=True)
class Income:
    """A household's income this month by component, and who earns and lives on it."""

    wage: np.ndarray
    operating: np.ndarray
    property_income: np.ndarray
    transfer: np.ndarray
    members: np.ndarray  # living members
    labor: np.ndarray  # working-age members able to work

    @property
    def net(self) -> np.ndarray:
        return self.wage + self.operating + self.property_income + self.transfer


@dataclass(frozen=True)
class RigidExpenditure:
    """Spending a household cannot avoid this month."""

    out_of_pocket: np.ndarray  # medical bills after reimbursement
    education: np.ndarray  # tuition net of aid
    water_problem: np.ndarray  # the water supply failed (a repair to pay)

    @property
    def total(self) -> np.ndarray:
        return self.out_of_pocket + self.education + 400.0 * self.water_problem


@dataclass(frozen=True)
class SpellsStarted:
    """Assistance spells starting this month, as they stood before same-month closes."""

    households: np.ndarray  # mask: a spell starts this month
    program: np.ndarray
    amount: np.ndarray


@dataclass(frozen=True)
class SpellsEnded:
    """Assistance spells that ended this month, as they stood before closing."""

    households: np.ndarray  # mask: a spell ended this month
    program: np.ndarray
    amount: np.ndarray


@dataclass(frozen=True)
class MonthOutcome:
    """What happened in one month (persons: P arrays; households: N arrays)."""

    month: int
    died: np.ndarray
    moved_out: np.ndarray
    job_lost: np.ndarray
    care: Care
    certified: np.ndarray  # a disability certificate issued this month
    school: Schooling
    disasters: Disasters
    assessments: Assessments
    income: Income
    rigid: RigidExpenditure
    per_capita_12m: np.ndarray  # rolling 12 months, after rigid expenditure
    onset: np.ndarray  # hardship began this month
    identified: np.ndarray
    eliminated: np.ndarray
    started: SpellsStarted
    ended: SpellsEnded


# --- what every process of the month uses ---------------------------------------------------
def cost_of(chronic: np.ndarray, params: WorldParams) -> np.ndarray:
    """Median cost of a hospital stay by chronic-illness level."""
    return np.where(chronic == 2, params.hospital_cost_median_serious, params.hospital_cost_median)


def _chance(rng: np.random.Generator, p: np.ndarray | float, n: int) -> np.ndarray:
    # float32 draws: twice as fast, and monthly rates need no finer resolution
    return rng.random(n, dtype=np.float32) < p


@dataclass(frozen=True)
class _Month:
    """The month being lived: its number, calendar month (1..12) and days."""

    number: int
    calendar: int
    first_day: int
    days: int

    @classmethod
    def of(cls, month: int) -> _Month:
        first = int(timeutil.first_day(month))
        days = int(timeutil.last_day(month)) - first + 1
        return cls(month, timeutil.calendar_month(month), first, days)

    def random_days(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` days drawn uniformly inside the month."""
        return self.first_day + rng.integers(0, self.days, n)


@dataclass(frozen=True)
class _People:
    """Per-person facts that hold for the rest of the month once deaths and moves are done."""

    age: np.ndarray  # whole years
    fragility: np.ndarray  # the household's latent fragility
    alive: np.ndarray  # living in the household
    student: np.ndarray  # enrolled as the month began (before this month's term changes)


# --- the month ------------------------------------------------------------------------------
def step(
    state: State,
    month: int,
    rng: np.random.Generator,
    params: WorldParams,
    monitoring_line: float,
    detection: bool = True,
) -> MonthOutcome:
    """Advance the province by one month (mutates `state`)."""
    h, p = state.households, state.persons
    when = _Month.of(month)
    closure = _county_shocks(state.counties, when, rng, params)
    age = (month - p.birth_month) // 12
    died, moved_out = _deaths_and_departures(p, age, when, rng, params)
    people = _People(
        age=age,
        fragility=h.fragility[p.hh],
        alive=p.status == LIVING,
        student=(p.school_stage >= 0) & (p.school_status == ENROLLED),
    )
    _retirement_and_new_workers(p, people, rng, params)
    job_lost = _job_loss_and_reemployment(state, people, closure, rng, params)
    worsened = _chronic_illness(p, people, rng, params)
    care = _medical_care(state, people, rng, params)
    disabled, certified = _disability(p, people, month, care.accident, rng, params)
    if when.calendar == 1:
        _insurance_enrolment(p, people, rng, params)
    school = _education(state, people, when, rng, params)
    disasters = _disasters(state, when, rng, params)
    assessments = _housing(h, when, disasters, rng, params)
    income = _income(state, people, when, disasters.loss, params)
    rigid = _rigid_expenditure(state, people, care, school, rng)
    per_capita = _twelve_month_per_capita(h, month, income, rigid)
    _record_causes(state, when, job_lost, worsened, care, disabled, disasters, rigid)
    onset = _update_hardship(state, people, per_capita, income.members, monitoring_line)
    identified = np.zeros(len(h.village), dtype=bool)
    eliminated = np.zeros(len(h.village), dtype=bool)
    if detection:
        response = _Response(state, when, monitoring_line, rng, params)
        identified = response.identify(per_capita, income, rigid, school)
        response.start_monitoring(identified, income.labor)
        response.start_assistance(identified, per_capita, income.members)
        response.offer_welfare_posts(identified)
        eliminated = response.eliminate(identified, income.members)
    started = _spells_started(h, month)
    ended = _close_spells(h, month, income.members)

    return MonthOutcome(
        month=month,
        died=died,
        moved_out=moved_out,
        job_lost=job_lost,
        care=care,
        certified=certified,
        school=school,
        disasters=disasters,
        assessments=assessments,
        income=income,
        rigid=rigid,
        per_capita_12m=per_capita,
        onset=onset,
        identified=identified,
        eliminated=eliminated,
        started=started,
        ended=ended,
    )


# --- county shocks, deaths, work ------------------------------------------------------------
def _county_shocks(
    c: Counties, when: _Month, rng: np.random.Generator, params: WorldParams
) -> np.ndarray:
    """A drought year drawn each January; this month's employer closures (per county)."""
    if when.calendar == 1:
        c.drought_year[:] = _chance(rng, params.drought_year_per_county, len(c.proneness))
    return _chance(rng, params.employer_closure_per_county_month, len(c.proneness))


def _deaths_and_departures(
    p: Persons, age: np.ndarray, when: _Month, rng: np.random.Generator, params: WorldParams
) -> tuple[np.ndarray, np.ndarray]:
    """Deaths (Gompertz hazard) and young adults moving away: (died, moved out)."""
    n_p = len(p.hh)
    alive = p.status == LIVING
    yearly = np.exp(params.mortality_gompertz_a + params.mortality_gompertz_b * age)
    yearly *= 1 + 2.5 * (p.chronic == 2) + 0.5 * p.severely_disabled()
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
    p.status_day[changed] = when.random_days(rng, int(changed.sum()))
    p.employed[changed] = False
    return died, leave


def _retirement_and_new_workers(
    p: Persons, people: _People, rng: np.random.Generator, params: WorldParams
) -> None:
    """Wage workers retire at 65; some adults under 50 without work find a job."""
    age, alive = people.age, people.alive
    retire = alive & (age >= 65) & np.isin(p.work, [LOCAL, MIGRANT, SEASONAL])
    p.work[retire] = NO_WORK
    p.employed[retire] = False
    can_start = (
        alive
        & (p.work == NO_WORK)
        & ~people.student
        & (age >= 16)
        & (age < 50)
        & ~p.severely_disabled()
    )
    start = can_start & _chance(rng, 0.015, len(p.hh))
    p.work[start] = np.where(rng.random(int(start.sum())) < 0.6, MIGRANT, LOCAL)
    p.wage[start] = np.where(
        p.work[start] == MIGRANT, params.wage_migrant, params.wage_local
    ) * np.exp(
        rng.normal(0, params.wage_sigma, int(start.sum()))
        - params.fragility_wage_effect * people.fragility[start]
    )
    p.employed[start] = True


def _job_loss_and_reemployment(
    state: State,
    people: _People,
    closure: np.ndarray,
    rng: np.random.Generator,
    params: WorldParams,
) -> np.ndarray:
    """Jobs lost (all local jobs at risk where an employer closed) and found again; the
    jobs lost this month."""
    p = state.persons
    age, alive, frag_p = people.age, people.alive, people.fragility
    n_p = len(p.hh)
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
    closed_here = closure[state.households.county[p.hh]] & (p.work == LOCAL)
    loss_p = np.where(closed_here, params.employer_closure_job_loss, loss_p)
    job_lost = alive & p.employed & _chance(rng, loss_p, n_p)
    p.employed[job_lost] = False
    rehire_p = params.reemployment * np.exp(-0.35 * frag_p) * np.where(age < 50, 1.0, 0.6)
    rehired = alive & ~p.employed & (p.work != NO_WORK) & ~job_lost & _chance(rng, rehire_p, n_p)
    p.employed[rehired] = True
    return job_lost


# --- health ---------------------------------------------------------------------------------
def _chronic_illness(
    p: Persons, people: _People, rng: np.random.Generator, params: WorldParams
) -> np.ndarray:
    """Chronic illness begins (more often with age) or turns serious; those it turned."""
    alive, n_p = people.alive, len(p.hh)
    onset_year = params.chronic_onset_base_year + params.chronic_onset_per_year_over_30 * np.clip(
        people.age - 30, 0, None
    )
    new_chronic = (
        alive
        & (p.chronic == 0)
        & _chance(rng, onset_year * np.exp(0.2 * people.fragility) / 12, n_p)
    )
    p.chronic[new_chronic] = 1
    p.illness_code[new_chronic] = rng.integers(0, 8, int(new_chronic.sum()))
    worse = alive & (p.chronic == 1) & _chance(rng, params.chronic_to_serious_year / 12, n_p)
    p.chronic[worse] = 2
    return worse


def _medical_care(
    state: State, people: _People, rng: np.random.Generator, params: WorldParams
) -> Care:
    """Hospital stays, accidents and outpatient visits, their costs and reimbursement."""
    h, p = state.households, state.persons
    age, alive, n_p = people.age, people.alive, len(p.hh)
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
    p.employed[accident & _chance(rng, 0.5, n_p)] = False  # recovering, off work a while
    return Care(
        accident=accident,
        outpatient=visits,
        inpatient_days=days,
        total_cost=total,
        reimbursed=reimbursed,
        out_of_pocket=total - reimbursed,
    )


def _disability(
    p: Persons,
    people: _People,
    month: int,
    accident: np.ndarray,
    rng: np.random.Generator,
    params: WorldParams,
) -> tuple[np.ndarray, np.ndarray]:
    """Disability after an accident or serious illness, certified months later.

    Returns (disabled this month, certificate issued this month).
    """
    n_p = len(p.hh)
    disabled_now = (
        people.alive
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
    certified = people.alive & (p.certify_month == month)
    p.certify_month[certified] = NULL
    return disabled_now, certified


def _insurance_enrolment(
    p: Persons, people: _People, rng: np.random.Generator, params: WorldParams
) -> None:
    """January's annual enrolment: some lapse (more in fragile households), most re-enrol."""
    p.insured[:] = rng.random(len(p.hh)) > params.uninsured_share * np.exp(0.5 * people.fragility)


# --- education (terms start in March and September) -----------------------------------------
def _education(
    state: State, people: _People, when: _Month, rng: np.random.Generator, params: WorldParams
) -> Schooling:
    """September's stage moves; each term's dropouts, tuition and aid."""
    p = state.persons
    n_p = len(p.hh)
    changed = np.zeros(n_p, dtype=bool)
    cost, tuition, aid = np.zeros(n_p), np.zeros(n_p), np.zeros(n_p)
    if when.calendar == 9:
        changed |= _school_year_transitions(p, people, rng, params)
    if when.calendar in (3, 9):
        enrolled = people.alive & (p.school_status == ENROLLED) & (p.school_stage >= 0)
        drop = _term_dropouts(state, people, enrolled, rng, params)
        changed |= drop
        tuition, aid = _term_fees(state, rng, params)
        cost = np.where(enrolled & ~drop, np.clip(tuition - aid, 0, None), 0.0)
    return Schooling(changed=changed, tuition=tuition, aid=aid, cost=cost)


def _school_year_transitions(
    p: Persons, people: _People, rng: np.random.Generator, params: WorldParams
) -> np.ndarray:
    """September: children move up a stage, some leave school; returns who graduated."""
    age, alive, frag_p = people.age, people.alive, people.fragility
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
    return graduating


def _term_dropouts(
    state: State,
    people: _People,
    enrolled: np.ndarray,
    rng: np.random.Generator,
    params: WorldParams,
) -> np.ndarray:
    """Pupils who leave school this term (more often in hardship); marked dropped out."""
    p = state.persons
    compulsory = (p.school_stage == PRIMARY) | (p.school_stage == JUNIOR)
    drop_p = np.where(
        compulsory, params.compulsory_dropout_per_term, 0.01 * np.exp(0.3 * people.fragility)
    ) * (1 + 4 * state.households.hardship[p.hh])
    drop = enrolled & (p.school_stage != PRESCHOOL) & _chance(rng, drop_p, len(p.hh))
    p.school_status[drop] = DROPPED_OUT
    return drop


def _term_fees(
    state: State, rng: np.random.Generator, params: WorldParams
) -> tuple[np.ndarray, np.ndarray]:
    """This term's tuition by stage, and the aid poor (and some other) pupils get."""
    h, p = state.households, state.persons
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
    aided = (h.former_poor | h.monitored)[p.hh] | _chance(rng, 0.25, len(p.hh))
    aid = np.where(
        aided,
        np.select(
            [p.school_stage == SENIOR, p.school_stage == HIGHER, p.school_stage == VOCATIONAL],
            [params.aid_senior_term, params.aid_higher_term, 1000.0],
            0.0,
        ),
        0.0,
    )
    return tuition, aid


# --- households: disasters and housing ------------------------------------------------------
def _disasters(
    state: State, when: _Month, rng: np.random.Generator, params: WorldParams
) -> Disasters:
    """County disasters by season and proneness, the households they hit, losses and damage."""
    c, v, h = state.counties, state.villages, state.households
    n, n_counties = len(h.village), len(c.proneness)
    hazard = np.full(n, -1, dtype=np.int8)
    loss = np.zeros(n)
    damage = np.zeros(n, dtype=np.int8)
    county_hit = _chance(rng, params.disaster_per_county_month * c.proneness, n_counties)
    county_hazard = (
        (rng.random(n_counties)[:, None] > np.cumsum(HAZARD_BY_MONTH[when.calendar - 1])[None, :])
        .sum(axis=1)
        .clip(0, 7)
    )
    remote = v.remoteness[h.village]
    hit = county_hit[h.county] & _chance(rng, params.disaster_household_hit * (0.5 + remote), n)
    hazard[hit] = county_hazard[h.county[hit]]
    if when.calendar == 7:  # drought years show up as summer drought reports
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
    day = np.where(hit, when.random_days(rng, n), NULL)
    return Disasters(hit=hit, hazard=hazard, day=day, loss=loss, damage=damage)


def _housing(
    h: Households,
    when: _Month,
    disasters: Disasters,
    rng: np.random.Generator,
    params: WorldParams,
) -> Assessments:
    """Houses decay and take damage; renovations complete; reassessments; new funding."""
    damage = disasters.damage
    h.house_score = np.clip(
        h.house_score
        - params.house_decay_year / 12 * (1 + 0.3 * h.fragility.clip(0, None))
        - np.select([damage == 1, damage == 2, damage == 3], [0.08, 0.3, 1.0], 0.0),
        0.03,
        1.0,
    )
    n = len(h.village)
    renovated = h.renovation_due == when.number
    h.house_score[renovated] = 0.95
    h.renovation_due[renovated] = NULL
    assessed = renovated | (damage >= 2) | _chance(rng, params.house_reassessment_year / 12, n)
    assessed_day = np.where(assessed, when.random_days(rng, n), NULL)
    # after severe damage the assessment comes on or after the disaster, inside the month
    assessed_day = np.where(damage >= 2, np.maximum(assessed_day, disasters.day), assessed_day)
    assessed_day = np.minimum(assessed_day, when.first_day + when.days - 1)
    h.house_grade[assessed] = grade_of(h.house_score[assessed])
    funded = (
        assessed
        & (h.house_grade == 3)
        & (h.monitored | h.former_poor | h.hardship)
        & _chance(rng, 0.7, n)
        & (h.renovation_due == NULL)
    )
    h.renovation_due[funded] = when.number + rng.integers(4, 11, int(funded.sum()))
    return Assessments(assessed=assessed, day=assessed_day, renovation_funded=funded)


# --- income, rigid expenditure, hardship ----------------------------------------------------
def _income(
    state: State, people: _People, when: _Month, disaster_loss: np.ndarray, params: WorldParams
) -> Income:
    """Wages, operating income, property income and transfers per household this month."""
    h, p = state.households, state.persons
    n = len(h.village)
    members = np.bincount(p.hh, people.alive, n)
    working_age_alive = (
        people.alive
        & (people.age >= 16)
        & (people.age <= 64)
        & ~people.student
        & ~p.severely_disabled()
    )
    labor = np.bincount(p.hh, working_age_alive, n)
    rent = params.property_income_monthly_mean * (0.5 + 1.5 * h.relocated) * (members > 0)
    return Income(
        wage=_wages(p, people, when, params, n),
        operating=_operating_income(state, people, when, labor, disaster_loss, params),
        property_income=rent,
        transfer=_transfers(state, people, when.number, members, params),
        members=members,
        labor=labor,
    )


def _wages(p: Persons, people: _People, when: _Month, params: WorldParams, n: int) -> np.ndarray:
    """Wages of employed members (seasonal work pays March to November)."""
    in_season = 3 <= when.calendar <= 11
    wage_person = np.where(
        people.alive & p.employed,
        np.select(
            [p.work == LOCAL, p.work == MIGRANT, p.work == SEASONAL, p.work == WELFARE_POST],
            [p.wage, p.wage * 0.85, p.wage * in_season, params.wage_public_welfare_post],
            0.0,
        ),
        0.0,
    )
    return np.bincount(p.hh, wage_person, n)


def _operating_income(
    state: State,
    people: _People,
    when: _Month,
    labor: np.ndarray,
    disaster_loss: np.ndarray,
    params: WorldParams,
) -> np.ndarray:
    """Harvest-heavy farm income, livestock and business, less half the disaster loss."""
    c, h, p = state.counties, state.households, state.persons
    business = np.where(people.alive & p.employed & (p.work == SELF_EMPLOYED), p.wage, 0.0)
    farm = h.land_mu * params.farm_income_per_mu_year * FARM_SEASON[when.calendar - 1]
    farm *= np.where(c.drought_year[h.county], 1 - params.drought_farm_loss, 1.0)
    farm *= np.where(labor > 0, 1.0, 0.35)
    return (
        farm
        + h.livestock * params.livestock_income_per_unit_year / 12
        + np.bincount(p.hh, business, len(h.village))
        - 0.5 * disaster_loss
    )


def _transfers(
    state: State, people: _People, month: int, members: np.ndarray, params: WorldParams
) -> np.ndarray:
    """Pensions, farm and former-poor subsidies, disability subsidies and assistance paid."""
    h, p = state.households, state.persons
    n = len(h.village)
    pensions = np.bincount(p.hh, people.alive & (people.age >= 60), n) * params.pension_monthly
    disability_support = np.bincount(
        p.hh,
        (people.alive & p.severely_disabled())
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
    return (
        pensions
        + h.land_mu * params.farm_subsidy_per_mu_year / 12
        + h.former_poor * params.former_poor_subsidy_monthly
        + disability_support
        + assistance
    ) * (members > 0)


def _rigid_expenditure(
    state: State,
    people: _People,
    care: Care,
    school: Schooling,
    rng: np.random.Generator,
) -> RigidExpenditure:
    """Medical bills after reimbursement, net tuition, and (in remote villages) water repairs."""
    v, h, p = state.villages, state.households, state.persons
    n = len(h.village)
    water_problem = (v.remoteness[h.village] > 0.6) & _chance(rng, 0.0004, n)
    return RigidExpenditure(
        out_of_pocket=np.bincount(p.hh, np.where(people.alive, care.out_of_pocket, 0.0), n),
        education=np.bincount(p.hh, school.cost, n),
        water_problem=water_problem,
    )


def _twelve_month_per_capita(
    h: Households, month: int, income: Income, rigid: RigidExpenditure
) -> np.ndarray:
    """This month into the 12-month ring buffers; per-capita net income after rigid spending."""
    slot = month % 12
    h.income_hist[:, slot] = income.net
    h.rigid_hist[:, slot] = rigid.total
    return (h.income_hist.sum(axis=1) - h.rigid_hist.sum(axis=1)) / np.maximum(income.members, 1)


def _record_causes(
    state: State,
    when: _Month,
    job_lost: np.ndarray,
    worsened: np.ndarray,
    care: Care,
    disabled: np.ndarray,
    disasters: Disasters,
    rigid: RigidExpenditure,
) -> None:
    """The month of each household's latest shock, per risk type (`cause_month`)."""
    c, h, p = state.counties, state.households, state.persons
    n = len(h.village)
    cause_now = np.zeros((n, N_RISKS), dtype=bool)
    cause_now[:, RISK_ILLNESS] = (rigid.out_of_pocket > 3000) | (np.bincount(p.hh, worsened, n) > 0)
    cause_now[:, RISK_ACCIDENT] = np.bincount(p.hh, care.accident, n) > 0
    cause_now[:, RISK_DISABILITY] = np.bincount(p.hh, disabled, n) > 0
    severe_disaster = (disasters.loss > 2000) | (disasters.damage >= 2)
    cause_now[:, RISK_DISASTER] = disasters.hit & severe_disaster
    cause_now[:, RISK_EMPLOYMENT] = np.bincount(p.hh, job_lost & (p.work != SELF_EMPLOYED), n) > 0
    cause_now[:, RISK_INDUSTRY] = (
        np.bincount(p.hh, job_lost & (p.work == SELF_EMPLOYED), n) > 0
    ) | ((when.calendar == 9) & c.drought_year[h.county] & (h.land_mu > 8))
    cause_now[:, RISK_EDUCATION] = rigid.education > 1500
    cause_now[:, RISK_HOUSING] = disasters.damage >= 2
    cause_now[:, RISK_WATER] = rigid.water_problem
    h.cause_month[cause_now] = when.number


def _update_hardship(
    state: State, people: _People, per_capita: np.ndarray, members: np.ndarray, line: float
) -> np.ndarray:
    """True hardship: income below the line or a guarantee failure; returns this month's onsets."""
    h, p = state.households, state.persons
    n = len(h.village)
    compulsory_age = people.alive & (people.age >= 6) & (people.age <= 15)
    guarantee_failure = (
        (np.bincount(p.hh, compulsory_age & (p.school_status == DROPPED_OUT), n) > 0)
        | (np.bincount(p.hh, people.alive & ~p.insured, n) > 0)
        | (grade_of(h.house_score) == 3)
    )
    was_hardship = h.hardship.copy()
    h.hardship = (members > 0) & ((per_capita < line) | guarantee_failure)
    h.stable_months = np.where(h.hardship, 0, h.stable_months + 1).astype(np.int16)
    return h.hardship & ~was_hardship


# --- detection, identification, assistance, elimination -------------------------------------
@dataclass(frozen=True)
class _Response:
    """The administration's side of the month: who is detected and identified, what help
    follows, whose risk is eliminated."""

    state: State
    when: _Month
    line: float  # the monitoring line of the year
    rng: np.random.Generator
    params: WorldParams

    def identify(
        self, per_capita: np.ndarray, income: Income, rigid: RigidExpenditure, school: Schooling
    ) -> np.ndarray:
        """Households identified this month: those detected earlier whose wait is over, and
        new detections identified at once (the others wait `pending_months`)."""
        h = self.state.households
        due = h.pending_months == 0
        h.pending_months[h.pending_months > 0] -= 1
        identify = due & ~h.monitored & (income.members > 0)
        h.pending_months[due] = -1
        return identify | self._detect(due, per_capita, income.members, rigid, school)

    def _detect(
        self,
        due: np.ndarray,
        per_capita: np.ndarray,
        members: np.ndarray,
        rigid: RigidExpenditure,
        school: Schooling,
    ) -> np.ndarray:
        """Self-reports, grassroots visits, department warnings and false alarms.

        Detected households wait 0-1 months (one more after a warning) in `pending_months`;
        returns those identified at once.
        """
        v, h = self.state.villages, self.state.households
        rng, params, line = self.rng, self.params, self.line
        month, n = self.when.number, len(h.village)
        remote = v.remoteness[h.village]
        eligible = ~h.monitored & ~h.tekun & (members > 0) & (h.pending_months < 0) & ~due
        visibility = np.where(h.hidden, params.hidden_detection_factor, 1.0)
        recent_shock = (
            month - h.cause_month[:, [RISK_ILLNESS, RISK_ACCIDENT, RISK_DISASTER, RISK_EMPLOYMENT]]
        ).min(axis=1) <= 2
        warning = self._department_warnings(per_capita, rigid, school)
        visited = (month % v.visit_interval[h.village]) == v.visit_phase[h.village]
        visit = visited & _chance(rng, params.visit_detect * (1 - 0.5 * remote), n)
        self_report = _chance(rng, params.self_report * (1 + 1.5 * recent_shock), n)
        found = (
            h.hardship & eligible & (rng.random(n) < visibility) & (warning | visit | self_report)
        )
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
        at_once = detected & (delay == 0)
        h.pending_months[at_once] = -1
        return at_once

    def _department_warnings(
        self, per_capita: np.ndarray, rigid: RigidExpenditure, school: Schooling
    ) -> np.ndarray:
        """Warnings from other departments: a large out-of-pocket bill, an income check
        below the line (March, August), a recorded dropout."""
        h, p = self.state.households, self.state.persons
        rng, params = self.rng, self.params
        cal, n = self.when.calendar, len(h.village)
        income_check_now = ((cal == 3) & (h.income_checked | h.monitored)) | (
            (cal == 8) & h.former_poor
        )
        dropout_now = np.bincount(p.hh, school.changed & (p.school_status == DROPPED_OUT), n) > 0
        return (
            (
                (rigid.out_of_pocket >= params.warning_oop_threshold)
                & _chance(rng, params.warning_oop_detect, n)
            )
            | (
                income_check_now
                & (per_capita < self.line)
                & _chance(rng, params.warning_income_check_detect, n)
            )
            | (dropout_now & _chance(rng, 0.6, n))
        )

    def _sudden_shock(self, who: np.ndarray) -> np.ndarray:
        """An illness, accident or disaster in the last three months (households `who`)."""
        cause = self.state.households.cause_month[who][
            :, [RISK_ILLNESS, RISK_ACCIDENT, RISK_DISASTER]
        ]
        return (self.when.number - cause).min(axis=1) <= 3

    def start_monitoring(self, identify: np.ndarray, labor: np.ndarray) -> None:
        """Category, risk types and source of the households identified this month.

        Risk types: the shocks of the last 12 months plus the standing conditions (serious
        illness, severe disability, no labour, a D-grade house); `other` when none.
        """
        h, p = self.state.households, self.state.persons
        month, n = self.when.number, len(h.village)
        who = np.flatnonzero(identify)
        alive = (p.status == LIVING) & identify[p.hh]
        cause = h.cause_month[who]
        bits = ((month - cause) <= 12) & (cause != NULL)
        bits[:, RISK_ILLNESS] |= (np.bincount(p.hh, alive & (p.chronic == 2), n) > 0)[who]
        bits[:, RISK_DISABILITY] |= (np.bincount(p.hh, alive & p.severely_disabled(), n) > 0)[who]
        bits[:, RISK_LABOR] |= labor[who] == 0
        bits[:, RISK_HOUSING] |= grade_of(h.house_score[who]) == 3
        bits[:, RISK_OTHER] |= ~bits.any(axis=1)

        h.monitored[who] = True
        h.monitored_since[who] = month
        h.category[who] = np.where(h.former_poor[who], 0, np.where(self._sudden_shock(who), 2, 1))
        h.risk_bits[who] = (bits * (1 << np.arange(N_RISKS))).sum(axis=1)
        h.source[who] = np.where(h.pending_source[who] < 0, DETECT_SELF, h.pending_source[who])

    def start_assistance(
        self, identify: np.ndarray, per_capita: np.ndarray, members: np.ndarray
    ) -> None:
        """A programme for most identified households, starting 1-2 months later.

        Dibao for deep shortfalls, a one-off temporary payment after a sudden shock,
        rigid-expenditure support, else dibao-marginal.
        """
        h, rng, params = self.state.households, self.rng, self.params
        month = self.when.number
        who = np.flatnonzero(identify)
        sudden = self._sudden_shock(who)
        helped = (h.assist_program[who] < 0) & ~_chance(rng, params.assistance_none_share, len(who))
        deep = per_capita[who] < 0.6 * self.line
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

    def offer_welfare_posts(self, identify: np.ndarray) -> None:
        """Some identified households get a public-welfare post for their first jobless
        worker."""
        h, p = self.state.households, self.state.persons
        offer = identify & _chance(self.rng, self.params.public_welfare_post_offer, len(h.village))
        jobless = (p.status == LIVING) & ~p.employed & (p.work != NO_WORK) & offer[p.hh]
        first_jobless = np.zeros(len(p.hh), dtype=bool)
        idx = np.flatnonzero(jobless)
        if len(idx):
            _, first = np.unique(p.hh[idx], return_index=True)
            first_jobless[idx[first]] = True
        p.work[first_jobless] = WELFARE_POST
        p.employed[first_jobless] = True

    def eliminate(self, identify: np.ndarray, members: np.ndarray) -> np.ndarray:
        """Risk elimination after a stable spell (or when nobody is left); assistance winds
        down 0-3 months later. Returns the households eliminated."""
        h, rng, params = self.state.households, self.rng, self.params
        month = self.when.number
        eliminate = (
            h.monitored
            & ~identify
            & ((month - h.monitored_since) >= params.elimination_min_months)
            & (h.stable_months >= 3)
            & _chance(rng, params.elimination_per_month, len(h.village))
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
        return eliminate


# --- assistance spells ----------------------------------------------------------------------
def _spells_started(h: Households, month: int) -> SpellsStarted:
    """Spells starting this month (copied before same-month temporary spells close)."""
    started = (h.assist_program >= 0) & (h.assist_start == month)
    return SpellsStarted(
        households=started, program=h.assist_program.copy(), amount=h.assist_amount.copy()
    )


def _close_spells(h: Households, month: int, members: np.ndarray) -> SpellsEnded:
    """Spells due to end this month close: temporary payments at once, tekun with its last
    member; the state keeps no spell, the outcome keeps what ended."""
    lone_tekun_gone = h.tekun & (members == 0) & (h.assist_program == TEKUN)
    h.assist_end_due[lone_tekun_gone] = month
    temporary_done = (h.assist_program == TEMPORARY) & (h.assist_start == month)
    h.assist_end_due[temporary_done] = month
    ended = (h.assist_program >= 0) & (h.assist_end_due == month) & (h.assist_start <= month)
    closed = SpellsEnded(
        households=ended, program=h.assist_program.copy(), amount=h.assist_amount.copy()
    )
    h.assist_program[ended] = -1
    h.assist_start[ended] = NULL
    h.assist_end_due[ended] = NULL
    h.tekun[ended & (closed.program == TEKUN)] = False
    return closed
