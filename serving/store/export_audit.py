"""The export audit: who exported which township's households to which file, and when.

The caseworker sheet itself is built in `serving.export`; here its alerts are dispatched
and its audit row written, in one transaction: that row is the export's commit.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path

from sqlalchemy import select

from serving.store.lifecycle import Status
from serving.store.models import ExportAudit
from serving.store.moves import StatusMoves


class ExportAuditPart(StatusMoves):
    """The part of `AlertStore` that dispatches exported alerts and audits exports."""

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
