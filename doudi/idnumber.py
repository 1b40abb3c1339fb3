"""Resident identity numbers (GB 11643-1999): check character, birth date and sex."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"  # ISO 7064 MOD 11-2: index is sum % 11
_SHAPE = re.compile(r"^[1-9]\d{5}(\d{8})\d{3}[0-9X]$")
EARLIEST_BIRTH = date(1890, 1, 1)


def check_char(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character for the first 17 digits."""
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def make_id(region: str, birth: date, sequence: int) -> str:
    """A valid ID number; `sequence` (0-999) odd for men, even for women."""
    body = f"{region}{birth:%Y%m%d}{sequence:03d}"
    return body + check_char(body)


@dataclass(frozen=True)
class IdFacts:
    birth_date: date
    sex: str  # "M" or "F"
    region: str


def id_problem(value: str, *, today: date | None = None) -> str | None:
    """None when `value` is a valid ID number, else the rule it breaks.

    The region part is not checked against today's code table: old codes stay valid.
    """
    if not _SHAPE.match(value):
        return "id_format"
    try:
        birth = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return "id_birth_date"
    if birth < EARLIEST_BIRTH or (today is not None and birth > today):
        return "id_birth_date"
    if check_char(value[:17]) != value[17]:
        return "id_check_char"
    return None


def id_facts(value: str) -> IdFacts:
    """Birth date, sex and region of a valid ID number."""
    birth = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    return IdFacts(birth, "M" if int(value[16]) % 2 else "F", value[:6])


def mask_id(value: str) -> str:
    """620102********1234: region and last four kept, for caseworker output."""
    return value[:6] + "*" * (len(value) - 10) + value[-4:]
