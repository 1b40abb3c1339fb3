"""The latent state of the province: plain numpy arrays at four levels.

Counties, villages, households and persons each hold equal-length arrays; the
links between levels (`Persons.hh`, `Households.village`, ...) are indexes. The
state can be restricted to some households (`select`) and tiled into
independent replicas (`tile`), which is how the oracle simulates many futures.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

import numpy as np

NULL = np.int32(-(2**31))  # null marker for integer days / months / years

# persons.status codes (match the contract's PERSON_STATUS order)
LIVING, DECEASED, MOVED_OUT = 0, 1, 2
# work types
NO_WORK, LOCAL, MIGRANT, SEASONAL, SELF_EMPLOYED, WELFARE_POST = 0, 1, 2, 3, 4, 5
# school stages follow contract.EDUCATION_STAGE order; -1 = not in school
PRESCHOOL, PRIMARY, JUNIOR, SENIOR, VOCATIONAL, HIGHER = 0, 1, 2, 3, 4, 5
ENROLLED, DROPPED_OUT, SUSPENDED, GRADUATED = 0, 1, 2, 3
# risk-type bits follow contract.RISK_TYPES order
RISK_ILLNESS, RISK_DISABILITY, RISK_EDUCATION, RISK_DISASTER, RISK_ACCIDENT = 0, 1, 2, 3, 4
RISK_EMPLOYMENT, RISK_INDUSTRY, RISK_LABOR, RISK_HOUSING, RISK_WATER, RISK_OTHER = (
    5,
    6,
    7,
    8,
    9,
    10,
)
N_RISKS = 11
# assistance programmes follow contract.PROGRAM order; -1 = none
DIBAO, TEKUN, MARGINAL, RIGID, TEMPORARY = 0, 1, 2, 3, 4


@dataclass
class Counties:
    drought_year: np.ndarray  # bool: this calendar year is a drought year
    proneness: np.ndarray  # float: disaster proneness multiplier
    remoteness: np.ndarray  # float 0..1


@dataclass
class Villages:
    county: np.ndarray
    visit_interval: np.ndarray  # months between grassroots visits
    visit_phase: np.ndarray
    remoteness: np.ndarray


@dataclass
class Households:
    village: np.ndarray
    county: np.ndarray
    former_poor: np.ndarray
    relocated: np.ndarray
    hidden: np.ndarray  # hardship here rarely surfaces (pride, remoteness)
    income_checked: np.ndarray  # in the annual income check (former poor + a sample)
    fragility: np.ndarray  # latent, standard normal-ish; never in a record
    land_mu: np.ndarray
    livestock: np.ndarray
    coop: np.ndarray
    house_score: np.ndarray  # 0..1 latent condition
    house_grade: np.ndarray  # last assessed grade 0=A..3=D
    renovation_due: np.ndarray  # month the funded renovation completes, NULL if none
    business_failed_month: np.ndarray
    income_hist: np.ndarray  # (N, 12) monthly net income, ring buffer
    rigid_hist: np.ndarray  # (N, 12) monthly rigid expenditure
    cause_month: np.ndarray  # (N, N_RISKS) last month each shock happened
    hardship: np.ndarray
    stable_months: np.ndarray  # consecutive months without hardship
    monitored: np.ndarray
    monitored_since: np.ndarray
    category: np.ndarray
    risk_bits: np.ndarray
    source: np.ndarray
    pending_months: np.ndarray  # months until a detected household is identified; -1 none
    pending_source: np.ndarray
    assist_program: np.ndarray
    assist_amount: np.ndarray
    assist_start: np.ndarray  # month the spell started / starts (NULL none)
    assist_end_due: np.ndarray  # month the spell ends (NULL open)
    tekun: np.ndarray


@dataclass
class Persons:
    hh: np.ndarray
    birth_day: np.ndarray  # days since 1970-01-01
    birth_month: np.ndarray  # months since 1970-01
    male: np.ndarray
    relation: np.ndarray
    ethnicity: np.ndarray
    status: np.ndarray
    status_day: np.ndarray
    work: np.ndarray
    employed: np.ndarray
    wage: np.ndarray
    registered: np.ndarray  # known to the employment department
    social_insurance: np.ndarray
    chronic: np.ndarray  # 0 none, 1 chronic, 2 serious
    illness_code: np.ndarray
    disability_grade: np.ndarray  # 0 none, 1 most severe .. 4
    disability_type: np.ndarray
    certify_month: np.ndarray  # month the certificate will be issued, NULL none pending
    insured: np.ndarray
    school_stage: np.ndarray
    school_status: np.ndarray

    def severely_disabled(self) -> np.ndarray:
        """Disability grade 1 or 2: care subsidies, higher mortality, unable to work."""
        return (self.disability_grade > 0) & (self.disability_grade <= 2)


Level = TypeVar("Level", Counties, Villages, Households, Persons)


def _take(obj: Level, index: np.ndarray) -> Level:
    return replace(obj, **{f.name: getattr(obj, f.name)[index] for f in fields(obj)})


def _tile(obj: Level, reps: int) -> Level:
    out: dict[str, Any] = {}
    for f in fields(obj):
        arr = getattr(obj, f.name)
        out[f.name] = np.tile(arr, (reps,) + (1,) * (arr.ndim - 1))
    return replace(obj, **out)


def _offset(index: np.ndarray, size: int, reps: int) -> np.ndarray:
    """Tiled link indexes, shifted so replica k points into replica k's block."""
    n = len(index) // reps
    return index + np.repeat(np.arange(reps, dtype=index.dtype) * size, n)


@dataclass
class State:
    counties: Counties
    villages: Villages
    households: Households
    persons: Persons

    def copy(self) -> State:
        return self.select(np.arange(len(self.households.village)))

    def select(self, households: np.ndarray) -> State:
        """The state restricted to `households` (indexes), re-linked; a copy."""
        households = np.sort(households)
        keep_person = np.isin(self.persons.hh, households)
        persons = _take(self.persons, np.flatnonzero(keep_person))
        new_index = np.full(len(self.households.village), -1, dtype=np.int64)
        new_index[households] = np.arange(len(households))
        persons.hh = new_index[persons.hh].astype(np.int32)
        return State(
            _take(self.counties, np.arange(len(self.counties.proneness))),
            _take(self.villages, np.arange(len(self.villages.county))),
            _take(self.households, households),
            persons,
        )

    def tile(self, reps: int) -> State:
        """`reps` independent replicas of this state side by side."""
        nc, nv, nh = (
            len(self.counties.proneness),
            len(self.villages.county),
            len(self.households.village),
        )
        c, v = _tile(self.counties, reps), _tile(self.villages, reps)
        h, p = _tile(self.households, reps), _tile(self.persons, reps)
        v.county = _offset(v.county, nc, reps)
        h.county = _offset(h.county, nc, reps)
        h.village = _offset(h.village, nv, reps)
        p.hh = _offset(p.hh, nh, reps)
        return State(c, v, h, p)
