"""Unit and property tests of the generator's building blocks."""

from __future__ import annotations

from datetime import date

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from doudi.idnumber import id_facts, id_problem
from province.params import WorldParams
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
