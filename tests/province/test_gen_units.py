"""Unit and property tests of the generator's building blocks."""

from __future__ import annotations

from datetime import date

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from doudi import contract
from doudi.idnumber import id_facts, id_problem
from province import timeutil
from province.dynamics import DROUGHT, HAZARD_BY_MONTH, HAZARD_SEASON, step
from province.params import WorldParams
from province.records import Records
from province.world import build_world, make_ids


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([620102, 621102, 622921, 623027]),
            st.dates(date(1920, 1, 1), date(2024, 12, 31)),
            st.booleans(),
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(0, 2**32 - 1),
)
# found by CI: two of one (region, birth date) group drew offsets 2 apart and met
@example(people=[(621102, date(2000, 1, 1), True), (620102, date(2000, 1, 1), False),
                 (620102, date(2000, 1, 1), False), (621102, date(2000, 1, 1), False),
                 (621102, date(2000, 1, 1), True)], seed=74427250)
def test_make_ids_valid_unique_and_consistent(people, seed) -> None:  # type: ignore[no-untyped-def]
    region = np.array([p[0] for p in people])
    birth = np.array([(p[1] - date(1970, 1, 1)).days for p in people])
    male = np.array([p[2] for p in people])
    ids = [x.decode() for x in make_ids(region, birth, male, np.random.default_rng(seed))]
    assert len(set(ids)) == len(ids)
    for value, (reg, born, is_male) in zip(ids, people, strict=True):
        assert id_problem(value) is None
        facts = id_facts(value)
        assert (facts.region, facts.birth_date, facts.sex) == (
            str(reg),
            born,
            "M" if is_male else "F",
        )


def test_select_and_tile_keep_people_with_their_households() -> None:
    state, _ = build_world(200, 600, WorldParams(), np.random.default_rng(1))
    chosen = np.array([3, 10, 57, 120])
    sub = state.select(chosen)
    expected = np.flatnonzero(np.isin(state.persons.hh, chosen))
    assert np.array_equal(sub.persons.birth_day, state.persons.birth_day[expected])
    assert np.array_equal(chosen[sub.persons.hh], state.persons.hh[expected])
    tiled = sub.tile(3)
    n = len(chosen)
    assert len(tiled.households.village) == 3 * n
    replica = tiled.persons.hh // n
    assert np.array_equal(np.bincount(replica), [len(expected)] * 3)
    assert np.array_equal(tiled.persons.hh % n, np.tile(sub.persons.hh, 3))
    assert np.array_equal(
        tiled.households.county // len(state.counties.proneness), np.repeat(np.arange(3), n)
    )


def test_hazard_seasons_follow_the_contract_and_each_month_sums_to_one() -> None:
    assert list(HAZARD_SEASON) == list(contract.HAZARD)
    assert HAZARD_BY_MONTH.shape == (12, len(contract.HAZARD))
    # the draw compares one uniform number with the cumulative weights of the month
    assert np.allclose(HAZARD_BY_MONTH.sum(axis=1), 1.0)
    assert not HAZARD_BY_MONTH[:, DROUGHT].any()  # droughts come from drought years
    flood = list(contract.HAZARD).index("flood")
    assert HAZARD_BY_MONTH[:, flood].argmax() + 1 == 7  # floods peak in the summer


def test_severe_disability_is_grade_one_or_two() -> None:
    state, _ = build_world(30, 600, WorldParams(), np.random.default_rng(1))
    p = state.persons
    p.disability_grade = np.resize(np.array([0, 1, 2, 3, 4], dtype=np.int8), len(p.hh))
    expected = np.resize([False, True, True, False, False], len(p.hh))
    assert np.array_equal(p.severely_disabled(), expected)


def test_every_feed_is_written_with_exactly_its_contract_columns() -> None:
    """From wherever the generator writes a feed's rows (history, roster, corrections,
    monthly flows), they carry the contract's columns (vault-only ones are filled in when
    written) plus the county used for outages."""
    params = WorldParams(disaster_per_county_month=0.5)  # disasters even in a tiny world
    first = timeutil.parse_month("2023-06")
    state, registry = build_world(150, first, params, np.random.default_rng(2))
    roster_day = int(timeutil.first_day(first + 1))
    records = Records(registry, params, np.random.default_rng(3), roster_day)
    records.history(state, first)
    records.plan_divisions(first + 1, first + 14)
    rng = np.random.default_rng(4)
    for m in range(first, first + 15):  # every calendar month; the roster in the second
        if m == first + 1:
            records.roster(state)
        records.month(state, step(state, m, rng, params, 6000.0), flows=m > first)
    assert set(records.pending) == set(contract.FEED_NAMES)
    for feed, batches in records.pending.items():
        expected = {c.name for c in contract.feed(feed).columns} | {"_county"}
        for batch in batches:
            assert set(batch) == expected, feed
