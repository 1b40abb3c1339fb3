"""The alert store: one chain of help per household, from score to closure.

`open_store()` migrates the database to the newest schema and returns an
`AlertStore`. Scoring adds alerts (`add_alerts`), the export dispatches them
(`record_export`), caseworkers' verdicts come back (`record_verdict`, or
`serving.store.feedback.import_feedback`), confirmed hardship is referred to
the departments that help (`refer`) and the chain ends with `close`.
Every status change is checked against the lifecycle and written to the history.

`AlertStore` is made of parts, one module each: `alerts` (adding and reading),
`moves` (status changes: `transition`, `dispatch`, `close`), `verdicts` (verdicts and
referrals) and `export_audit` (exports' dispatch and audit rows), over
`database.StoreDatabase` (engine, transactions, clock).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from doudi.settings import Settings
from serving.store import schema
from serving.store.alerts import AlertsPart
from serving.store.database import default_url, make_engine, utcnow
from serving.store.export_audit import ExportAuditPart
from serving.store.verdicts import VerdictsPart


class AlertStore(AlertsPart, VerdictsPart, ExportAuditPart):
    """Alerts and their chain of help in a SQL database (SQLite or PostgreSQL)."""


def open_store(
    url: str | None = None,
    *,
    settings: Settings | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> AlertStore:
    """Open (and migrate to the newest schema) the alert store at `url` or the default."""
    engine = make_engine(url or default_url(settings))
    schema.upgrade(engine)
    return AlertStore(engine, clock=clock)
