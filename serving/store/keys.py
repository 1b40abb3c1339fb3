"""The scoring API's keys and audit log in the alert store (`doudi keys`, docs/api.md
"Access"; the rules themselves are in `serving.access`).

- `create_key` stores a new key's hash, role, area, label and expiry and returns the key
  once; `list_keys` and `revoke_key` never see the key or its hash again.
- `stored_key` is what the server's `serving.access.KeyVerifier` loads for a key id.
- `AuditLog` writes one row per request to `api_audit` from a background thread, in
  batches (every `flush_seconds` or `max_batch` rows): the request never waits for the
  database. It also moves each key's `last_used_at`. A process killed with SIGKILL loses
  at most the last `flush_seconds` of rows; a clean stop writes them all.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, insert, or_, select, update

from doudi.errors import UserError
from serving.access import (
    DEFAULT_EXPIRES_DAYS,
    KEY_ID_HEX,
    MAX_EXPIRES_DAYS,
    MAX_LABEL_CHARS,
    AuditEntry,
    StoredKey,
    check_area,
    key_hash,
    new_key,
    parse_role,
)
from serving.store.database import StoreDatabase
from serving.store.models import ApiAudit, ApiKey

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0  # the store refused a batch: try again after this long


@dataclass(frozen=True)
class KeyInfo:
    """A key as `doudi keys list` shows it: never the key, never its hash."""

    key_id: str
    role: str
    area: tuple[str, ...]
    label: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    def state(self, now: datetime) -> str:
        """`revoked`, `expired` or `active` at `now`."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= now else "active"


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        key_id=row.id,
        role=row.role,
        area=tuple(row.area),
        label=row.label,
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def create_key(
    db: StoreDatabase,
    *,
    role: str,
    label: str,
    area: Sequence[str] = (),
    expires_days: int = DEFAULT_EXPIRES_DAYS,
    created_by: str,
) -> tuple[KeyInfo, str]:
    """Store a new key; returns it with the key itself, which is not kept anywhere.

    UserError (one line) for a role, area, label or expiry the rules refuse."""
    parsed = parse_role(role)
    codes = check_area(parsed, area)
    label = " ".join(str(label).split())
    if not label or len(label) > MAX_LABEL_CHARS:
        raise UserError(f"--label: say whose key this is, in 1-{MAX_LABEL_CHARS} characters")
    if isinstance(expires_days, bool) or not 1 <= int(expires_days) <= MAX_EXPIRES_DAYS:
        raise UserError(f"--expires-days must be from 1 to {MAX_EXPIRES_DAYS}")
    key_id, key = new_key()
    now = db.now()
    row = ApiKey(
        id=key_id,
        key_hash=key_hash(key),
        role=parsed.value,
        area=list(codes),
        label=label,
        created_by=str(created_by)[:64],
        created_at=now,
        expires_at=now + timedelta(days=int(expires_days)),
        revoked_at=None,
        last_used_at=None,
    )
    with db.transaction() as session:
        session.add(row)
        session.flush()
        return _info(row), key


def list_keys(db: StoreDatabase) -> list[KeyInfo]:
    """Every key, oldest first."""
    with db.transaction() as session:
        rows = session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))
        return [_info(r) for r in rows]


def _check_key_id(key_id: str) -> str:
    key_id = key_id.strip()
    if not (len(key_id) == KEY_ID_HEX and all(c in "0123456789abcdef" for c in key_id)):
        raise UserError(f"a key id is {KEY_ID_HEX} lowercase hex characters (doudi keys list)")
    return key_id


def revoke_key(db: StoreDatabase, key_id: str) -> tuple[KeyInfo, bool]:
    """Revoke a key: (the key, whether this call revoked it; False: it already was).
    UserError for an unknown id."""
    key_id = _check_key_id(key_id)
    with db.transaction() as session:
        row = session.get(ApiKey, key_id)
        if row is None:
            raise UserError(f"no API key {key_id} in this store (doudi keys list)")
        if row.revoked_at is not None:
            return _info(row), False
        row.revoked_at = db.now()
        session.flush()
        return _info(row), True


def stored_key(db: StoreDatabase, key_id: str) -> StoredKey | None:
    """What the server checks a key against (None: no such key id)."""
    with db.transaction() as session:
        row = session.get(ApiKey, key_id)
        if row is None:
            return None
        return StoredKey(
            key_id=row.id,
            key_hash=row.key_hash,
            role=row.role,
            area=tuple(row.area),
            label=row.label,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
        )


def active_key_count(db: StoreDatabase) -> int:
    """Keys neither revoked nor expired now."""
    with db.transaction() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(ApiKey)
                .where(ApiKey.revoked_at.is_(None), ApiKey.expires_at > db.now())
            )
            or 0
        )


