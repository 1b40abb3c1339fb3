"""Building the province at the start of the burn-in: places, households, people.

Returns the latent `State` plus `Registry`, the identifiers and names the
records will carry (ID numbers, household numbers, village codes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from province import timeutil
from province.identity import (
    Divisions,
    build_divisions,
    person_names,
    phone_numbers,
    synthetic_county_names,
)
from province.params import WorldParams
from province.state import (
    GRADUATED,
    HIGHER,
    JUNIOR,
    LIVING,
    LOCAL,
    MIGRANT,
    N_RISKS,
    NO_WORK,
    NULL,
    PRESCHOOL,
    PRIMARY,
    SEASONAL,
    SELF_EMPLOYED,
    SENIOR,
    Counties,
    Households,
    Persons,
    State,
    Villages,
)

# County-level divisions of Gansu (GB/T 2260); more are synthesised for big worlds.
GANSU_COUNTIES: tuple[tuple[str, str], ...] = (
    ("620121", "永登县"),
    ("620122", "皋兰县"),
    ("620123", "榆中县"),
    ("620421", "靖远县"),
    ("620422", "会宁县"),
    ("620423", "景泰县"),
    ("620521", "清水县"),
    ("620522", "秦安县"),
    ("620523", "甘谷县"),
    ("620524", "武山县"),
    ("620525", "张家川回族自治县"),
    ("620621", "民勤县"),
    ("620622", "古浪县"),
    ("620623", "天祝藏族自治县"),
    ("620821", "泾川县"),
    ("620822", "灵台县"),
    ("620825", "庄浪县"),
    ("620826", "静宁县"),
    ("621021", "庆城县"),
    ("621022", "环县"),
    ("621023", "华池县"),
    ("621026", "宁县"),
    ("621027", "镇原县"),
    ("621102", "安定区"),
    ("621121", "通渭县"),
    ("621122", "陇西县"),
    ("621123", "渭源县"),
    ("621124", "临洮县"),
    ("621125", "漳县"),
    ("621126", "岷县"),
    ("621202", "武都区"),
    ("621221", "成县"),
    ("621222", "文县"),
    ("621223", "宕昌县"),
    ("621224", "康县"),
    ("621225", "西和县"),
    ("621226", "礼县"),
    ("622921", "临夏县"),
    ("622922", "康乐县"),
    ("622923", "永靖县"),
    ("622924", "广河县"),
    ("622925", "和政县"),
    ("622926", "东乡族自治县"),
    ("622927", "积石山保安族东乡族撒拉族自治县"),
    ("623021", "临潭县"),
    ("623022", "卓尼县"),
    ("623023", "舟曲县"),
    ("623024", "迭部县"),
    ("623025", "玛曲县"),
    ("623026", "碌曲县"),
    ("623027", "夏河县"),
    ("620102", "城关区"),
    ("620103", "七里河区"),
)
ETHNICITIES: tuple[str, ...] = ("汉族", "回族", "东乡族", "藏族", "保安族", "撒拉族", "土族")


@dataclass
class Registry:
    """Identifiers and names as the departments know them."""

    county_codes: list[str]
    county_names: list[str]
    village_codes: np.ndarray  # str, one per village
    household_ids: np.ndarray  # bytes (S16), one per household
    person_ids: np.ndarray  # bytes (S18), one per person
    names: pa.Array  # str, one per person (identity.person_names)
    phones: pa.Array  # str or null, one per household (the head's mobile)
    divisions: Divisions  # every county, township and village code with its names
    lifted_year: np.ndarray  # int, NULL for ordinary households
    relocated_known: np.ndarray  # relocation flag as recorded (-1 unknown)


def _county_codes(n: int) -> tuple[list[str], list[str]]:
    codes = [c for c, _ in GANSU_COUNTIES[:n]]
    names = [name for _, name in GANSU_COUNTIES[:n]]
    city, suffix = 1, 60
    while len(codes) < n:  # synthetic county codes under real prefecture codes
        codes.append(f"62{city:02d}{suffix:02d}")
        city = city % 30 + 1
        suffix = suffix + 1 if city == 1 else suffix
    taken = {name for _, name in GANSU_COUNTIES}
    names += synthetic_county_names(n - len(names), taken)
    return codes, names


def _ethnic_weights(code: str) -> list[float]:
    if code.startswith("6229"):  # Linxia: Hui and Dongxiang areas
        return [0.40, 0.33, 0.22, 0.0, 0.03, 0.02, 0.0]
    if code.startswith("6230") or code == "620623":  # Gannan, Tianzhu: Tibetan areas
        return [0.40, 0.08, 0.0, 0.50, 0.0, 0.0, 0.02]
    if code == "620525":  # Zhangjiachuan Hui autonomous county
        return [0.30, 0.70, 0.0, 0.0, 0.0, 0.0, 0.0]
    return [0.95, 0.04, 0.0, 0.01, 0.0, 0.0, 0.0]


def make_ids(
    region: np.ndarray, birth_day: np.ndarray, male: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Valid, unique 18-character ID numbers as bytes (vectorised `idnumber.make_id`).

    `region` holds 6-digit region codes as integers, `birth_day` day numbers.
    """
    n = len(region)
    birth = birth_day.astype("datetime64[D]")
    year = birth.astype("datetime64[Y]").astype(np.int64) + 1970
    month = birth.astype("datetime64[M]").astype(np.int64) % 12 + 1
    day = (birth - birth.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1
    prefix = region.astype(np.int64) * 10**8 + year * 10**4 + month * 100 + day
    # unique sequence per (region, birth date): rank inside the group, odd for men
    order = np.argsort(prefix, kind="stable")
    sorted_prefix = prefix[order]
    starts = np.flatnonzero(np.r_[True, sorted_prefix[1:] != sorted_prefix[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    seq = ((rng.integers(0, 300, n) + rank * 2) % 500) * 2 + male.astype(np.int64)
    body = prefix * 1000 + seq  # 17 digits
    # The random offsets differ per person, so two of one group can still meet (offset 10
    # at rank 0 and 8 at rank 1): move each later one on by 2 (same parity, same sex)
    # until all differ. Only the colliding IDs change.
    while True:
        _, first = np.unique(body, return_index=True)
        if len(first) == n:
            break
        later = np.ones(n, dtype=bool)
        later[first] = False
        seq[later] = (seq[later] + 2) % 1000
        body = prefix * 1000 + seq
    digits = (body[:, None] // 10 ** np.arange(16, -1, -1, dtype=np.int64)[None, :]) % 10
    weights = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])
    check = np.frombuffer(b"10X98765432", dtype=np.uint8)[(digits @ weights) % 11]
    chars = np.empty((n, 18), dtype=np.uint8)
    chars[:, :17] = digits + ord("0")
    chars[:, 17] = check
    return chars.view("S18").ravel()


@dataclass(frozen=True)
class _Standing:
    """What sets households apart from the start (one entry per household)."""

    former_poor: np.ndarray
    fragility: np.ndarray  # latent; standard normal, higher for former-poor and remote ones
    lifted_year: np.ndarray  # NULL for ordinary households
    relocated: np.ndarray
    relocated_known: np.ndarray  # the relocation flag as recorded (-1 unknown)


@dataclass(frozen=True)
class _Family:
    """Who lives in each household: persons (P arrays) and household sizes (N arrays)."""

    hh: np.ndarray  # household of each person
    relation: np.ndarray  # contract RELATION order
    age: np.ndarray  # years (fractional)
    is_head: np.ndarray
    spouse: np.ndarray
    size: np.ndarray  # per household
    head_age: np.ndarray  # per household


def build_world(
    households: int, start_month: int, params: WorldParams, rng: np.random.Generator
) -> tuple[State, Registry]:
    """The province as it stands at `start_month` (the first burn-in month)."""
    n = households
    n_counties = max(params.min_counties, round(n / params.households_per_county))
    county_codes, county_names = _county_codes(n_counties)
    counties = _counties(county_codes, rng)
    hh_county = np.sort(rng.integers(0, n_counties, n))
    villages, village_of, village_codes = _villages(hh_county, county_codes, counties, params, rng)
    standing = _standing(villages.remoteness[village_of], params, rng)
    family = _family(n, params, rng)
    persons, person_ids = _persons(
        family, standing.fragility, hh_county, county_codes, start_month, params, rng
    )
    lone_elderly = (family.size == 1) & (family.head_age >= 62)
    hh = _households(village_of, hh_county, standing, lone_elderly, start_month, params, rng)
    state = State(counties, villages, hh, persons)

    # identifying text last: the latent state above does not depend on these draws
    registry = Registry(
        county_codes=county_codes,
        county_names=county_names,
        village_codes=np.array(village_codes),
        household_ids=_household_numbers(village_of, village_codes),
        person_ids=person_ids,
        names=person_names(persons.hh, persons.relation, persons.male, persons.ethnicity, rng),
        phones=phone_numbers(n, params.phone_missing_share, rng),
        divisions=build_divisions(county_codes, county_names, village_codes, rng),
        lifted_year=standing.lifted_year,
        relocated_known=standing.relocated_known,
    )
    return state, registry


def _counties(county_codes: list[str], rng: np.random.Generator) -> Counties:
    """Disaster proneness (Longnan and Gannan higher, Dingxi drought-prone) and remoteness."""
    n_counties = len(county_codes)
    return Counties(
        drought_year=np.zeros(n_counties, dtype=bool),
        proneness=np.array(
            [
                1.6 if c.startswith(("6212", "6230")) else 1.3 if c.startswith("6211") else 1.0
                for c in county_codes
            ]
        )
        * rng.uniform(0.7, 1.3, n_counties),
        remoteness=rng.beta(2, 3, n_counties),
    )


def _villages(
    hh_county: np.ndarray,
    county_codes: list[str],
    counties: Counties,
    params: WorldParams,
    rng: np.random.Generator,
) -> tuple[Villages, np.ndarray, list[str]]:
    """Villages as consecutive blocks of households inside a county.

    Returns the villages, the village of each household and the 12-digit village codes.
    """
    n = len(hh_county)
    village_of = np.empty(n, dtype=np.int32)
    village_county: list[int] = []
    village_codes: list[str] = []
    next_village = 0
    for c in range(len(county_codes)):
        members = np.flatnonzero(hh_county == c)
        n_villages = max(2, round(len(members) / params.households_per_village))
        cuts = np.sort(rng.integers(0, n_villages, len(members)))
        village_of[members] = next_village + cuts
        for v in range(n_villages):
            township, village = divmod(v, params.villages_per_township)
            village_codes.append(f"{county_codes[c]}{township + 1:03d}{village + 1:03d}")
            village_county.append(c)
        next_village += n_villages
    n_villages_total = next_village
    villages = Villages(
        county=np.array(village_county, dtype=np.int32),
        visit_interval=rng.choice(np.array(params.visit_interval_months), n_villages_total),
        visit_phase=rng.integers(0, 6, n_villages_total),
        remoteness=np.clip(
            counties.remoteness[village_county] + rng.normal(0, 0.15, n_villages_total), 0, 1
        ),
    )
    villages.visit_phase %= villages.visit_interval
    return villages, village_of, village_codes


def _household_numbers(village_of: np.ndarray, village_codes: list[str]) -> np.ndarray:
    """Household numbers: village code + 4-digit serial inside the village (bytes, S16)."""
    n = len(village_of)
    serial = np.zeros(n, dtype=np.int64)
    order = np.argsort(village_of, kind="stable")
    vs = village_of[order]
    starts = np.flatnonzero(np.r_[True, vs[1:] != vs[:-1]])
    serial[order] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n])) + 1
    village_numbers = np.array([int(code) for code in village_codes], dtype=np.int64)
    return (village_numbers[village_of] * 10_000 + serial).astype("S16")


