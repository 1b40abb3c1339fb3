"""What the alert store answers: reports of what it did, read-only snapshots, its errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

import pandas as pd

from serving.store.inputs import Reason
from serving.store.models import Alert


class SkipReason(StrEnum):
    ALREADY_STORED = "already_stored"  # same household, as_of and model version: idempotent
    OPEN_ALERT = "open_alert"  # the household's chain is still open
    MONITORED = "monitored"  # already under monitoring: out of scope for alerts
    REPEATED_IN_BATCH = "repeated_in_batch"  # the batch names the household twice


@dataclass(frozen=True)
class Skipped:
    household_key: str
    as_of: date
    model_version: str
    reason: SkipReason
    existing_alert_id: int | None = None


@dataclass(frozen=True)
class AddReport:
    """What `add_alerts` created and what it skipped, and why."""

    created: tuple[int, ...]
    skipped: tuple[Skipped, ...]

    def skipped_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.skipped:
            counts[s.reason.value] = counts.get(s.reason.value, 0) + 1
        return counts

    def skipped_frame(self) -> pd.DataFrame:
        columns = ["household_key", "as_of", "model_version", "reason", "existing_alert_id"]
        rows = [
            (s.household_key, s.as_of, s.model_version, s.reason.value, s.existing_alert_id)
            for s in self.skipped
        ]
        return pd.DataFrame(rows, columns=columns)


@dataclass(frozen=True)
class ReferralOutcome:
    """Referrals `refer` created, and departments skipped because they already help."""

    alert_id: int
    referred: tuple[str, ...]
    already_assisting: tuple[str, ...]


@dataclass(frozen=True)
class HistoryEntry:
    from_status: str | None
    to_status: str
    at: datetime
    actor: str
    note: str | None


@dataclass(frozen=True)
class VerdictRecord:
    verdict: str
    risk_types: tuple[str, ...]
    visited_on: date
    caseworker: str
    note: str | None


@dataclass(frozen=True)
class ReferralRecord:
    department: str
    programme: str | None
    status: str
    referred_on: date


@dataclass(frozen=True)
class AlertRecord:
    """A read-only snapshot of one alert with its reasons, history, verdict and referrals."""

    id: int
    household_key: str
    county_code: str
    township_code: str
    village_code: str
    as_of: date
    model_version: str
    risk: float | None
    tier: str
    risk_types: tuple[str, ...]
    departments: tuple[str, ...]
    rule_triggers: tuple[str, ...]
    source: str
    status: str
    created_at: datetime
    updated_at: datetime
    reasons: tuple[Reason, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    verdict: VerdictRecord | None = None
    referrals: tuple[ReferralRecord, ...] = field(default=())


def record_of(a: Alert) -> AlertRecord:
    """The snapshot of a loaded alert (reasons, history, verdict and referrals loaded)."""
    v = a.verdict
    return AlertRecord(
        id=a.id,
        household_key=a.household_key,
        county_code=a.county_code,
        township_code=a.township_code,
        village_code=a.village_code,
        as_of=a.as_of,
        model_version=a.model_version,
        risk=a.risk,
        tier=a.tier,
        risk_types=tuple(a.risk_types),
        departments=tuple(a.departments),
        rule_triggers=tuple(a.rule_triggers),
        source=a.source,
        status=a.status,
        created_at=a.created_at,
        updated_at=a.updated_at,
        reasons=tuple(
            Reason(r.rank, r.group_key, r.text_zh, r.contribution, r.scale) for r in a.reasons
        ),
        history=tuple(
            HistoryEntry(h.from_status, h.to_status, h.at, h.actor, h.note) for h in a.history
        ),
        verdict=None
        if v is None
        else VerdictRecord(v.verdict, tuple(v.risk_types), v.visited_on, v.caseworker, v.note),
        referrals=tuple(
            ReferralRecord(r.department, r.programme, r.status, r.referred_on) for r in a.referrals
        ),
    )


class AlertNotFoundError(KeyError):
    """No alert with that id."""


class VerdictConflictError(ValueError):
    """A different verdict is already recorded for the alert."""
