"""`doudi.months.Month`: the one parser of users' months, month arithmetic, the refusals
of future and undelivered months, and the warehouse's latest delivered month."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from doudi.errors import UserError
from doudi.months import Month, require_available, require_not_future
from doudi.warehouse import latest_delivered_month, partition_dir
from features.asof import add_months, month_end, month_index, month_range

GOOD = [
    ("2025-12", date(2025, 12, 31)),
    ("2024-02", date(2024, 2, 29)),  # leap year
    ("2023-02", date(2023, 2, 28)),
    ("1970-01", date(1970, 1, 31)),
    ("1900-01", date(1900, 1, 31)),
    ("2999-12", date(2999, 12, 31)),
]
# input -> what the one-line error says
BAD = [
    ("2025-12-15", "--as-of 2025-12-15: not a month; use YYYY-MM (2025-12)"),
    ("0000-01", "--as-of 0000-01: year 0000 is outside 1900-2999"),
    ("1899-12", "--as-of 1899-12: year 1899 is outside 1900-2999"),
    ("3000-01", "--as-of 3000-01: year 3000 is outside 1900-2999"),
    ("2025-13", "--as-of 2025-13: month 13 is not 01-12; use YYYY-MM"),
    ("2025-00", "--as-of 2025-00: month 00 is not 01-12; use YYYY-MM"),
    ("2025/12", "--as-of 2025/12: not a month; use YYYY-MM"),
    ("2025-1", "--as-of 2025-1: not a month; use YYYY-MM"),
    ("25-12", "--as-of 25-12: not a month; use YYYY-MM"),
    ("202512", "--as-of 202512: not a month; use YYYY-MM"),
    ("December", "--as-of December: not a month; use YYYY-MM"),
    ("", "--as-of '': not a month; use YYYY-MM"),
    (" 2025-12", "--as-of ' 2025-12': not a month; use YYYY-MM"),
    ("2025-12\n", "--as-of '2025-12\\n': not a month; use YYYY-MM"),
    ("２０２５-12", "--as-of ２０２５-12: not a month; use YYYY-MM"),  # full-width digits
    # an ID number typed into the wrong field is never repeated back
    ("620121198005171234", "--as-of (a value of 18 characters): not a month; use YYYY-MM"),
]


@pytest.mark.parametrize(("text", "end"), GOOD)
def test_good_months_parse_to_their_month_end(text: str, end: date) -> None:
    month = Month.parse(text)
    assert month.end == end and str(month) == text
    assert month == Month.of(end) == Month.of(end.replace(day=1))


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_months_are_one_line_user_errors(text: str, message: str) -> None:
    with pytest.raises(UserError) as err:
        Month.parse(text)
    assert str(err.value) == message
    assert "\n" not in str(err.value)


def test_a_date_is_a_month_only_where_documented() -> None:
    assert Month.parse("2025-12-15", what="as_of", allow_date=True) == Month.parse("2025-12")
    with pytest.raises(UserError, match=r"^as_of 2025-02-30: no such day"):
        Month.parse("2025-02-30", what="as_of", allow_date=True)
    with pytest.raises(UserError, match=r"^as_of 0000-01-01: year 0000"):
        Month.parse("0000-01-01", what="as_of", allow_date=True)
    with pytest.raises(UserError, match=r"^--from 2025-12-15: not a month"):
        Month.parse("2025-12-15", what="--from")
    with pytest.raises(UserError, match="got a int"):
        Month.parse(202512)  # type: ignore[arg-type]


def test_arithmetic_order_and_views() -> None:
    dec = Month.parse("2025-12")
    assert dec + 1 == Month.parse("2026-01") and 1 + dec == dec + 1
    assert dec - 12 == Month.parse("2024-12") and (dec + 7) - dec == 7
    assert dec.index == (2025 - 1970) * 12 + 11 and Month(0) == Month.parse("1970-01")
    assert (dec.year, dec.month, dec.start) == (2025, 12, date(2025, 12, 1))
    assert sorted([dec + 1, dec, dec - 1]) == [dec - 1, dec, dec + 1]
    assert len({dec, Month.parse("2025-12"), dec + 1}) == 2
    assert repr(dec) == "Month('2025-12')" and f"{dec}" == "2025-12"
    assert dec.through(dec + 2) == [dec, dec + 1, dec + 2] and dec.through(dec - 1) == []
    assert Month.today() == Month.of(date.today())
    with pytest.raises(TypeError):
        dec + 1.5  # type: ignore[operator]
    with pytest.raises(TypeError):
        dec < "2026-01"  # type: ignore[operator]  # noqa: B015
    with pytest.raises(AttributeError):
        dec.index = 3  # type: ignore[misc]  # frozen


@given(st.integers(min_value=-840, max_value=12_000), st.integers(-600, 600))
def test_months_round_trip_and_add(index: int, k: int) -> None:
    month = Month(index)
    assert Month.parse(str(month)) == month
    assert Month.of(month.end) == Month.of(month.start) == month
    assert month.end + timedelta(days=1) == (month + 1).start  # .end is the last day
    assert (month + k) - k == month and (month + k) - month == k
    assert (month < month + k) == (k > 0)
    # features' day arithmetic agrees with Month
    assert month_end(month.start) == month_end(month) == month.end
    assert month_index(month.end) == index
    assert add_months(month.end, k) == (month + k).end


def test_month_range() -> None:
    first, last = Month.parse("2024-11"), Month.parse("2025-02")
    assert month_range(first, last) == [date(2024, 11, 30), date(2024, 12, 31),
                                        date(2025, 1, 31), date(2025, 2, 28)]
    with pytest.raises(UserError, match="--from 2025-02 is after the as-of month 2024-11"):
        month_range(last, first)


# -- refusals ---------------------------------------------------------------------------------
NOW = Month.parse("2026-12")
LATEST = Month.parse("2025-12")


def test_a_future_month_is_refused_without_override() -> None:
    for allow in (False, True):
        with pytest.raises(UserError) as err:
            require_available(Month.parse("2027-01"), LATEST, today=NOW, allow_undelivered=allow)
        assert str(err.value) == ("--as-of 2027-01 is in the future (this month is 2026-12; "
                                  "the latest delivered month is 2025-12)")
    with pytest.raises(UserError, match="is in the future"):
        require_not_future(Month.today() + 1)
    assert require_not_future(Month.today()) == Month.today()


def test_a_month_after_the_latest_delivery_needs_the_flag() -> None:
    month = Month.parse("2026-03")
    with pytest.raises(UserError) as err:
        require_available(month, LATEST, today=NOW)
    assert str(err.value) == (
        "--as-of 2026-03 is after the latest delivered month 2025-12: ingest 2026-03's "
        "delivery first, or pass --allow-undelivered to run on data up to 2025-12")
    assert require_available(month, LATEST, today=NOW, allow_undelivered=True) == month
    assert require_available(LATEST, LATEST, today=NOW) == LATEST
    assert require_available(LATEST - 30, LATEST, today=NOW) == LATEST - 30
    with pytest.raises(UserError, match="the warehouse is empty; run `doudi ingest` first"):
        require_available(LATEST, None, today=NOW)


def test_latest_delivered_month_is_the_newest_partition_of_any_feed(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse"
    assert latest_delivered_month(warehouse) is None
    for feed, county, month in [("households", "620102", "2025-10"),
                                ("medical", "620103", "2025-12"),
                                ("persons", "620102", "2025-11")]:
        (warehouse / partition_dir(feed, county, month)).mkdir(parents=True)
    (warehouse / "medical" / "county=620103" / "reported_month=garbage").mkdir()
    (warehouse / "medical" / "county=620103" / "reported_month=2099-01").touch()  # a file
    assert latest_delivered_month(warehouse) == Month.parse("2025-12")