def _standing(remote: np.ndarray, params: WorldParams, rng: np.random.Generator) -> _Standing:
    """Former-poor households (lifted 2014-2020, some relocated) and latent fragility."""
    n = len(remote)
    former_poor = rng.random(n) < params.former_poor_share
    fragility = rng.normal(0, 1, n) + 0.55 * former_poor + 0.6 * (remote - 0.4)
    lifted_year = np.where(former_poor, rng.integers(2014, 2021, n), NULL).astype(np.int32)
    relocated = former_poor & (rng.random(n) < params.relocated_share_of_former_poor)
    relocated_known = np.where(rng.random(n) < 0.1, -1, relocated.astype(np.int8))
    return _Standing(
        former_poor=former_poor,
        fragility=fragility,
        lifted_year=lifted_year,
        relocated=relocated,
        relocated_known=relocated_known,
    )


def _family(n: int, params: WorldParams, rng: np.random.Generator) -> _Family:
    """Household sizes, and each member's relation to the head and age.

    Slot 0 is the head, slot 1 a spouse (if the household has two and roll < 0.85), then
    children, parents, grandchildren and others.
    """
    weights = np.array(params.household_size_weights)
    size = rng.choice(np.arange(1, len(weights) + 1), n, p=weights / weights.sum())
    hh_of_person = np.repeat(np.arange(n, dtype=np.int32), size)
    p = len(hh_of_person)
    slot = np.arange(p) - np.repeat(np.cumsum(size) - size, size)
    head_age = np.clip(rng.normal(50, 13, n), 22, 88)
    ages = np.empty(p)
    relation = np.empty(p, dtype=np.int8)  # contract RELATION order
    hsize = size[hh_of_person]
    h_age = head_age[hh_of_person]
    roll = rng.random(p)
    relation[:] = 2
    ages[:] = np.clip(h_age - rng.normal(27, 4, p), 0, 60)
    is_head = slot == 0
    relation[is_head] = 0
    ages[is_head] = h_age[is_head]
    spouse = (slot == 1) & (roll < 0.85)
    relation[spouse] = 1
    ages[spouse] = np.clip(h_age[spouse] + rng.normal(-2, 3, spouse.sum()), 20, 90)
    parent = (slot >= 2) & (roll < 0.18) & (h_age < 62)
    relation[parent] = 3
    ages[parent] = np.clip(h_age[parent] + rng.normal(27, 4, parent.sum()), 55, 95)
    grandchild = (slot >= 3) & (roll > 0.7) & (h_age > 48) & (hsize >= 4)
    relation[grandchild] = 4
    ages[grandchild] = rng.uniform(0, 14, grandchild.sum())
    other = (slot >= 2) & ~parent & ~grandchild & (roll > 0.96)
    relation[other] = rng.choice(np.array([5, 6], dtype=np.int8), other.sum())
    ages[other] = np.clip(h_age[other] + rng.normal(0, 8, other.sum()), 16, 90)
    return _Family(
        hh=hh_of_person,
        relation=relation,
        age=ages,
        is_head=is_head,
        spouse=spouse,
        size=size,
        head_age=head_age,
    )