# -- the audit log ---------------------------------------------------------------------------
def write_audit(db: StoreDatabase, entries: Sequence[AuditEntry]) -> None:
    """Insert these rows (one statement) and move their keys' `last_used_at`, in one
    transaction."""
    if not entries:
        return
    rows = [
        {
            "at": e.at,
            "key_id": e.key_id,
            "role": e.role,
            "endpoint": e.endpoint,
            "status": e.status,
            "refusal": e.refusal,
            "households_asked": list(e.asked),
            "households_answered": list(e.answered),
        }
        for e in entries
    ]
    used: dict[str, datetime] = {}
    for e in entries:
        if e.key_id is not None and e.role is not None:  # a verified key
            used[e.key_id] = max(e.at, used.get(e.key_id, e.at))
    with db.transaction() as session:
        session.execute(insert(ApiAudit), rows)
        for key_id, at in used.items():
            session.execute(
                update(ApiKey)
                .where(
                    ApiKey.id == key_id,
                    or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < at),
                )
                .values(last_used_at=at)
            )


@dataclass(frozen=True)
class AuditRecord:
    """One row of `api_audit` as read back."""

    id: int
    at: datetime
    key_id: str | None
    role: str | None
    endpoint: str
    status: int
    refusal: str | None
    households_asked: list[str]
    households_answered: list[str]


def read_audit(
    db: StoreDatabase, *, key_id: str | None = None, limit: int = 1000
) -> list[AuditRecord]:
    """Audit rows, newest first (of one key when `key_id` is given)."""
    query = select(ApiAudit).order_by(ApiAudit.id.desc()).limit(limit)
    if key_id is not None:
        query = query.where(ApiAudit.key_id == key_id)
    with db.transaction() as session:
        return [
            AuditRecord(
                r.id, r.at, r.key_id, r.role, r.endpoint, r.status, r.refusal,
                list(r.households_asked), list(r.households_answered),
            )
            for r in session.scalars(query)
        ]


class _Flush:
    """A marker in the queue: set once everything queued before it is written."""

    def __init__(self) -> None:
        self.done = threading.Event()


class AuditLog:
    """Audit rows written from a background thread, in batches (`record` never waits)."""

    def __init__(
        self,
        db: StoreDatabase,
        *,
        flush_seconds: float = 0.5,
        max_batch: int = 500,
        max_pending: int = 100_000,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self.db = db
        self.flush_seconds = flush_seconds
        self.retry_seconds = retry_seconds
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.dropped = 0
        self._queue: queue.SimpleQueue[AuditEntry | _Flush | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="doudi-audit", daemon=True)
        self._thread.start()

    def record(self, entry: AuditEntry) -> None:
        """Queue one request's row."""
        self._queue.put(entry)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every row queued so far is written (or could not be); True if so."""
        marker = _Flush()
        self._queue.put(marker)
        return marker.done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued and stop the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        pending: list[AuditEntry] = []
        due: float | None = None  # when the oldest pending row must be written
        stop = False
        while not stop:
            markers: list[_Flush] = []
            wait = self.flush_seconds if due is None else max(0.0, due - time.monotonic())
            try:
                item: AuditEntry | _Flush | None = self._queue.get(timeout=wait)
            except queue.Empty:
                item = _Flush()  # nothing came: time to look at what is pending
            while True:  # take what else is queued now, up to a batch
                if item is None:
                    stop = True
                    break
                if isinstance(item, _Flush):
                    markers.append(item)
                else:
                    pending.append(item)
                    due = due or time.monotonic() + self.flush_seconds
                if len(pending) >= self.max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            now = time.monotonic()
            if pending and (markers or stop or len(pending) >= self.max_batch
                            or (due is not None and now >= due)):
                pending = self._write(pending)
                # written: nothing due; not written: try again in a few seconds
                due = now + self.retry_seconds if pending else None
            for marker in markers:
                marker.done.set()

    def _write(self, pending: list[AuditEntry]) -> list[AuditEntry]:
        """Write `pending`; what could not be written (kept for the next try, bounded)."""
        if not pending:
            return pending
        try:
            write_audit(self.db, pending)
            return []
        except Exception as err:  # the store is away: keep the rows, try again later
            log.error(
                "audit: could not write %d row(s) (%s); retrying", len(pending),
                type(err).__name__,
            )
            if len(pending) > self.max_pending:
                drop = len(pending) - self.max_pending
                self.dropped += drop
                log.error("audit: %d row(s) dropped (store unreachable too long)", drop)
                return pending[drop:]
            return pending
