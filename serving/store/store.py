"""The alert store: one chain of help per household, from score to closure.

`open_store()` migrates the database to the newest schema and returns an
`AlertStore`. Scoring adds alerts (`add_alerts`), the export dispatches them
(`record_export`), caseworkers' verdicts come back (`record_verdict`, or
`serving.store.feedback.import_feedback`), confirmed hardship is referred to
the departments that help (`refer`) and the chain ends with `close`.
Every status change is checked against the lifecycle and written to the history.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine, create_engine, event, insert, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from doudi.contract import RISK_TYPES
from doudi.idnumber import id_problem
from doudi.settings import Settings, get_settings
from serving import routing
from serving.store import schema
from serving.store.lifecycle import OPEN_STATUSES, Status, check_transition
from serving.store.models import (
    SOURCES,
    TIERS,
    Alert,
    AlertReason,
    ExportAudit,
    Referral,
    StatusChange,
    Verdict,
)

DEFAULT_SCALE = "probability points"
MAX_REASONS = 4
# Keeps IN (...) lists well under SQLite's and PostgreSQL's parameter limits.
_CHUNK = 500
_ID_LIKE = re.compile(r"(?<![0-9])[1-9][0-9]{16}[0-9Xx](?![0-9])")


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def contains_id_number(text: str) -> bool:
    """Whether `text` holds a valid resident identity number (GB 11643)."""
    return any(id_problem(m.group().upper()) is None for m in _ID_LIKE.finditer(text))


def default_url(settings: Settings | None = None) -> str:
    """`settings.database_url`, else SQLite at `<home>/alerts.db`."""
    settings = settings or get_settings()
    if settings.database_url:
        return settings.database_url
    return f"sqlite:///{settings.home / 'alerts.db'}"


def normalise_url(url: str) -> str:
    """Use psycopg (v3) for PostgreSQL URLs that name no driver (psycopg2 is not installed)."""
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg://" + url[len(bare) :]
    return url


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets its folder created and foreign keys enforced."""
    url = normalise_url(url)
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)

        @event.listens_for(engine, "connect")
        def _foreign_keys_on(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


def open_store(
    url: str | None = None,
    *,
    settings: Settings | None = None,
    clock: Callable[[], datetime] = _utcnow,
) -> AlertStore:
    """Open (and migrate to the newest schema) the alert store at `url` or the default."""
    engine = make_engine(url or default_url(settings))
    schema.upgrade(engine)
    return AlertStore(engine, clock=clock)


# -- inputs and reports ------------------------------------------------------


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
        return self.village_code[:9]

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


def _record(a: Alert) -> AlertRecord:
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


# -- the store ---------------------------------------------------------------


class AlertStore:
    """Alerts and their chain of help in a SQL database (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.engine = engine
        self._clock = clock
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def __enter__(self) -> AlertStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.dispose()

    def dispose(self) -> None:
        """Release the database connections (the store is unusable afterwards)."""
        self.engine.dispose()

    def now(self) -> datetime:
        return self._clock()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        with self._sessions.begin() as session:
            yield session

    # -- adding --------------------------------------------------------------

    def add_alerts(
        self,
        alerts: Iterable[NewAlert],
        *,
        monitored: Collection[str] = frozenset(),
        actor: str = "doudi score",
    ) -> AddReport:
        """Store new alerts, one open chain per household; report what was skipped and why.

        Skipped: the same (household, as_of, model_version) already stored
        (so re-running is idempotent), a household whose alert is not closed, a
        household in `monitored` (under monitoring, computed by the caller from
        the warehouse) and a household named twice in the batch.
        """
        batch = list(alerts)
        for i, alert in enumerate(batch):
            problems = alert.problems()
            if problems:
                raise ValueError(f"alert #{i} of the batch: {'; '.join(problems)}")
        monitored_keys = frozenset(monitored)
        now = self._clock()
        with self.transaction() as session:
            stored, open_alert = self._existing(session, {a.household_key for a in batch})
            created_keys: set[str] = set()
            to_create: list[NewAlert] = []
            skipped: list[Skipped] = []

            def skip(a: NewAlert, reason: SkipReason, existing: int | None = None) -> None:
                skipped.append(Skipped(a.household_key, a.as_of, a.model_version, reason, existing))

            for a in batch:
                triple = (a.household_key, a.as_of, a.model_version)
                if triple in stored:
                    skip(a, SkipReason.ALREADY_STORED, stored[triple])
                elif a.household_key in created_keys:
                    skip(a, SkipReason.REPEATED_IN_BATCH)
                elif a.household_key in open_alert:
                    skip(a, SkipReason.OPEN_ALERT, open_alert[a.household_key])
                elif a.household_key in monitored_keys:
                    skip(a, SkipReason.MONITORED)
                else:
                    created_keys.add(a.household_key)
                    to_create.append(a)
            ids = self._insert(session, to_create, now=now, actor=actor)
        return AddReport(created=tuple(ids), skipped=tuple(skipped))

    @staticmethod
    def _existing(
        session: Session, keys: set[str]
    ) -> tuple[dict[tuple[str, date, str], int], dict[str, int]]:
        stored: dict[tuple[str, date, str], int] = {}
        open_alert: dict[str, int] = {}
        for chunk in _chunks(sorted(keys)):
            rows = session.execute(
                select(
                    Alert.id, Alert.household_key, Alert.as_of, Alert.model_version, Alert.status
                ).where(Alert.household_key.in_(chunk))
            )
            for alert_id, key, as_of, version, status in rows:
                stored[(key, as_of, version)] = alert_id
                if status in OPEN_STATUSES:
                    open_alert[key] = alert_id
        return stored, open_alert

    @staticmethod
    def _insert(
        session: Session, alerts: list[NewAlert], *, now: datetime, actor: str
    ) -> list[int]:
        if not alerts:
            return []
        rows = [
            {
                "household_key": a.household_key,
                "county_code": a.county_code,
                "township_code": a.township_code,
                "village_code": a.village_code,
                "as_of": a.as_of,
                "model_version": a.model_version,
                "risk": a.risk,
                "tier": a.tier,
                "risk_types": list(a.risk_types),
                "departments": a.routed_departments(),
                "rule_triggers": list(a.rule_triggers),
                "source": a.source,
                "status": Status.NEW.value,
                "created_at": now,
                "updated_at": now,
            }
            for a in alerts
        ]
        ids = list(
            session.scalars(insert(Alert).returning(Alert.id, sort_by_parameter_order=True), rows)
        )
        reasons = [
            {
                "alert_id": alert_id,
                "rank": r.rank,
                "group_key": r.group_key,
                "text_zh": r.text_zh,
                "contribution": r.contribution,
                "scale": r.scale,
            }
            for alert_id, a in zip(ids, alerts, strict=True)
            for r in a.reasons
        ]
        if reasons:
            session.execute(insert(AlertReason), reasons)
        history = [
            {"alert_id": i, "from_status": None, "to_status": "new", "at": now, "actor": actor}
            for i in ids
        ]
        session.execute(insert(StatusChange), history)
        return ids

    # -- reading -------------------------------------------------------------

    def get(self, alert_id: int) -> AlertRecord:
        """A snapshot of one alert (AlertNotFoundError when there is none)."""
        with self.transaction() as session:
            alert = session.scalar(
                select(Alert)
                .where(Alert.id == alert_id)
                .options(
                    selectinload(Alert.reasons),
                    selectinload(Alert.history),
                    selectinload(Alert.verdict),
                    selectinload(Alert.referrals),
                )
            )
            if alert is None:
                raise AlertNotFoundError(alert_id)
            return _record(alert)

    def open_household_keys(self) -> frozenset[str]:
        """Households with an alert that is not closed (scoring skips them early)."""
        with self.transaction() as session:
            rows = session.scalars(
                select(Alert.household_key).where(Alert.status != Status.CLOSED.value)
            )
            return frozenset(rows)

    # -- lifecycle -----------------------------------------------------------

    def _move(
        self,
        session: Session,
        alert: Alert,
        target: Status,
        *,
        actor: str,
        note: str | None,
        at: datetime,
    ) -> None:
        check_transition(alert.id, alert.status, target)
        session.add(
            StatusChange(
                alert_id=alert.id,
                from_status=alert.status,
                to_status=target.value,
                at=at,
                actor=actor,
                note=note,
            )
        )
        alert.status = target.value
        alert.updated_at = at

    @staticmethod
    def _load_many(session: Session, alert_ids: Sequence[int]) -> dict[int, Alert]:
        """Alerts by id, locked FOR UPDATE; AlertNotFoundError names the first missing id."""
        found: dict[int, Alert] = {}
        for chunk in _chunks(sorted(set(alert_ids))):
            query = select(Alert).where(Alert.id.in_(chunk)).with_for_update()
            found.update((a.id, a) for a in session.scalars(query))
        missing = [i for i in alert_ids if i not in found]
        if missing:
            raise AlertNotFoundError(missing[0])
        return found

    @staticmethod
    def _load(session: Session, alert_id: int) -> Alert:
        # FOR UPDATE: concurrent changes to one alert queue up on PostgreSQL.
        alert = session.scalar(select(Alert).where(Alert.id == alert_id).with_for_update())
        if alert is None:
            raise AlertNotFoundError(alert_id)
        return alert

    def transition(
        self, alert_id: int, to: Status | str, *, actor: str, note: str | None = None
    ) -> None:
        """Move an alert to `to` (dispatched or closed); verdicts and referrals have own calls."""
        target = Status(to)
        if target in (Status.VERIFIED_CONFIRMED, Status.VERIFIED_DISMISSED):
            raise ValueError("a verdict needs its visit: use record_verdict()")
        if target is Status.REFERRED:
            raise ValueError("a referral needs its departments: use refer()")
        with self.transaction() as session:
            self._move(
                session,
                self._load(session, alert_id),
                target,
                actor=actor,
                note=note,
                at=self._clock(),
            )

    def dispatch(self, alert_ids: Iterable[int], *, actor: str, note: str | None = None) -> None:
        """Mark alerts as sent to caseworkers (all or none)."""
        ids = list(alert_ids)
        with self.transaction() as session:
            now = self._clock()
            alerts = self._load_many(session, ids)
            for alert_id in ids:
                self._move(
                    session, alerts[alert_id], Status.DISPATCHED, actor=actor, note=note, at=now
                )

    def close(self, alert_id: int, *, actor: str, note: str | None = None) -> None:
        """End the chain (after referral, or after a dismissal)."""
        self.transition(alert_id, Status.CLOSED, actor=actor, note=note)

    def record_verdict(
        self,
        alert_id: int,
        verdict: str,
        *,
        visited_on: date,
        caseworker: str,
        actor: str,
        risk_types: Sequence[str] = (),
        note: str | None = None,
        source_file: str | None = None,
    ) -> bool:
        """Record a caseworker's verdict; True if stored, False if the same one already was."""
        finding = VerdictInput(alert_id, verdict, tuple(risk_types), visited_on, caseworker, note)
        with self.transaction() as session:
            (stored,) = self.record_verdicts_in(
                session, [finding], actor=actor, source_file=source_file
            )
            return stored

    def record_verdicts_in(
        self,
        session: Session,
        verdicts: Sequence[VerdictInput],
        *,
        actor: str,
        source_file: str | None = None,
    ) -> list[bool]:
        """Record verdicts inside the caller's transaction (e.g. a whole feedback file).

        Per verdict: True if stored, False if the identical verdict already was.
        Raises on the first verdict that breaks a rule; the caller's transaction
        then rolls everything back.
        """
        for finding in verdicts:
            problem = finding.problem()
            if problem:
                raise ValueError(f"alert {finding.alert_id}: {problem}")
        ids = [v.alert_id for v in verdicts]
        alerts = self._load_many(session, ids)
        existing: dict[int, Verdict] = {}
        for chunk in _chunks(ids):
            existing.update(
                (v.alert_id, v)
                for v in session.scalars(select(Verdict).where(Verdict.alert_id.in_(chunk)))
            )
        now = self._clock()
        out = []
        for finding in verdicts:
            alert = alerts[finding.alert_id]
            stored = existing.get(finding.alert_id)
            if stored is not None:
                if not finding.same_as(stored):
                    raise VerdictConflictError(
                        f"alert {alert.id} already has a different verdict ({stored.verdict}, "
                        f"visited {stored.visited_on}); corrections are not imported"
                    )
                out.append(False)
                continue
            if finding.visited_on < alert.as_of:
                raise ValueError(
                    f"alert {alert.id}: visited_on {finding.visited_on} is before "
                    f"its as_of {alert.as_of}"
                )
            target = (
                Status.VERIFIED_CONFIRMED
                if finding.verdict == "confirmed"
                else Status.VERIFIED_DISMISSED
            )
            self._move(session, alert, target, actor=actor, note=finding.note, at=now)
            verdict = Verdict(
                alert_id=alert.id,
                verdict=finding.verdict,
                risk_types=list(finding.risk_types),
                visited_on=finding.visited_on,
                caseworker=finding.caseworker,
                note=finding.note or None,
                recorded_at=now,
                source_file=source_file,
            )
            session.add(verdict)
            existing[alert.id] = verdict
            out.append(True)
        return out

    def refer(
        self,
        alert_id: int,
        *,
        referred_on: date,
        actor: str,
        current_assistance: Iterable[str] = (),
    ) -> ReferralOutcome:
        """Refer a confirmed hardship to its departments; never to one already helping.

        Departments come from the routing of the verdict's hardship types.
        `current_assistance` is the household's current programmes and/or
        departments; departments behind them are skipped and reported (possible
        duplicate assistance otherwise). The alert moves to `referred` even when
        every department already helps: the chain is then in their hands.
        """
        assisting = routing.assisting_departments(current_assistance)
        with self.transaction() as session:
            alert = self._load(session, alert_id)
            check_transition(alert.id, alert.status, Status.REFERRED)
            verdict = session.scalar(select(Verdict).where(Verdict.alert_id == alert_id))
            assert verdict is not None  # verified_confirmed is only reached with a verdict
            departments = routing.departments_for(verdict.risk_types)
            to_refer = [d for d in departments if d not in assisting]
            already = tuple(d for d in departments if d in assisting)
            now = self._clock()
            for department in to_refer:
                session.add(
                    Referral(
                        alert_id=alert_id,
                        department=department,
                        programme=None,
                        status="pending",
                        referred_on=referred_on,
                        updated_at=now,
                    )
                )
            note = None
            if already:
                names = "、".join(routing.department_name(d) for d in already)
                note = f"already assisted by {names}: not re-referred"
            self._move(session, alert, Status.REFERRED, actor=actor, note=note, at=now)
        return ReferralOutcome(alert_id, tuple(to_refer), already)

    def update_referral(
        self,
        alert_id: int,
        department: str,
        status: str,
        *,
        programme: str | None = None,
    ) -> None:
        """A department's answer to a referral: granted (with its programme) or declined."""
        if status not in ("pending", "granted", "declined"):
            raise ValueError(f"referral status must be pending, granted or declined: {status!r}")
        if programme is not None and routing.PROGRAMMES[programme].department != department:
            raise ValueError(f"programme {programme!r} is not run by {department!r}")
        with self.transaction() as session:
            referral = session.scalar(
                select(Referral).where(
                    Referral.alert_id == alert_id, Referral.department == department
                )
            )
            if referral is None:
                raise KeyError(f"alert {alert_id} has no referral to {department!r}")
            referral.status = status
            referral.programme = programme or referral.programme
            referral.updated_at = self._clock()

    # -- export (the audited caseworker sheet is built elsewhere) -------------

    def record_export(
        self,
        alert_ids: Collection[int],
        *,
        actor: str,
        township_code: str,
        file_path: str | Path,
        export_token: str | None = None,
    ) -> int:
        """Dispatch the exported alerts and write the audit row, in one transaction.

        Returns the audit row's id. `household_count` is the number of distinct
        households in the exported alerts. `export_token` names the export's staging
        folder (`serving.staging`): the row is the export's commit.
        """
        with self.transaction() as session:
            now = self._clock()
            households: set[str] = set()
            alerts = self._load_many(session, list(alert_ids))
            for alert_id in alert_ids:
                alert = alerts[alert_id]
                if alert.township_code != township_code:
                    raise ValueError(
                        f"alert {alert_id} is in township {alert.township_code}, "
                        f"not {township_code}"
                    )
                households.add(alert.household_key)
                self._move(
                    session,
                    alert,
                    Status.DISPATCHED,
                    actor=actor,
                    note=f"exported to {Path(file_path).name}",
                    at=now,
                )
            audit = ExportAudit(
                actor=actor,
                at=now,
                township_code=township_code,
                household_count=len(households),
                file_path=str(file_path),
                export_token=export_token,
            )
            session.add(audit)
            session.flush()
            return audit.id

    def record_audits(
        self,
        township_counts: Iterable[tuple[str, int]],
        *,
        actor: str,
        file_path: str | Path,
        export_token: str | None = None,
    ) -> list[int]:
        """Audit rows for an export that dispatches nothing (the operator export): one
        per (township, households), in one transaction. Returns their ids."""
        now = self._clock()
        with self.transaction() as session:
            rows = [
                ExportAudit(
                    actor=actor,
                    at=now,
                    township_code=str(code),
                    household_count=int(count),
                    file_path=str(file_path),
                    export_token=export_token,
                )
                for code, count in township_counts
            ]
            session.add_all(rows)
            session.flush()
            return [r.id for r in rows]

    def export_committed(self, export_token: str) -> bool:
        """Whether an export with this staging token was committed (has an audit row)."""
        with self.transaction() as session:
            found = session.scalar(
                select(ExportAudit.id).where(ExportAudit.export_token == export_token).limit(1)
            )
            return found is not None


def assistance_lookup(
    current_assistance: Mapping[str, Iterable[str]],
) -> dict[str, frozenset[str]]:
    """household_key -> departments currently helping it (codes checked)."""
    return {k: routing.assisting_departments(v) for k, v in current_assistance.items()}