def _persons(
    family: _Family,
    fragility: np.ndarray,
    hh_county: np.ndarray,
    county_codes: list[str],
    start_month: int,
    params: WorldParams,
    rng: np.random.Generator,
) -> tuple[Persons, np.ndarray]:
    """Every member's birth, sex, ID number, ethnicity, work, health and schooling.

    Returns the persons and their ID numbers.
    """
    p = len(family.hh)
    age_months = (family.age * 12).astype(np.int64)
    birth_month = start_month - age_months
    birth_day = timeutil.first_day(birth_month) + rng.integers(0, 28, p)
    male = np.where(family.is_head, rng.random(p) < 0.88, rng.random(p) < 0.5)
    male[family.spouse] = ~male[np.flatnonzero(family.spouse) - 1]
    person_ids = _person_ids(family, hh_county, county_codes, birth_day, male, rng)
    eth_table = np.array([_ethnic_weights(code) for code in county_codes])
    ethnicity = _draw_rows(eth_table[hh_county], rng)[family.hh].astype(np.int8)

    age_years = age_months // 12
    hh_frag = fragility[family.hh]
    work, wage, employed, registered = _work_at_start(age_years, male, hh_frag, params, rng)
    chronic, disability_grade = _health_at_start(age_years, hh_frag, rng)
    school_stage = _stage_for_age(age_years, rng, params)
    persons = Persons(
        hh=family.hh,
        birth_day=birth_day.astype(np.int64),
        birth_month=birth_month.astype(np.int64),
        male=male,
        relation=family.relation,
        ethnicity=ethnicity,
        status=np.full(p, LIVING, dtype=np.int8),
        status_day=birth_day.astype(np.int64),
        work=work,
        employed=employed,
        wage=wage.astype(np.float64),
        registered=registered,
        social_insurance=registered & (rng.random(p) < 0.6),
        chronic=chronic,
        illness_code=np.where(chronic > 0, rng.integers(0, 8, p), -1).astype(np.int8),
        disability_grade=disability_grade,
        disability_type=rng.integers(0, 7, p).astype(np.int8),
        certify_month=np.full(p, NULL, dtype=np.int64),
        insured=rng.random(p) > params.uninsured_share,
        school_stage=school_stage,
        school_status=np.where(school_stage >= 0, 0, GRADUATED).astype(np.int8),
    )
    persons.work[school_stage >= SENIOR] = NO_WORK
    persons.employed[school_stage >= SENIOR] = False
    return persons, person_ids


