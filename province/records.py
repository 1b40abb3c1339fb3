"""From latent events to department records, with each feed's reporting delay.

Rows are kept in an internal, typed form (`Batch`: column name -> numpy array)
until written: identifiers as person/household indexes, enums as contract code
positions, dates as day numbers, months as month numbers, risk types as bit
masks. Every batch carries `reported_date` (a day number) and `_county` (for
outages). `Records.pop_reported(day)` hands over everything reported by `day`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from doudi import contract
from province import timeutil
from province.dynamics import MonthOutcome
from province.identity import plan_renames
from province.params import WorldParams
from province.state import (
    DECEASED,
    ENROLLED,
    LIVING,
    LOCAL,
    MIGRANT,
    MOVED_OUT,
    NO_WORK,
    NULL,
    SEASONAL,
    SELF_EMPLOYED,
    TEKUN,
    TEMPORARY,
    WELFARE_POST,
    State,
)
from province.world import ETHNICITIES, Registry

Batch = dict[str, np.ndarray]

ILLNESS_CODES: tuple[str, ...] = tuple(f"MB{i:02d}" for i in range(1, 9)) + tuple(
    f"DB{i:02d}" for i in range(1, 9)
)
# vocabularies of the STR columns that carry codes
VOCAB: dict[tuple[str, str], tuple[str, ...]] = {
    ("medical", "serious_illness"): ILLNESS_CODES,
    ("persons", "ethnicity"): ETHNICITIES,
}


def enum_codes(feed: str, column: str) -> list[str]:
    spec = contract.feed(feed).column(column)
    assert spec.enum is not None
    return list(spec.enum)


def _code(feed: str, column: str, value: str) -> int:
    return enum_codes(feed, column).index(value)


EMP_EMPLOYED_LOCAL = _code("employment", "status", "employed_local")
EMP_MIGRANT = _code("employment", "status", "migrant")
EMP_SELF = _code("employment", "status", "self_employed")
EMP_UNEMPLOYED = _code("employment", "status", "unemployed")
EMP_WELFARE = _code("employment", "status", "public_welfare_post")
EMP_NILF = _code("employment", "status", "not_in_labor_force")


def concat(batches: list[Batch]) -> Batch:
    if not batches:
        return {}
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def take(batch: Batch, index: np.ndarray) -> Batch:
    return {k: v[index] for k, v in batch.items()}


def size(batch: Batch) -> int:
    return len(batch["reported_date"]) if batch else 0


@dataclass
class Records:
    """Turns each month's outcome into rows and holds them until reported."""

    registry: Registry
    params: WorldParams
    rng: np.random.Generator
    roster_day: int
    pending: dict[str, list[Batch]] = field(default_factory=dict)
    spell_start_day: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    components: np.ndarray = field(default_factory=lambda: np.zeros((0, 12, 5)))
    ident_day: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    division_name: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def _add(self, feed: str, batch: Batch) -> None:
        if size(batch):
            self.pending.setdefault(feed, []).append(batch)

    def _county_of_hh(self, state: State, hh: np.ndarray) -> np.ndarray:
        return state.households.county[hh].astype(np.int32)

    def _county_of_person(self, state: State, person: np.ndarray) -> np.ndarray:
        return state.households.county[state.persons.hh[person]].astype(np.int32)

    def _lag(self, base: np.ndarray, low: int, high: int) -> np.ndarray:
        return np.asarray(base, dtype=np.int64) + self.rng.integers(low, high + 1, len(base))

    def _days_in(self, start: int, end: int, n: int) -> np.ndarray:
        """`n` days drawn uniformly from `start` to `end` (day numbers, both included)."""
        return self.rng.integers(start, end + 1, n)

    # --- one builder per feed that is written from more than one place ------------------
    def _household_rows(
        self, state: State, hh: np.ndarray, relocated: np.ndarray, reported: np.ndarray
    ) -> Batch:
        """Roster rows of households `hh` (`relocated` as the record states it)."""
        h = state.households
        heads = np.full(len(h.village), -1, dtype=np.int64)
        head_rows = np.flatnonzero(state.persons.relation == 0)
        heads[state.persons.hh[head_rows]] = head_rows
        return {
            "household_id": hh,
            "village_code": h.village[hh].astype(np.int64),
            "head_person_id": heads[hh],
            "poverty_history": np.where(h.former_poor[hh], 0, 1).astype(np.int64),
            "lifted_year": self.registry.lifted_year[hh].astype(np.int64),
            "relocated": relocated.astype(np.int8),
            "reported_date": reported,
            "_county": self._county_of_hh(state, hh),
        }

    def _person_rows(
        self,
        state: State,
        persons: np.ndarray,
        status: np.ndarray,
        status_date: np.ndarray,
        reported: np.ndarray,
        *,
        gaps: bool = False,
    ) -> Batch:
        """Registry rows of `persons`; with `gaps` some sex, birth date, ethnicity are blank."""
        p, n = state.persons, len(persons)
        sex = np.where(p.male[persons], 0, 1)
        birth_date = p.birth_day[persons]
        ethnicity = p.ethnicity[persons]
        if gaps:
            sex = np.where(self.rng.random(n) < 0.05, -1, sex)
            birth_date = np.where(self.rng.random(n) < 0.05, NULL, birth_date)
            ethnicity = np.where(self.rng.random(n) < 0.03, -1, ethnicity)
        return {
            "person_id": persons,
            "household_id": p.hh[persons].astype(np.int64),
            "relation": p.relation[persons].astype(np.int64),
            "sex": sex.astype(np.int64),
            "birth_date": birth_date,
            "ethnicity": ethnicity.astype(np.int64),
            "status": status.astype(np.int64),
            "status_date": status_date,
            "reported_date": reported,
            "_county": self._county_of_person(state, persons),
        }

    def _housing_rows(
        self,
        state: State,
        hh: np.ndarray,
        assessed_day: np.ndarray,
        funded: np.ndarray,
        reported: np.ndarray,
    ) -> Batch:
        """Safety assessments of households `hh` (the grade as assessed now)."""
        return {
            "household_id": hh,
            "assessed_date": assessed_day,
            "safety_grade": state.households.house_grade[hh].astype(np.int64),
            "renovation_funded": funded.astype(np.int8),
            "reported_date": reported,
            "_county": self._county_of_hh(state, hh),
        }

    def _spell_rows(
        self,
        state: State,
        hh: np.ndarray,
        program: np.ndarray,
        start_day: np.ndarray,
        end_day: np.ndarray,
        amount: np.ndarray,
        reported: np.ndarray,
    ) -> Batch:
        """Assistance spells of households `hh` (`end_day` NULL while open)."""
        return {
            "household_id": hh,
            "program": program.astype(np.int64),
            "start_date": start_day,
            "end_date": end_day,
            "monthly_amount_yuan": amount.astype(np.float64),
            "reported_date": reported,
            "_county": self._county_of_hh(state, hh),
        }

    def _disability_rows(self, state: State, persons: np.ndarray, day: np.ndarray) -> Batch:
        p = state.persons
        grade = p.disability_grade[persons]
        poor = (state.households.former_poor | state.households.monitored)[p.hh[persons]]
        return {
            "person_id": persons,
            "certified_date": day,
            "disability_type": p.disability_type[persons].astype(np.int64),
            "grade": grade.astype(np.int64),
            "living_subsidy": ((grade <= 2) | poor).astype(np.int8),
            "care_subsidy": (grade <= 2).astype(np.int8),
            "reported_date": self._lag(day, 0, 30),
            "_county": self._county_of_person(state, persons),
        }

    def _asset_rows(self, state: State, persons: np.ndarray, day: np.ndarray) -> Batch:
        kind = self.rng.choice(4, len(persons), p=[0.55, 0.25, 0.05, 0.15])
        value = np.where(
            kind == 3,
            np.nan,
            np.round(
                np.array([60000, 300000, 500000, 0])[kind]
                * np.exp(self.rng.normal(0, 0.5, len(kind))),
                2,
            ),
        )
        return {
            "person_id": persons,
            "record_date": day,
            "asset_type": kind.astype(np.int64),
            "value_yuan": value,
            "reported_date": self._lag(day, 10, 90),
            "_county": self._county_of_person(state, persons),
        }

    # --- the world as it stood before the burn-in -----------------------------------
    def history(self, state: State, first_month: int) -> None:
        """Certificates, housing assessments, tekun spells and assets from before the burn-in."""
        n = len(state.households.village)
        self.spell_start_day = np.full(n, NULL, dtype=np.int64)
        self.components = np.zeros((n, 12, 5), dtype=np.float32)
        self.ident_day = np.full(n, NULL, dtype=np.int64)
        before = int(timeutil.first_day(first_month))
        self._past_certificates(state, before)
        self._past_assessments(state, before)
        self._past_tekun_spells(state)
        self._past_assets(state, first_month, before)

    def _past_certificates(self, state: State, before: int) -> None:
        p = state.persons
        disabled = np.flatnonzero(p.disability_grade > 0)
        day = np.maximum(before - self.rng.integers(30, 3000, len(disabled)), p.birth_day[disabled])
        self._add("disability", self._disability_rows(state, disabled, day))

    def _past_assessments(self, state: State, before: int) -> None:
        """Every house was assessed once, 2 months to 4 years before."""
        n = len(state.households.village)
        assessed = before - self.rng.integers(60, 1500, n)
        reported = self._lag(assessed, 5, 59)
        self._add(
            "housing",
            self._housing_rows(state, np.arange(n), assessed, np.zeros(n, dtype=bool), reported),
        )

    def _past_tekun_spells(self, state: State) -> None:
        h = state.households
        tekun = np.flatnonzero(h.tekun)
        start_day = timeutil.first_day(h.assist_start[tekun]) + self.rng.integers(0, 28, len(tekun))
        self.spell_start_day[tekun] = start_day
        program = np.full(len(tekun), TEKUN)
        still_open = np.full(len(tekun), NULL, dtype=np.int64)
        reported = self._lag(start_day, 3, 29)
        self._add(
            "social_assistance",
            self._spell_rows(
                state, tekun, program, start_day, still_open, h.assist_amount[tekun], reported
            ),
        )

    def _past_assets(self, state: State, first_month: int, before: int) -> None:
        """Assets recorded for some adults (fewer in fragile households)."""
        h, p, rng = state.households, state.persons, self.rng
        owner_p = np.clip(0.03 * np.exp(-0.8 * h.fragility[p.hh]), 0, 0.5)
        owners = np.flatnonzero(
            (rng.random(len(p.hh)) < owner_p) & ((first_month - p.birth_month) >= 22 * 12)
        )
        day = before - rng.integers(30, 2500, len(owners))
        self._add("assets", self._asset_rows(state, owners, day))

    def plan_divisions(self, start_month: int, end_month: int) -> None:
        """Draw the division renames of the reported period (before any file is written)."""
        plan_renames(
            self.registry.divisions,
            start_month,
            end_month,
            self.params.division_renames_per_year,
            self.rng,
        )

    # --- the first extract ---------------------------------------------------------
    def roster(self, state: State) -> None:
        """The households roster, persons registry and division names of the roster day."""
        h, p = state.households, state.persons
        n, n_p = len(h.village), len(p.hh)
        hh = np.arange(n)
        self._add(
            "households",
            self._household_rows(
                state,
                hh,
                self.registry.relocated_known,
                np.full(n, self.roster_day, dtype=np.int64),
            ),
        )
        status = np.select([p.status == DECEASED, p.status == MOVED_OUT], [1, 2], 0)
        status_date = np.where(status == 0, p.birth_day, p.status_day)
        reported = np.full(n_p, self.roster_day, dtype=np.int64)
        self._add(
            "persons",
            self._person_rows(state, np.arange(n_p), status, status_date, reported, gaps=True),
        )
        self.division_name = self.registry.divisions.name.copy()
        self._divisions(np.arange(len(self.division_name)), self.roster_day)

    def _divisions(self, which: np.ndarray, day: int | np.ndarray) -> None:
        """Rows of the divisions feed: `which` divisions with their current names."""
        div = self.registry.divisions
        self._add(
            "divisions",
            {
                "code": which.astype(np.int64),
                "name": self.division_name[which],
                "reported_date": np.zeros(len(which), dtype=np.int64) + day,
                "_county": div.county[which],
            },
        )

    def _division_changes(self, m: int, start: int, end: int) -> None:
        """Renames planned for month `m` (one row each) and the annual redelivery in January."""
        div = self.registry.divisions
        due = np.flatnonzero(div.rename_month == m)
        if len(due):
            which = div.rename_division[due]
            self.division_name[which] = div.rename_name[due]
            self._divisions(which, self._days_in(start, end, len(which)))
        if timeutil.calendar_month(m) == 1 and start > self.roster_day:
            # the yearly code table: every division again, as named now (early January)
            day = start + int(self.rng.integers(0, 15))
            self._divisions(np.arange(len(self.division_name)), day)

    # --- one month ------------------------------------------------------------
    def month(self, state: State, out: MonthOutcome, *, flows: bool) -> None:
        """Rows for what happened in `out.month`; `flows` adds the monthly person feeds."""
        m = out.month
        cal = timeutil.calendar_month(m)
        start, end = int(timeutil.first_day(m)), int(timeutil.last_day(m))
        self._keep_income_components(out)
        if flows:
            self._person_changes(state, out)
            self._medical(state, out, end)
            self._employment(state, out, start)
            if cal in (3, 9):
                self._education(state, out, start)
            if self.rng.random() < 0.5:
                self._roster_corrections(state, start)
            self._division_changes(m, start, end)
        self._certificates(state, out, start, end)
        self._disasters(state, out)
        self._assessments(state, out)
        self._monitoring(state, out, start, end)
        self._assistance(state, out, start, end)
        if cal in (6, 12):
            self._income_checks(state, out, m)
        if cal == 12:
            self._agriculture(state, m)
        self._asset_purchases(state, m, start, end)

    def _keep_income_components(self, out: MonthOutcome) -> None:
        """This month's income by component: what the income checks later sum up."""
        self.components[:, out.month % 12, :] = np.stack(
            [
                out.income.wage,
                out.income.operating,
                out.income.property_income,
                out.income.transfer,
                out.rigid.total,
            ],
            axis=1,
        )

    def _person_changes(self, state: State, out: MonthOutcome) -> None:
        """Deaths and moves, 5-60 days after the event."""
        p = state.persons
        changed = np.flatnonzero(out.died | out.moved_out)
        status = np.where(out.died[changed], 1, 2)
        status_date = p.status_day[changed]
        reported = self._lag(status_date, 5, 60)
        self._add("persons", self._person_rows(state, changed, status, status_date, reported))

    def _roster_corrections(self, state: State, start: int) -> None:
        """A few households re-reported with their relocation flag filled in."""
        fix = np.flatnonzero(self.rng.random(len(state.households.village)) < 0.002)
        reported = self._lag(np.full(len(fix), start), 0, 27)
        self._add(
            "households",
            self._household_rows(state, fix, state.households.relocated[fix], reported),
        )

    def _certificates(self, state: State, out: MonthOutcome, start: int, end: int) -> None:
        certified = np.flatnonzero(out.certified)
        day = self._days_in(start, end, len(certified))
        self._add("disability", self._disability_rows(state, certified, day))

    def _disasters(self, state: State, out: MonthOutcome) -> None:
        """Disaster reports 1-20 days after the event; 10 % revised 30-90 days later."""
        rng = self.rng
        hit = np.flatnonzero(out.disasters.hazard >= 0)
        disasters = {
            "household_id": hit,
            "event_date": out.disasters.day[hit],
            "hazard": out.disasters.hazard[hit].astype(np.int64),
            "loss_yuan": out.disasters.loss[hit],
            "house_damage": out.disasters.damage[hit].astype(np.int64),
            "reported_date": self._lag(out.disasters.day[hit], 1, 20),
            "_county": self._county_of_hh(state, hit),
        }
        self._add("disasters", disasters)
        revised = np.flatnonzero(rng.random(len(hit)) < 0.1)
        revision = take(disasters, revised)
        revision["loss_yuan"] = np.round(
            revision["loss_yuan"] * rng.uniform(0.7, 1.5, len(revised)), 2
        )
        revision["reported_date"] = revision["reported_date"] + rng.integers(30, 90, len(revised))
        self._add("disasters", revision)

    def _assessments(self, state: State, out: MonthOutcome) -> None:
        assessed = np.flatnonzero(out.assessments.assessed)
        day = out.assessments.day[assessed]
        funded = out.assessments.renovation_funded[assessed]
        reported = self._lag(day, 3, 40)
        self._add("housing", self._housing_rows(state, assessed, day, funded, reported))

    def _asset_purchases(self, state: State, m: int, start: int, end: int) -> None:
        """Rare new asset records of living adults."""
        h, p = state.households, state.persons
        buyers = np.flatnonzero(
            (p.status == LIVING)
            & (self.rng.random(len(p.hh)) < 0.0002 * np.exp(-0.8 * h.fragility[p.hh]))
            & ((m - p.birth_month) >= 22 * 12)
        )
        self._add("assets", self._asset_rows(state, buyers, self._days_in(start, end, len(buyers))))

    def _medical(self, state: State, out: MonthOutcome, end: int) -> None:
        """Person-months with visits or stays, 15-60 days after month end; 1 % corrected."""
        p, rng = state.persons, self.rng
        rows = np.flatnonzero((out.care.outpatient > 0) | (out.care.inpatient_days > 0))
        code = np.where(p.chronic[rows] > 0, p.illness_code[rows] + 8 * (p.chronic[rows] == 2), -1)
        batch: Batch = {
            "person_id": rows,
            "month": np.full(len(rows), out.month, dtype=np.int64),
            "insured": p.insured[rows].astype(np.int8),
            "outpatient_visits": out.care.outpatient[rows].astype(np.int64),
            "inpatient_days": out.care.inpatient_days[rows].astype(np.int64),
            "total_cost_yuan": out.care.total_cost[rows],
            "reimbursed_yuan": out.care.reimbursed[rows],
            "out_of_pocket_yuan": np.round(out.care.out_of_pocket[rows], 2),
            "serious_illness": code.astype(np.int64),
            "reported_date": self._lag(np.full(len(rows), end), 15, 60),
            "_county": self._county_of_person(state, rows),
        }
        self._add("medical", batch)
        # corrections: medical assistance settles later, lowering out-of-pocket
        fix = np.flatnonzero(rng.random(len(rows)) < self.params.correction_share)
        corrected = take(batch, fix)
        extra = np.round(corrected["out_of_pocket_yuan"] * rng.uniform(0.1, 0.5, len(fix)), 2)
        corrected["reimbursed_yuan"] = np.round(corrected["reimbursed_yuan"] + extra, 2)
        corrected["out_of_pocket_yuan"] = np.round(
            corrected["total_cost_yuan"] - corrected["reimbursed_yuan"], 2
        )
        corrected["reported_date"] = corrected["reported_date"] + rng.integers(20, 70, len(fix))
        self._add("medical", corrected)

    def _employment(self, state: State, out: MonthOutcome, start: int) -> None:
        """Registered working-age people: status and wage, next month."""
        p, rng = state.persons, self.rng
        age = (out.month - p.birth_month) // 12
        rows = np.flatnonzero((p.status == LIVING) & p.registered & (age >= 16) & (age <= 64))
        work, employed = p.work[rows], p.employed[rows]
        in_season = 3 <= timeutil.calendar_month(out.month) <= 11
        status = np.select(
            [
                work == NO_WORK,
                ~employed,
                work == LOCAL,
                work == MIGRANT,
                work == SEASONAL,
                work == SELF_EMPLOYED,
                work == WELFARE_POST,
            ],
            [
                EMP_NILF,
                EMP_UNEMPLOYED,
                EMP_EMPLOYED_LOCAL,
                EMP_MIGRANT,
                EMP_EMPLOYED_LOCAL if in_season else EMP_NILF,
                EMP_SELF,
                EMP_WELFARE,
            ],
            EMP_NILF,
        )
        paid = np.isin(status, [EMP_EMPLOYED_LOCAL, EMP_MIGRANT, EMP_WELFARE])
        wage_known = paid & (rng.random(len(rows)) > self.params.wage_unknown_share)
        wage = np.where(status == EMP_WELFARE, self.params.wage_public_welfare_post, p.wage[rows])
        insurance = np.where(
            rng.random(len(rows)) < 0.05, -1, (p.social_insurance[rows] & paid).astype(np.int8)
        )
        self._add(
            "employment",
            {
                "person_id": rows,
                "month": np.full(len(rows), out.month, dtype=np.int64),
                "status": status.astype(np.int64),
                "monthly_wage_yuan": np.where(wage_known, np.round(wage, 2), np.nan),
                "social_insurance_paid": insurance.astype(np.int8),
                "reported_date": self._lag(np.full(len(rows), start + 31), 0, 25),
                "_county": self._county_of_person(state, rows),
            },
        )

    def _education(self, state: State, out: MonthOutcome, start: int) -> None:
        p = state.persons
        rows = np.flatnonzero(
            ((p.status == LIVING) & (p.school_stage >= 0) & (p.school_status == ENROLLED))
            | out.school.changed
        )
        enrolled = p.school_status[rows] == ENROLLED
        self._add(
            "education",
            {
                "person_id": rows,
                "term": np.full(len(rows), out.month, dtype=np.int64),
                "stage": p.school_stage[rows].astype(np.int64),
                "status": p.school_status[rows].astype(np.int64),
                "tuition_yuan": np.where(enrolled, np.round(out.school.tuition[rows], 2), 0.0),
                "aid_yuan": np.where(enrolled, np.round(out.school.aid[rows], 2), 0.0),
                "reported_date": self._lag(np.full(len(rows), start), 10, 45),
                "_county": self._county_of_person(state, rows),
            },
        )

    def _monitoring(self, state: State, out: MonthOutcome, start: int, end: int) -> None:
        h, rng = state.households, self.rng
        ident = np.flatnonzero(out.identified)
        day = rng.integers(start, end + 1, len(ident))
        self.ident_day[ident] = day
        elim = np.flatnonzero(out.eliminated)
        elim_day = np.maximum(rng.integers(start, end + 1, len(elim)), self.ident_day[elim])
        hh = np.r_[ident, elim]
        event_day = np.r_[day, elim_day]
        # reported within the month: monitoring decisions are entered as they are made
        reported = np.minimum(event_day + rng.integers(0, 12, len(hh)), end)
        self._add(
            "monitoring_events",
            {
                "household_id": hh,
                "event_date": event_day,
                "event": np.r_[np.zeros(len(ident)), np.ones(len(elim))].astype(np.int64),
                "category": h.category[hh].astype(np.int64),
                "risk_types": h.risk_bits[hh].astype(np.int64),
                "source": h.source[hh].astype(np.int64),
                "reported_date": reported,
                "_county": self._county_of_hh(state, hh),
            },
        )

    def _assistance(self, state: State, out: MonthOutcome, start: int, end: int) -> None:
        rng = self.rng
        started = np.flatnonzero(out.started.households)
        day = rng.integers(start, end + 1, len(started))
        self.spell_start_day[started] = day
        program = out.started.program[started]
        temporary = program == TEMPORARY
        self._add(
            "social_assistance",
            {
                "household_id": started,
                "program": program.astype(np.int64),
                "start_date": day,
                "end_date": np.where(temporary, day, NULL),
                "monthly_amount_yuan": out.started.amount[started].astype(np.float64),
                "reported_date": self._lag(day, 0, 20),
                "_county": self._county_of_hh(state, started),
            },
        )
        ended = np.flatnonzero(out.ended.households & (out.ended.program != TEMPORARY))
        start_day = self.spell_start_day[ended]
        end_day = np.maximum(rng.integers(start, end + 1, len(ended)), start_day)
        self._add(
            "social_assistance",
            {
                "household_id": ended,
                "program": out.ended.program[ended].astype(np.int64),
                "start_date": start_day,
                "end_date": end_day,
                "monthly_amount_yuan": out.ended.amount[ended].astype(np.float64),
                "reported_date": self._lag(end_day, 1, 25),
                "_county": self._county_of_hh(state, ended),
            },
        )

    def _income_checks(self, state: State, out: MonthOutcome, m: int) -> None:
        h, rng = state.households, self.rng
        annual = timeutil.calendar_month(m) == 12
        who = (h.income_checked | h.monitored) if annual else (h.former_poor | h.monitored)
        rows = np.flatnonzero(who & (out.income.members > 0))
        sums = self.components[rows].sum(axis=1, dtype=np.float64) * rng.normal(
            1, 0.03, (len(rows), 1)
        )
        wage, operating, prop, transfer, rigid = (np.round(sums[:, k], 2) for k in range(5))
        wage, prop, transfer, rigid = (np.clip(x, 0, None) for x in (wage, prop, transfer, rigid))
        per_capita = np.round((wage + operating + prop + transfer) / out.income.members[rows], 2)
        end = int(timeutil.last_day(m))
        reported = (
            (end + rng.integers(10, 90, len(rows)))
            if annual
            else (end + rng.integers(5, 60, len(rows)))
        )
        self._add(
            "income_checks",
            {
                "household_id": rows,
                "period_end": np.full(len(rows), m, dtype=np.int64),
                "per_capita_net_income_yuan": per_capita + 0.0,
                "wage_income_yuan": wage + 0.0,
                "operating_income_yuan": operating + 0.0,
                "property_income_yuan": prop + 0.0,
                "transfer_income_yuan": transfer + 0.0,
                "rigid_expenditure_yuan": np.where(
                    rng.random(len(rows)) < 0.05, np.nan, rigid + 0.0
                ),
                "reported_date": reported,
                "_county": self._county_of_hh(state, rows),
            },
        )

    def _agriculture(self, state: State, m: int) -> None:
        h, rng = state.households, self.rng
        rows = np.flatnonzero((h.land_mu > 0) | (h.livestock > 0))
        year = int(timeutil.year_of(m))
        support = np.where(
            h.former_poor[rows] & (rng.random(len(rows)) < 0.4),
            np.round(rng.uniform(500, 5000, len(rows)), 2),
            0.0,
        )
        self._add(
            "agriculture",
            {
                "household_id": rows,
                "year": np.full(len(rows), year, dtype=np.int64),
                "cultivated_land_mu": np.round(h.land_mu[rows], 1),
                "livestock_units": np.round(h.livestock[rows], 1),
                "cooperative_member": h.coop[rows].astype(np.int8),
                "industry_support_yuan": support,
                "reported_date": self._lag(
                    np.full(len(rows), int(timeutil.first_day(m + 2))), 0, 88
                ),
                "_county": self._county_of_hh(state, rows),
            },
        )

    # --- delivery --------------------------------------------------------------
    def pop_reported(self, upto_day: int) -> dict[str, Batch]:
        """Rows reported on or before `upto_day`, per feed (removed from the queue)."""
        out: dict[str, Batch] = {}
        for feed, batches in self.pending.items():
            merged = concat(batches)
            if not merged:
                continue
            due = merged["reported_date"] <= upto_day
            if due.any():
                out[feed] = take(merged, np.flatnonzero(due))
            rest = np.flatnonzero(~due)
            self.pending[feed] = [take(merged, rest)] if len(rest) else []
        return out

    def undelivered_rows(self) -> int:
        return sum(size(b) for batches in self.pending.values() for b in batches)


def dedupe_versions(feed: str, batch: Batch) -> Batch:
    """Among rows of one key reported on the same day, keep the last one generated.

    Only needed for history folded onto the roster day, where a record and its later
    version would otherwise tie.
    """
    key = (*contract.feed(feed).key, "reported_date")
    n = size(batch)
    if n == 0:
        return batch
    columns = [batch[k] for k in reversed(key)]
    order = np.lexsort(columns)
    keys = np.stack([batch[k][order] for k in key], axis=1)
    last = np.r_[np.any(keys[1:] != keys[:-1], axis=1), True]
    keep = np.sort(order[last])
    return take(batch, keep)
