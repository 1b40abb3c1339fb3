from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from doudi.idnumber import check_char, id_facts, id_problem, make_id, mask_id

# The example number of GB 11643-1999's explanatory notes.
KNOWN_VALID = ["11010519491231002X"]


@pytest.mark.parametrize("value", KNOWN_VALID)
def test_published_examples_are_valid(value: str) -> None:
    assert id_problem(value) is None


def test_check_char_by_hand() -> None:
    # weighted digit sum 167; 167 % 11 = 2 -> 'X' (GB 11643-1999's worked example)
    assert check_char("11010519491231002") == "X"


def test_wrong_check_char_is_named() -> None:
    assert id_problem("110105194912310021") == "id_check_char"


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("11010519491231002", "id_format"),  # 17 characters
        ("1101051949123100x2", "id_format"),  # X only as check character
        ("01010519491231002X", "id_format"),  # region cannot start with 0
        ("110105194902300021", "id_birth_date"),  # 30 February
        ("110105180001010011", "id_birth_date"),  # before 1890
    ],
)
def test_shape_and_birth_date_rules(value: str, rule: str) -> None:
    assert id_problem(value) == rule


def test_future_birth_is_implausible() -> None:
    v = make_id("620102", date(2030, 1, 1), 1)
    assert id_problem(v, today=date(2026, 11, 28)) == "id_birth_date"
    assert id_problem(v) is None


@given(
    region=st.integers(110000, 829999).map(str),
    birth=st.dates(date(1900, 1, 1), date(2026, 12, 31)),
    seq=st.integers(0, 999),
)
def test_made_ids_round_trip(region: str, birth: date, seq: int) -> None:
    value = make_id(region, birth, seq)
    assert id_problem(value) is None
    facts = id_facts(value)
    assert facts.birth_date == birth
    assert facts.sex == ("M" if seq % 2 else "F")
    assert facts.region == region


@given(st.integers(0, 16), st.sampled_from("0123456789"))
def test_any_single_digit_change_is_detected(pos: int, digit: str) -> None:
    value = make_id("620102", date(1980, 5, 17), 123)
    changed = value[:pos] + digit + value[pos + 1 :]
    if changed != value:
        assert id_problem(changed) is not None


def test_mask_keeps_region_and_last_four() -> None:
    assert mask_id("62010219800517123X") == "620102********123X"
