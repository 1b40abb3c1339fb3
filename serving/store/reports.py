"""Queries over the alert store, as DataFrames: lists, export rows, labels, overlap checks,
the townships' sheets returned (`township_status`).

Each takes an `AlertStore` or an open `Session`, so callers may run them inside
their own transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from doudi.months import Month
from doudi.settings import Settings
from serving import routing
from serving.sheet import respond_by
from serving.store.inputs import MAX_REASONS
from serving.store.lifecycle import Status
from serving.store.models import Alert, Referral, StatusChange, Verdict
from serving.store.store import AlertStore

Source = AlertStore | Session

# Days after a confirming visit by which help should have started (`settings.omission_days`).
DEFAULT_OMISSION_AFTER_DAYS: int = Settings.model_fields["omission_days"].default
# Days a township has to return its sheet (`settings.response_days`).
DEFAULT_RESPONSE_DAYS: int = Settings.model_fields["response_days"].default
# Reason columns of the export rows when the caller names no count (`settings.max_reasons`).
DEFAULT_REASON_COLUMNS: int = Settings.model_fields["max_reasons"].default
LIVE_REFERRAL_STATUSES = ("pending", "granted")

ALERT_COLUMNS = [
    "alert_id",
    "household_key",
    "county_code",
    "township_code",
    "village_code",
    "as_of",
    "model_version",
    "risk",
    "tier",
    "risk_types",
    "departments",
    "rule_triggers",
    "source",
    "status",
    "created_at",
    "updated_at",
]


@contextmanager
def _session(source: Source) -> Iterator[Session]:
    if isinstance(source, Session):
        yield source
    else:
        with source.transaction() as session:
            yield session


def _joined(values: Iterable[str]) -> str:
    return ";".join(values)


def assistance_lookup(
    current_assistance: Mapping[str, Iterable[str]],
) -> dict[str, frozenset[str]]:
    """household_key -> departments currently helping it (codes checked)."""
    return {k: routing.assisting_departments(v) for k, v in current_assistance.items()}


def list_alerts(
    source: Source, *, township: str | None = None, status: str | None = None
) -> pd.DataFrame:
    """Alerts (newest first), optionally of one township (9-digit code) and/or status.

    List columns (`risk_types`, `departments`, `rule_triggers`) are `;`-joined.
    """
    query = select(Alert).order_by(Alert.id.desc())
    if township is not None:
        query = query.where(Alert.township_code == township)
    if status is not None:
        query = query.where(Alert.status == Status(status).value)
    with _session(source) as session:
        rows = [
            (
                a.id,
                a.household_key,
                a.county_code,
                a.township_code,
                a.village_code,
                a.as_of,
                a.model_version,
                a.risk,
                a.tier,
                _joined(a.risk_types),
                _joined(a.departments),
                _joined(a.rule_triggers),
                a.source,
                a.status,
                a.created_at,
                a.updated_at,
            )
            for a in session.scalars(query)
        ]
    return pd.DataFrame(rows, columns=ALERT_COLUMNS)


def reason_columns(count: int) -> list[str]:
    """`reason_1` .. `reason_<count>`: the reason columns of `alerts_for_export`, by rank."""
    return [f"reason_{rank}" for rank in range(1, count + 1)]


def reason_columns_in(frame: pd.DataFrame) -> list[str]:
    """The reason columns an `alerts_for_export` frame has, by rank."""
    return [c for c in reason_columns(MAX_REASONS) if c in frame.columns]


def alerts_for_export(
    source: Source, township: str, *, max_reasons: int = DEFAULT_REASON_COLUMNS
) -> pd.DataFrame:
    """New alerts of one township with their reasons, for the caseworker sheet.

    Adds `departments_zh`, `rule_triggers` (`;`-joined codes) and `reason_1..n` (Chinese
    text by rank; None where an alert has fewer): n is `max_reasons`
    (`settings.max_reasons`), or more when a stored alert carries more reasons, so that
    every stored reason reaches the sheet. Households are
    pseudonymous here; the export re-identifies them from the vault and then calls
    `AlertStore.record_export`.
    """
    query = (
        select(Alert)
        .where(Alert.township_code == township, Alert.status == Status.NEW.value)
        .options(selectinload(Alert.reasons))
        .order_by(Alert.risk.desc(), Alert.id)
    )
    with _session(source) as session:
        records: list[dict[str, object]] = []
        texts: list[dict[int, str]] = []  # per alert: rank -> reason text
        for a in session.scalars(query):
            texts.append({r.rank: r.text_zh for r in a.reasons})
            records.append(
                {
                    "alert_id": a.id,
                    "household_key": a.household_key,
                    "village_code": a.village_code,
                    "as_of": a.as_of,
                    "risk": a.risk,
                    "tier": a.tier,
                    "risk_types": _joined(a.risk_types),
                    "departments_zh": "、".join(routing.department_name(d) for d in a.departments),
                    "rule_triggers": _joined(a.rule_triggers),
                }
            )
    ranks = max([max_reasons, *(rank for ranked in texts for rank in ranked)])
    for record, ranked in zip(records, texts, strict=True):
        for rank, column in enumerate(reason_columns(ranks), 1):
            record[column] = ranked.get(rank)
    columns = [
        "alert_id",
        "household_key",
        "village_code",
        "as_of",
        "risk",
        "tier",
        "risk_types",
        "departments_zh",
        "rule_triggers",
        *reason_columns(ranks),
    ]
    return pd.DataFrame.from_records(records, columns=columns)


TOWNSHIP_STATUS_COLUMNS = ["township_code", "sent", "visited", "confirmed", "dismissed",
                           "overdue"]


def township_status(
    source: Source,
    *,
    today: date,
    response_days: int = DEFAULT_RESPONSE_DAYS,
    month: Month | None = None,
) -> pd.DataFrame:
    """Per township, how its caseworker sheets came back (`doudi alerts status`).

    One row per township with sent alerts, by code: `sent` (dispatched in a sheet),
    `visited` (a verdict is back) = `confirmed` (属实) + `dismissed` (不属实), and
    `overdue`: sent, no verdict, and its sheet's respond-by date
    (`serving.sheet.respond_by`: the export's date + `response_days`) is before `today`.
    `month`: only the alerts of that month (their `as_of`); default every month.
    """
    sent_at = (
        select(StatusChange.alert_id, func.min(StatusChange.at).label("at"))
        .where(StatusChange.to_status == Status.DISPATCHED.value)
        .group_by(StatusChange.alert_id)
        .subquery()
    )
    # One row per (township, status, verdict, export time): an export dispatches its
    # alerts at one time, so the groups are few and the deadline is checked in Python.
    query = (
        select(Alert.township_code, Alert.status, Verdict.verdict, sent_at.c.at, func.count())
        .join(sent_at, sent_at.c.alert_id == Alert.id)
        .outerjoin(Verdict, Verdict.alert_id == Alert.id)
        .group_by(Alert.township_code, Alert.status, Verdict.verdict, sent_at.c.at)
    )
    if month is not None:
        query = query.where(Alert.as_of >= month.start, Alert.as_of <= month.end)
    counts: dict[str, dict[str, int]] = {}
    with _session(source) as session:
        for township, status, verdict, at, n in session.execute(query):
            row = counts.setdefault(township, dict.fromkeys(TOWNSHIP_STATUS_COLUMNS[1:], 0))
            row["sent"] += n
            if verdict is not None:
                row["visited"] += n
                row["confirmed" if verdict == "confirmed" else "dismissed"] += n
            elif status == Status.DISPATCHED.value and respond_by(at, response_days) < today:
                row["overdue"] += n
    records = [{"township_code": code, **counts[code]} for code in sorted(counts)]
    return pd.DataFrame.from_records(records, columns=TOWNSHIP_STATUS_COLUMNS)


def verdict_labels(source: Source) -> pd.DataFrame:
    """Caseworkers' verdicts as labels for training: one row per verified alert.

    Columns: household_key, as_of (datetime64), verdict ('confirmed' /
    'dismissed'), risk_types (`;`-joined confirmed types), visited_on,
    model_version, alert_id. Only visited households have verdicts (selective
    labels): see docs/alerts.md before using them as ground truth.
    """
    query = (
        select(
            Alert.household_key,
            Alert.as_of,
            Verdict.verdict,
            Verdict.risk_types,
            Verdict.visited_on,
            Alert.model_version,
            Alert.id,
        )
        .join(Verdict, Verdict.alert_id == Alert.id)
        .order_by(Alert.as_of, Alert.household_key)
    )
    with _session(source) as session:
        rows = [
            (key, as_of, verdict, _joined(types), visited, version, alert_id)
            for key, as_of, verdict, types, visited, version, alert_id in session.execute(query)
        ]
    frame = pd.DataFrame(
        rows,
        columns=[
            "household_key",
            "as_of",
            "verdict",
            "risk_types",
            "visited_on",
            "model_version",
            "alert_id",
        ],
    )
    frame["as_of"] = pd.to_datetime(frame["as_of"])
    frame["visited_on"] = pd.to_datetime(frame["visited_on"])
    return frame


# How the duplicate-assistance and omission reports name an alert (their first columns).
NAMED_ALERT_COLUMNS = ("alert_id", "household_key", "township_code", "status")


def _named(alert: Alert) -> tuple[int, str, str, str]:
    return (alert.id, alert.household_key, alert.township_code, alert.status)


def _confirmed(session: Session) -> list[tuple[Alert, Verdict, dict[str, str]]]:
    """Alerts with a confirmed verdict, with their referrals by department."""
    query = (
        select(Alert, Verdict)
        .join(Verdict, Verdict.alert_id == Alert.id)
        .where(Verdict.verdict == "confirmed")
        .order_by(Alert.id)
    )
    pairs = list(session.execute(query).tuples())
    referrals: dict[int, dict[str, str]] = {}
    for alert_id, department, status in session.execute(
        select(Referral.alert_id, Referral.department, Referral.status)
    ):
        referrals.setdefault(alert_id, {})[department] = status
    return [(a, v, referrals.get(a.id, {})) for a, v in pairs]


def duplicate_assistance(
    source: Source, current_assistance: Mapping[str, Iterable[str]]
) -> pd.DataFrame:
    """Confirmed hardship routed to a department that already helps the household.

    One row per (alert, department). `kind` is `referred_while_assisted` when a
    live referral exists (possible duplicate assistance: check before granting)
    or `not_re_referred` when the store held the referral back because the
    household already receives that department's help. Closed alerts are left out.
    `current_assistance`: household_key -> programme and/or department codes.
    """
    assisting = assistance_lookup(current_assistance)
    codes = {k: sorted(v) for k, v in current_assistance.items()}
    rows = []
    with _session(source) as session:
        for alert, verdict, referrals in _confirmed(session):
            if alert.status == Status.CLOSED.value:
                continue
            helping = assisting.get(alert.household_key, frozenset())
            for department in routing.departments_for(verdict.risk_types):
                if department not in helping:
                    continue
                referral_status = referrals.get(department)
                live = referral_status in LIVE_REFERRAL_STATUSES
                current = [
                    c
                    for c in codes[alert.household_key]
                    if c == department
                    or (c in routing.PROGRAMMES and routing.PROGRAMMES[c].department == department)
                ]
                rows.append(
                    (
                        *_named(alert),
                        department,
                        routing.department_name(department),
                        _joined(current),
                        referral_status,
                        "referred_while_assisted" if live else "not_re_referred",
                    )
                )
    return pd.DataFrame(
        rows,
        columns=[
            *NAMED_ALERT_COLUMNS,
            "department",
            "department_zh",
            "current_assistance",
            "referral_status",
            "kind",
        ],
    )


def omissions(
    source: Source,
    current_assistance: Mapping[str, Iterable[str]],
    *,
    today: date,
    after_days: int = DEFAULT_OMISSION_AFTER_DAYS,
) -> pd.DataFrame:
    """Confirmed hardship still without matching help `after_days` after the visit.

    One row per (alert, hardship type) where no department the type routes to
    either helps the household now (`current_assistance`) or holds a pending or
    granted referral, and `today - visited_on >= after_days`. Closed alerts
    are included: closing a chain without help is exactly what to catch.
    """
    if after_days < 0:
        raise ValueError("after_days must be >= 0")
    assisting = assistance_lookup(current_assistance)
    rows = []
    with _session(source) as session:
        for alert, verdict, referrals in _confirmed(session):
            waited = (today - verdict.visited_on).days
            if waited < after_days:
                continue
            live = {d for d, s in referrals.items() if s in LIVE_REFERRAL_STATUSES}
            covered = assisting.get(alert.household_key, frozenset()) | live
            for risk_type in verdict.risk_types:
                expected = routing.departments_for([risk_type])
                if covered.isdisjoint(expected):
                    rows.append(
                        (
                            *_named(alert),
                            risk_type,
                            _joined(expected),
                            verdict.visited_on,
                            waited,
                        )
                    )
    return pd.DataFrame(
        rows,
        columns=[
            *NAMED_ALERT_COLUMNS,
            "risk_type",
            "expected_departments",
            "visited_on",
            "days_since_visit",
        ],
    )
