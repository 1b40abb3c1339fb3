"""Calendar months: the one `Month` type every stage takes, parsed once at the edge.

Users name months as `YYYY-MM` (`--as-of`, `--from`, the API's `as_of`); `Month.parse`
is the only parser. A month is its index (months since 1970-01): ordered, hashable,
`+`/`-` whole months; `.end` is the month-end date that "as of the month" means
(rows reported by that day count).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date
from typing import overload

from doudi.errors import UserError

# ASCII digits only (`\d` would also take full-width ２０２５).
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})", re.ASCII)
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", re.ASCII)
# Months a user may name: anything earlier or later is a typo (0000-01, 20250-1...).
MIN_YEAR, MAX_YEAR = 1900, 2999


def _shown(value: object) -> str:
    """A value fit to repeat in an error, unless it could be an identifier (never echoed)."""
    text = str(value)
    if len(text) > 12 or sum(c.isdigit() for c in text) > 8:
        return f"(a value of {len(text)} characters)"
    return text if text and text.isprintable() and text.strip() == text else repr(text)


@dataclass(frozen=True, order=True, slots=True)
class Month:
    """One calendar month; `index` counts months since 1970-01 (negative before)."""

    index: int

    # -- construction ---------------------------------------------------------------
    @classmethod
    def of(cls, day: date) -> Month:
        """The month a date falls in."""
        return cls((day.year - 1970) * 12 + day.month - 1)

    @classmethod
    def from_ym(cls, year: int, month: int) -> Month:
        if not 1 <= month <= 12:
            raise ValueError(f"month {month} is not 1-12")
        return cls((year - 1970) * 12 + month - 1)

    @classmethod
    def today(cls) -> Month:
        """The current calendar month (local clock)."""
        return cls.of(date.today())

    @classmethod
    def parse(cls, text: str, *, what: str = "--as-of", allow_date: bool = False) -> Month:
        """`YYYY-MM` -> Month; anything else is a one-line `UserError` naming `what`.

        With `allow_date` (only where a date is documented, e.g. the API's `as_of`)
        a `YYYY-MM-DD` is taken as its month.
        """
        if not isinstance(text, str):
            raise UserError(f"{what}: not a month; use YYYY-MM (got a {type(text).__name__})")
        day = _DATE.fullmatch(text)
        found = _MONTH.fullmatch(text) or day
        if found is None:
            raise UserError(f"{what} {_shown(text)}: not a month; use YYYY-MM")
        year, month = int(found.group(1)), int(found.group(2))
        if not 1 <= month <= 12:
            raise UserError(f"{what} {_shown(text)}: month {month:02d} is not 01-12; use YYYY-MM")
        if not MIN_YEAR <= year <= MAX_YEAR:
            raise UserError(
                f"{what} {_shown(text)}: year {year:04d} is outside {MIN_YEAR}-{MAX_YEAR}"
            )
        if day is not None:
            if not allow_date:
                raise UserError(
                    f"{what} {_shown(text)}: not a month; use YYYY-MM ({year:04d}-{month:02d})"
                )
            try:
                date(year, month, int(day.group(3)))
            except ValueError:
                raise UserError(f"{what} {_shown(text)}: no such day; use YYYY-MM") from None
        return cls.from_ym(year, month)

    # -- views -----------------------------------------------------------------------
    @property
    def year(self) -> int:
        return 1970 + self.index // 12

    @property
    def month(self) -> int:
        return self.index % 12 + 1

    @property
    def start(self) -> date:
        """The first day of the month."""
        return date(self.year, self.month, 1)

    @property
    def end(self) -> date:
        """The last day of the month (what "as of the month" means)."""
        year, month = self.year, self.month
        return date(year, month, calendar.monthrange(year, month)[1])

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def __repr__(self) -> str:
        return f"Month('{self}')"

    # -- arithmetic ------------------------------------------------------------------
    def __add__(self, months: int) -> Month:
        if isinstance(months, bool) or not isinstance(months, int):
            return NotImplemented
        return Month(self.index + months)

    __radd__ = __add__

    @overload
    def __sub__(self, other: int) -> Month: ...
    @overload
    def __sub__(self, other: Month) -> int: ...
    def __sub__(self, other: int | Month) -> Month | int:
        """`month - n` is n months earlier; `month - other` the months between them."""
        if isinstance(other, Month):
            return self.index - other.index
        if isinstance(other, bool) or not isinstance(other, int):
            return NotImplemented
        return Month(self.index - other)

    def through(self, last: Month) -> list[Month]:
        """Every month from this one to `last`, inclusive (empty when `last` is earlier)."""
        return [Month(i) for i in range(self.index, last.index + 1)]


def require_not_future(
    month: Month, *, what: str = "--as-of", latest: Month | None = None,
    today: Month | None = None,
) -> Month:
    """`month`, unless it is after this month (`Month.today()`): no override exists."""
    now = today or Month.today()
    if month > now:
        delivered = f"; the latest delivered month is {latest}" if latest else ""
        raise UserError(f"{what} {month} is in the future (this month is {now}{delivered})")
    return month


def require_available(
    month: Month,
    latest: Month | None,
    *,
    what: str = "--as-of",
    allow_undelivered: bool = False,
    today: Month | None = None,
) -> Month:
    """`month`, unless it is in the future or after the latest delivered month `latest`.

    A future month is always refused; a month after the last delivery only without
    `allow_undelivered` (a deliberate run on the data delivered so far). The one-line
    `UserError`s are documented for operators in docs/operations.md.
    """
    require_not_future(month, what=what, latest=latest, today=today)
    if latest is None:
        raise UserError(f"{what} {month}: the warehouse is empty; run `doudi ingest` first")
    if month > latest and not allow_undelivered:
        raise UserError(
            f"{what} {month} is after the latest delivered month {latest}: ingest {month}'s "
            f"delivery first, or pass --allow-undelivered to run on data up to {latest}"
        )
    return month
