"""Month and day arithmetic on integers: months since 1970-01, days since 1970-01-01."""

from __future__ import annotations

import numpy as np

from doudi.errors import UserError


def parse_month(text: str) -> int:
    """'2023-01' -> months since 1970-01 (UserError when malformed)."""
    try:
        year, month = (int(part) for part in text.split("-"))
    except ValueError:
        raise UserError(f"--start must look like YYYY-MM, got {text!r}") from None
    if not (1 <= month <= 12 and 1990 <= year <= 2100):
        raise UserError(f"--start must look like YYYY-MM, got {text!r}")
    return (year - 1970) * 12 + month - 1


def month_text(month: int) -> str:
    return f"{1970 + month // 12:04d}-{month % 12 + 1:02d}"


def year_of(month: int | np.ndarray) -> int | np.ndarray:
    return 1970 + np.asarray(month) // 12 if isinstance(month, np.ndarray) else 1970 + month // 12


def calendar_month(month: int) -> int:
    """1..12."""
    return month % 12 + 1


def first_day(month: int | np.ndarray) -> np.ndarray:
    """Day number of the month's first day (vectorised)."""
    m = np.asarray(month, dtype=np.int64).astype("datetime64[M]")
    return m.astype("datetime64[D]").astype(np.int64)


def last_day(month: int | np.ndarray) -> np.ndarray:
    return first_day(np.asarray(month, dtype=np.int64) + 1) - 1


def month_of_day(day: np.ndarray) -> np.ndarray:
    return (
        np.asarray(day, dtype=np.int64)
        .astype("datetime64[D]")
        .astype("datetime64[M]")
        .astype(np.int64)
    )


def random_day_in(month: np.ndarray | int, rng: np.random.Generator, size: int) -> np.ndarray:
    """A uniformly random day inside each month."""
    start = first_day(month)
    length = last_day(month) - start + 1
    return start + (rng.random(size) * length).astype(np.int64)