def _person_ids(
    family: _Family,
    hh_county: np.ndarray,
    county_codes: list[str],
    birth_day: np.ndarray,
    male: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """ID numbers under the region of the household's county (30 % of spouses and siblings
    were born in another county)."""
    p = len(family.hh)
    code_numbers = np.array([int(code) for code in county_codes])
    region = code_numbers[hh_county[family.hh]]
    married_in = (family.spouse | (family.relation == 5)) & (rng.random(p) < 0.3)
    region = np.where(married_in, code_numbers[rng.integers(0, len(county_codes), p)], region)
    return make_ids(region, birth_day, male, rng)


def _work_at_start(
    age_years: np.ndarray,
    male: np.ndarray,
    hh_frag: np.ndarray,
    params: WorldParams,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Work type, wage, employment and registration with the employment department.

    Returns (work, wage, employed, registered).
    """
    p = len(age_years)
    work = np.full(p, NO_WORK, dtype=np.int8)
    working_age = (age_years >= 16) & (age_years <= 64)
    draw = rng.random(p)
    migrant_cut = np.where(male, 0.38, 0.22)
    work[working_age & (draw < migrant_cut)] = MIGRANT
    work[working_age & (draw >= migrant_cut) & (draw < migrant_cut + 0.18)] = LOCAL
    work[working_age & (draw >= migrant_cut + 0.18) & (draw < migrant_cut + 0.33)] = SEASONAL
    work[working_age & (draw >= migrant_cut + 0.33) & (draw < migrant_cut + 0.62)] = SELF_EMPLOYED
    base_wage = np.select(
        [work == LOCAL, work == MIGRANT, work == SEASONAL, work == SELF_EMPLOYED],
        [params.wage_local, params.wage_migrant, params.wage_seasonal, params.self_employed_income],
        0.0,
    )
    wage = base_wage * np.exp(
        rng.normal(0, params.wage_sigma, p) - params.fragility_wage_effect * hh_frag
    )
    employed = (work != NO_WORK) & (rng.random(p) > 0.05 + 0.02 * hh_frag.clip(0, None))
    reg_p = np.select(
        [work == LOCAL, work == MIGRANT],
        [params.employment_registered_local, params.employment_registered_migrant],
        params.employment_registered_other,
    )
    registered = working_age & (rng.random(p) < reg_p)
    return work, wage, employed, registered


def _health_at_start(
    age_years: np.ndarray, hh_frag: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Chronic illness (0 none, 1 chronic, 2 serious) and disability grade (0 none, 1-4)."""
    p = len(age_years)
    chronic_p = np.clip(0.01 + 0.004 * np.clip(age_years - 35, 0, None) + 0.02 * hh_frag, 0, 0.6)
    chronic = (rng.random(p) < chronic_p).astype(np.int8)
    chronic[(chronic == 1) & (rng.random(p) < 0.12 + 0.03 * hh_frag.clip(0, None))] = 2
    disability_grade = np.where(
        rng.random(p) < 0.018 + 0.0004 * age_years, rng.integers(1, 5, p), 0
    ).astype(np.int8)
    return chronic, disability_grade


def _households(
    village_of: np.ndarray,
    hh_county: np.ndarray,
    standing: _Standing,
    lone_elderly: np.ndarray,
    start_month: int,
    params: WorldParams,
    rng: np.random.Generator,
) -> Households:
    """Households with their land, livestock, house, and (lone elderly) tekun spells."""
    n = len(village_of)
    former_poor, relocated, fragility = standing.former_poor, standing.relocated, standing.fragility
    tekun = lone_elderly & (rng.random(n) < params.tekun_share_of_lone_elderly)
    house_score = np.clip(rng.beta(6, 2, n) - 0.08 * fragility.clip(0, None), 0.05, 1)
    house_score[relocated] = np.maximum(house_score[relocated], 0.85)
    return Households(
        village=village_of,
        county=hh_county.astype(np.int32),
        former_poor=former_poor,
        relocated=relocated,
        hidden=rng.random(n) < params.hidden_household_share,
        income_checked=former_poor | (rng.random(n) < params.income_check_ordinary_sample),
        fragility=fragility,
        land_mu=np.clip(rng.gamma(3, 2.6, n) * np.where(relocated, 0.4, 1.0), 0, 60),
        livestock=np.round(np.clip(rng.gamma(0.8, 2.0, n), 0, 40), 1),
        coop=rng.random(n) < 0.25 + 0.2 * former_poor,
        house_score=house_score,
        house_grade=grade_of(house_score),
        renovation_due=np.full(n, NULL, dtype=np.int64),
        business_failed_month=np.full(n, NULL, dtype=np.int64),
        income_hist=np.zeros((n, 12)),
        rigid_hist=np.zeros((n, 12)),
        cause_month=np.full((n, N_RISKS), NULL, dtype=np.int64),
        hardship=np.zeros(n, dtype=bool),
        stable_months=np.zeros(n, dtype=np.int16),
        monitored=np.zeros(n, dtype=bool),
        monitored_since=np.full(n, NULL, dtype=np.int64),
        category=np.full(n, -1, dtype=np.int8),
        risk_bits=np.zeros(n, dtype=np.int32),
        source=np.full(n, -1, dtype=np.int8),
        pending_months=np.full(n, -1, dtype=np.int8),
        pending_source=np.full(n, -1, dtype=np.int8),
        assist_program=np.where(tekun, 1, -1).astype(np.int8),
        assist_amount=np.where(tekun, params.tekun_monthly, 0.0),
        assist_start=np.where(tekun, start_month - rng.integers(6, 96, n), NULL).astype(np.int64),
        assist_end_due=np.full(n, NULL, dtype=np.int64),
        tekun=tekun,
    )


def _draw_rows(prob: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One category per row of a probability table."""
    cum = np.cumsum(prob / prob.sum(axis=1, keepdims=True), axis=1)
    return (rng.random(len(prob))[:, None] > cum).sum(axis=1).clip(0, prob.shape[1] - 1)


def grade_of(score: np.ndarray) -> np.ndarray:
    """House safety grade A/B/C/D (0..3) from the latent condition."""
    return np.select([score > 0.7, score > 0.45, score > 0.22], [0, 1, 2], 3).astype(np.int8)


def _stage_for_age(age: np.ndarray, rng: np.random.Generator, params: WorldParams) -> np.ndarray:
    stage = np.full(len(age), -1, dtype=np.int8)
    stage[(age >= 3) & (age <= 5)] = PRESCHOOL
    stage[(age >= 6) & (age <= 11)] = PRIMARY
    stage[(age >= 12) & (age <= 14)] = JUNIOR
    roll = rng.random(len(age))
    upper = (age >= 15) & (age <= 17)
    stage[upper & (roll < params.senior_secondary_entry)] = SENIOR
    voc = (
        upper
        & (roll >= params.senior_secondary_entry)
        & (roll < params.senior_secondary_entry + params.vocational_entry)
    )
    stage[voc] = 4
    stage[(age >= 18) & (age <= 21) & (rng.random(len(age)) < params.higher_entry * 0.6)] = HIGHER
    return stage
