"""Adding alerts, one open chain per household (idempotent on re-runs), and reading them."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import date, datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, selectinload

from serving.store.database import StoreDatabase, chunks
from serving.store.inputs import NewAlert
from serving.store.lifecycle import OPEN_STATUSES, Status
from serving.store.models import Alert, AlertReason, StatusChange
from serving.store.records import (
    AddReport,
    AlertNotFoundError,
    AlertRecord,
    Skipped,
    SkipReason,
    record_of,
)


class AlertsPart(StoreDatabase):
    """The part of `AlertStore` that adds alerts and reads them back."""

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
        now = self._clock()
        with self.transaction() as session:
            stored, open_alert = self._existing(session, {a.household_key for a in batch})
            to_create, skipped = _triage(batch, stored, open_alert, frozenset(monitored))
            ids = self._insert(session, to_create, now=now, actor=actor)
        return AddReport(created=tuple(ids), skipped=tuple(skipped))

    @staticmethod
    def _existing(
        session: Session, keys: set[str]
    ) -> tuple[dict[tuple[str, date, str], int], dict[str, int]]:
        """These households' stored alerts by (household, as_of, model_version), and their
        open alerts by household (ids)."""
        stored: dict[tuple[str, date, str], int] = {}
        open_alert: dict[str, int] = {}
        for chunk in chunks(sorted(keys)):
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
            return record_of(alert)

    def open_household_keys(self) -> frozenset[str]:
        """Households with an alert that is not closed (scoring skips them early)."""
        with self.transaction() as session:
            rows = session.scalars(
                select(Alert.household_key).where(Alert.status != Status.CLOSED.value)
            )
            return frozenset(rows)


def _triage(
    batch: list[NewAlert],
    stored: dict[tuple[str, date, str], int],
    open_alert: dict[str, int],
    monitored: frozenset[str],
) -> tuple[list[NewAlert], list[Skipped]]:
    """The alerts to create, and those skipped with their reason (see `add_alerts`)."""
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
        elif a.household_key in monitored:
            skip(a, SkipReason.MONITORED)
        else:
            created_keys.add(a.household_key)
            to_create.append(a)
    return to_create, skipped
