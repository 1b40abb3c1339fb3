"""What comes into the alert store: new alerts with their reasons, caseworkers' verdicts.

Each input checks itself (`problems` / `problem`) before the store writes anything.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from doudi.contract import RISK_TYPES, township_of
from doudi.idnumber import id_problem
from doudi.settings import MAX_REASONS_LIMIT
from serving import routing
from serving.store.models import SOURCES, TIERS, Verdict

DEFAULT_SCALE = "probability points"
# An alert keeps every reason `settings.max_reasons` allows, at most this many.
MAX_REASONS = MAX_REASONS_LIMIT
_ID_LIKE = re.compile(r"(?<![0-9])[1-9][0-9]{16}[0-9Xx](?![0-9])")


def contains_id_number(text: str) -> bool:
    """Whether `text` holds a valid resident identity number (GB 11643)."""
    return any(id_problem(m.group().upper()) is None for m in _ID_LIKE.finditer(text))


@dataclass(frozen=True)
class Reason:
    """One explained reason shown with an alert (rank 1 = strongest)."""

    rank: int
    group_key: str
    text_zh: str
    contribution: float
    scale: str = DEFAULT_SCALE


@dataclass(frozen=True)
class NewAlert:
    """What scoring hands the store for one household.

    `departments` defaults to the routing of `risk_types`; `county_code` and
    the township code are derived from the 12-digit `village_code`.
    """

    household_key: str
    village_code: str
    as_of: date
    model_version: str
    tier: str
    risk: float | None = None
    risk_types: Sequence[str] = ()
    departments: Sequence[str] | None = None
    rule_triggers: Sequence[str] = ()
    source: str = "model"
    reasons: Sequence[Reason] = ()

    @property
    def county_code(self) -> str:
        return self.village_code[:6]

    @property
    def township_code(self) -> str:
        return township_of(self.village_code)

    def problems(self) -> list[str]:
        """Rules this alert breaks (empty when it may be stored)."""
        out = []
        key = self.household_key
        if not key or len(key) > 64:
            out.append("household_key must be a pseudonym of 1-64 characters")
        elif id_problem(key.upper()) is None:
            out.append("household_key is a resident ID number; pass the pseudonym")
        if not (len(self.village_code) == 12 and self.village_code.isdigit()):
            out.append("village_code must be 12 digits")
        if not self.model_version or len(self.model_version) > 64:
            out.append("model_version must be 1-64 characters")
        if self.tier not in TIERS:
            out.append(f"tier must be one of {', '.join(TIERS)}")
        if self.source not in SOURCES:
            out.append(f"source must be one of {', '.join(SOURCES)}")
        if self.risk is None and self.source != "rules":
            out.append("risk (calibrated probability) is required unless source is 'rules'")
        if self.risk is not None and not 0.0 <= self.risk <= 1.0:
            out.append("risk must be a probability in [0, 1]")
        unknown = [t for t in self.risk_types if t not in RISK_TYPES]
        if unknown:
            out.append(f"unknown risk types {unknown}; known: {', '.join(RISK_TYPES)}")
        bad_departments = [d for d in self.departments or () if d not in routing.DEPARTMENTS]
        if bad_departments:
            out.append(f"unknown departments {bad_departments}")
        ranks = [r.rank for r in self.reasons]
        if len(ranks) != len(set(ranks)) or not all(1 <= r <= MAX_REASONS for r in ranks):
            out.append(f"reason ranks must be distinct, 1-{MAX_REASONS}")
        return out

    def routed_departments(self) -> list[str]:
        if self.departments is not None:
            return list(self.departments)
        return list(routing.departments_for(self.risk_types))


@dataclass(frozen=True)
class VerdictInput:
    """A caseworker's finding for one alert, as it arrives (file row or API call)."""

    alert_id: int
    verdict: str  # 'confirmed' or 'dismissed'
    risk_types: tuple[str, ...]  # confirmed hardship types; empty when dismissed
    visited_on: date
    caseworker: str  # staff code
    note: str | None = None

    def problem(self) -> str | None:
        """The first rule this finding breaks, or None."""
        if self.verdict not in ("confirmed", "dismissed"):
            return f"verdict must be 'confirmed' or 'dismissed', not {self.verdict!r}"
        unknown = [t for t in self.risk_types if t not in RISK_TYPES]
        if unknown:
            return f"unknown risk types {unknown}; known: {', '.join(RISK_TYPES)}"
        if self.verdict == "confirmed" and not self.risk_types:
            return "a confirmed verdict names the hardship types found"
        if self.verdict == "dismissed" and self.risk_types:
            return "a dismissed verdict names no hardship types"
        if not self.caseworker or len(self.caseworker) > 32:
            return "caseworker must be a staff code of 1-32 characters"
        if contains_id_number(self.caseworker):
            return "caseworker must be a staff code, not a resident ID number"
        if self.note and contains_id_number(self.note):
            return "note holds an identity number; remove it"
        return None

    def same_as(self, stored: Verdict) -> bool:
        return (
            stored.verdict == self.verdict
            and sorted(stored.risk_types) == sorted(self.risk_types)
            and stored.visited_on == self.visited_on
            and stored.caseworker == self.caseworker
            and (stored.note or None) == (self.note or None)
        )
