"""Status changes of alerts: checked against the lifecycle, written to the history, made
under row locks so that concurrent changes to one alert queue up (PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.store.database import StoreDatabase, chunks
from serving.store.lifecycle import Status, check_transition
from serving.store.models import Alert, StatusChange
from serving.store.records import AlertNotFoundError


class StatusMoves(StoreDatabase):
    """The part of `AlertStore` that moves alerts along the lifecycle."""

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
        for chunk in chunks(sorted(set(alert_ids))):
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
