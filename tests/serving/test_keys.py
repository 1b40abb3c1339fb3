"""API keys and the audit log in the alert store (SQLite and PostgreSQL), the access rules,
the key check's cache, and `doudi keys` (docs/api.md "Access")."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, inspect, text

from doudi.errors import UserError
from serving.access import (
    ENDPOINT_ROLES,
    KEY_CACHE_SECONDS,
    Area,
    AuditEntry,
    AuthError,
    KeyVerifier,
    Role,
    StoredKey,
    allowed,
    bearer,
    check_area,
    check_key,
    key_hash,
    key_id_of,
    new_key,
    principal_of,
)
from serving.store import AlertStore, list_alerts
from serving.store.database import StoreDatabase, make_engine
from serving.store.keys import (
    AuditLog,
    active_key_count,
    create_key,
    list_keys,
    read_audit,
    revoke_key,
    stored_key,
    write_audit,
)
from serving.store.schema import current_revision, downgrade, upgrade
from tests.jobs.cli import doudi, refused
from tests.serving.store_fixtures import FrozenClock, alert, store_url_of

pytest_plugins = ["tests.serving.store_fixtures"]

KEY = re.compile(r"^dk_[0-9a-f]{12}_[0-9a-f]{64}$")
H1, H2, H3 = ("h_" + c * 20 for c in "123")


# -- the rules (pure) --------------------------------------------------------------------------
def test_areas_cover_their_villages_only() -> None:
    county = Area.of(["620121"])
    township = Area.of(["620102001"])
    assert county.covers("620121001001") and county.covers("620121019003")
    assert not county.covers("620122001001") and not county.covers("620120001001")
    assert township.covers("620102001004") and not township.covers("620102002001")
    assert Area.province().covers("999999999999")
    assert not Area.of([]).covers("620121001001")  # no codes: nothing, never everything
    assert county.covers_township("620121005") and not township.covers_township("620102002")
    assert Area.of(["620121", "620102001"]).codes == ("620102001", "620121")
    assert str(Area.province()) == "province"


def test_roles_take_their_kind_of_area() -> None:
    assert check_area("county", ["620122", "620121", "620121"]) == ("620121", "620122")
    assert check_area("township", ["620121001"]) == ("620121001",)
    assert check_area("platform", []) == check_area("analyst", []) == ()
    for role, codes, rule in (
        ("platform", ["620121"], "whole province"),
        ("analyst", ["620121"], "an analyst key sees the whole province"),
        ("county", [], "needs --area"),
        ("county", ["620121001"], "6-digit county codes"),
        ("township", ["620121"], "9-digit township codes"),
        ("township", ["62012100x"], "9-digit"),
        ("boss", [], "not one of platform, county, township, analyst"),
    ):
        with pytest.raises(UserError, match=rule):
            check_area(role, codes)


def test_who_may_call_what() -> None:
    operations = {"/alerts", "/score_fresh", "/verdicts", "/referrals"}
    assert set(ENDPOINT_ROLES) == {"/score", "/explain", "/model", *operations}
    for role in Role:
        assert allowed(role, "/score") and allowed(role, "/explain") and allowed(role, "/model")
        assert not allowed(role, "/fresh")  # an endpoint without a rule: nobody (fail closed)
        # the alert store's record and raw records: never the analyst
        assert all(allowed(role, e) == (role != Role.ANALYST) for e in operations)


def _stored(key: str, role: str = "county", area: tuple[str, ...] = ("620121",), **kw: object
            ) -> StoredKey:
    values: dict[str, object] = {
        "key_id": key_id_of(key), "key_hash": key_hash(key), "role": role, "area": area,
        "label": "x", "expires_at": datetime(2030, 1, 1, tzinfo=UTC), "revoked_at": None}
    values.update(kw)
    return StoredKey(**values)  # type: ignore[arg-type]


def test_a_key_is_checked_against_its_hash_in_constant_time() -> None:
    key_id, key = new_key()
    assert KEY.match(key) and key_id_of(key) == key_id and key_id in key
    now = datetime(2026, 6, 1, tzinfo=UTC)
    who = check_key(_stored(key), key, now)
    assert (who.key_id, who.role, who.area) == (key_id, Role.COUNTY, Area.of(["620121"]))
    _, other = new_key()
    forged = f"dk_{key_id}_{other[-64:]}"  # the right id, another secret
    for stored, sent, reason in (
        (None, key, "unknown key"),
        (_stored(key), forged, "wrong secret"),
        (_stored(key, revoked_at=now), key, "revoked"),
        (_stored(key, expires_at=now), key, "expired"),
    ):
        with pytest.raises(AuthError) as err:
            check_key(stored, sent, now)
        assert err.value.reason == reason
        assert key not in err.value.message and key_id not in err.value.message
    # the holder of a real key learns why; a guesser does not
    assert "revoked" in AuthError("revoked").message
    assert "revoked" not in AuthError("wrong secret").message
    # a damaged row fails closed: a county key with township-length codes sees nothing
    assert principal_of(_stored(key, area=("620121001",))).area == Area.of([])
    assert principal_of(_stored(key, role="analyst", area=("620121",))).area.whole
    assert bearer(f"Bearer {key}") == bearer(f"bearer  {key}") == key
    assert bearer(key) is None and bearer("Basic dXNlcjpwYXNz") is None and bearer(None) is None


def test_the_verifier_caches_briefly_and_sees_a_revocation_after_the_ttl() -> None:
    _, key = new_key()
    rows = {key_id_of(key): _stored(key)}
    loads: list[str] = []
    now = [100.0]

    def load(key_id: str) -> StoredKey | None:
        loads.append(key_id)
        return rows.get(key_id)

    verifier = KeyVerifier(load, clock=lambda: now[0], now=lambda: datetime(2026, 6, 1, tzinfo=UTC))
    header = f"Bearer {key}"
    assert verifier.cached(header) is None  # a miss: the store must be asked
    for _ in range(3):
        assert verifier.verify(header).role is Role.COUNTY
    assert len(loads) == 1
    rows[key_id_of(key)] = _stored(key, revoked_at=datetime(2026, 6, 1, tzinfo=UTC))
    now[0] += KEY_CACHE_SECONDS - 0.5
    assert verifier.verify(header).role is Role.COUNTY  # still inside the window
    now[0] += 1.0
    with pytest.raises(AuthError, match="revoked"):
        verifier.verify(header)
    with pytest.raises(AuthError, match="revoked"):
        verifier.cached(header)  # the refusal is cached too
    assert len(loads) == 2
    # malformed headers never reach the store; an unknown id is asked once per window
    for bad in (None, "", "Bearer", "Bearer x", f"Token {key}", key):
        with pytest.raises(AuthError):
            verifier.verify(bad)
    _, unknown = new_key()
    for _ in range(3):
        with pytest.raises(AuthError, match="unknown key"):
            verifier.verify(f"Bearer {unknown}")
    assert len(loads) == 3
    small = KeyVerifier(load, max_entries=10)
    for _ in range(25):
        with pytest.raises(AuthError):
            small.verify(f"Bearer {new_key()[1]}")
    assert len(small._cache) <= 10


# -- the store ---------------------------------------------------------------------------------
def _all_text(store: AlertStore) -> str:
    """Every value of the keys and audit tables, as text."""
    with store.engine.connect() as connection:
        rows = [*connection.execute(text("SELECT * FROM api_keys")),
                *connection.execute(text("SELECT * FROM api_audit"))]
    return "\n".join(repr(tuple(r)) for r in rows)


def test_keys_are_stored_hashed_listed_and_revoked(
    alert_store: AlertStore, store_clock: FrozenClock
) -> None:
    info, key = create_key(alert_store, role="county", area=["620121"], label=" county  A ",
                           expires_days=10, created_by="ops")
    assert KEY.match(key) and key_id_of(key) == info.key_id
    assert (info.role, info.area, info.label, info.created_by) == ("county", ("620121",),
                                                                  "county A", "ops")
    assert info.expires_at == store_clock.now + timedelta(days=10)
    stored = stored_key(alert_store, info.key_id)
    assert stored is not None and stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in _all_text(alert_store) and key[-64:] not in _all_text(alert_store)
    store_clock.advance(seconds=1)
    other, _ = create_key(alert_store, role="platform", label="platform", created_by="ops")
    assert [k.key_id for k in list_keys(alert_store)] == [info.key_id, other.key_id]
    assert active_key_count(alert_store) == 2
    assert {k.state(store_clock.now) for k in list_keys(alert_store)} == {"active"}

    store_clock.advance(days=11)
    assert list_keys(alert_store)[0].state(store_clock.now) == "expired"
    assert active_key_count(alert_store) == 1
    revoked, newly = revoke_key(alert_store, other.key_id)
    assert newly and revoked.revoked_at == store_clock.now
    assert revoked.state(store_clock.now) == "revoked"
    assert revoke_key(alert_store, other.key_id)[1] is False  # once is enough
    assert active_key_count(alert_store) == 0
    with pytest.raises(UserError, match="no API key"):
        revoke_key(alert_store, "0" * 12)
    with pytest.raises(UserError, match="12 lowercase hex"):
        revoke_key(alert_store, "'; drop table api_keys; --")
    for kw, rule in (({"label": ""}, "--label"), ({"label": "x" * 201}, "--label"),
                     ({"expires_days": 0}, "--expires-days"),
                     ({"expires_days": 731}, "--expires-days"),
                     ({"area": ["620121001"]}, "6-digit")):
        with pytest.raises(UserError, match=rule):
            create_key(alert_store, **{"role": "county", "area": ["620121"], "label": "x",
                                       "created_by": "ops", **kw})  # type: ignore[arg-type]
    assert len(list_keys(alert_store)) == 2


def _entry(at: datetime, key_id: str | None = None, role: str | None = None,
           status: int = 200, **kw: object) -> AuditEntry:
    return AuditEntry(endpoint="/score", at=at, key_id=key_id, role=role, status=status,
                      **kw)  # type: ignore[arg-type]


def _count_inserts(engine: Engine) -> list[str]:
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _note(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO API_AUDIT"):
            seen.append(statement)

    return seen


def test_the_audit_log_writes_in_batches_off_the_request(
    alert_store: AlertStore, store_clock: FrozenClock
) -> None:
    info, _ = create_key(alert_store, role="township", area=["620121001"], label="t",
                         created_by="ops")
    inserts = _count_inserts(alert_store.engine)
    audit = AuditLog(alert_store, flush_seconds=0.2, max_batch=500)
    start = store_clock.now
    for i in range(1200):
        audit.record(_entry(start + timedelta(seconds=i), info.key_id, "township",
                            asked=[H1, H2], answered=[H1]))
    # a refused request with the key's id (wrong secret) does not count as a use
    audit.record(_entry(start + timedelta(days=1), info.key_id, None, 401,
                        refusal="wrong secret"))
    assert audit.flush(timeout=30)
    rows = read_audit(alert_store, key_id=info.key_id, limit=5000)
    assert len(rows) == 1201
    assert 3 <= len(inserts) <= 6, len(inserts)  # batches, not one insert per request
    newest = rows[0]
    assert (newest.status, newest.refusal, newest.role) == (401, "wrong secret", None)
    assert (rows[1].households_asked, rows[1].households_answered) == ([H1, H2], [H1])
    assert list_keys(alert_store)[0].last_used_at == start + timedelta(seconds=1199)
    # close() writes what is still queued
    audit.record(_entry(start, None, None, 401, refusal="no key"))
    audit.close()
    assert read_audit(alert_store, limit=1)[0].refusal == "no key"
    assert not audit._thread.is_alive()


def test_the_audit_log_keeps_rows_while_the_store_is_away(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'late.db'}")  # no tables yet
    db = StoreDatabase(engine)
    audit = AuditLog(db, flush_seconds=0.05, retry_seconds=0.2)
    now = datetime(2026, 6, 1, tzinfo=UTC)
    audit.record(_entry(now, None, None, 401, refusal="no key"))
    assert audit.flush(timeout=10)  # tried, failed, kept
    upgrade(engine)
    done = threading.Event()
    for _ in range(50):
        if read_audit(db):
            done.set()
            break
        threading.Event().wait(0.1)
    audit.close()
    assert done.is_set() and len(read_audit(db)) == 1
    engine.dispose()


def test_write_audit_is_one_transaction_and_never_holds_a_key(alert_store: AlertStore) -> None:
    info, key = create_key(alert_store, role="platform", label="p", created_by="ops")
    at = alert_store.now()
    write_audit(alert_store, [_entry(at, info.key_id, "platform", answered=[H3])])
    (row,) = read_audit(alert_store)
    assert (row.key_id, row.role, row.endpoint, row.households_answered) == (
        info.key_id, "platform", "/score", [H3])
    assert row.at == at
    assert key not in _all_text(alert_store)


def test_0004_adds_the_tables_and_leaves_the_alerts(store_url: str) -> None:
    engine = make_engine(store_url)
    try:
        upgrade(engine, "0003")
        with AlertStore(engine) as store:
            store.add_alerts([alert("hh-a")])
        upgrade(engine)
        assert {"api_keys", "api_audit"} <= set(inspect(engine).get_table_names())
        with AlertStore(engine) as store:
            create_key(store, role="analyst", label="a", created_by="ops")
            assert list_alerts(store)["household_key"].tolist() == ["hh-a"]
        downgrade(engine, "0003")
        assert current_revision(engine) == "0003"
        assert not {"api_keys", "api_audit"} & set(inspect(engine).get_table_names())
        with AlertStore(engine) as store:
            assert list_alerts(store)["household_key"].tolist() == ["hh-a"]
    finally:
        engine.dispose()


# -- doudi keys --------------------------------------------------------------------------------
def test_doudi_keys_create_list_revoke(alert_store: AlertStore, tmp_path: Path) -> None:
    url = store_url_of(alert_store)
    made = doudi(tmp_path, "keys", "create", "--role", "township", "--area", "620121001",
                 "--label", "乡镇 A", "--expires-days", "7", "--database-url", url)
    assert made.code == 0, made.err
    key = made.out.strip()
    assert KEY.match(key) and made.out == key + "\n"  # stdout: the key alone
    key_id = key_id_of(key)
    assert key_id is not None
    assert f"created API key {key_id}: role township, area 620121001" in made.err
    assert "shown this once" in made.err and key not in made.err

    listed = doudi(tmp_path, "keys", "list", "--database-url", url)
    assert listed.code == 0, listed.err
    assert key_id in listed.out and "620121001" in listed.out and "乡镇 A" in listed.out
    assert "active" in listed.out
    rows = json.loads(doudi(tmp_path, "keys", "list", "--format", "json",
                            "--database-url", url).out)
    assert [(r["key_id"], r["role"], r["area"], r["state"], r["last_used_at"])
            for r in rows] == [(key_id, "township", ["620121001"], "active", None)]
    stored = stored_key(alert_store, key_id)
    assert stored is not None
    for out in (listed.out, json.dumps(rows)):
        assert key[-64:] not in out and stored.key_hash not in out

    gone = doudi(tmp_path, "keys", "revoke", key_id, "--database-url", url)
    assert gone.code == 0 and f"revoked API key {key_id}" in gone.out
    again = doudi(tmp_path, "keys", "revoke", key_id, "--database-url", url)
    assert again.code == 0 and "already revoked" in again.out
    assert "revoked" in doudi(tmp_path, "keys", "list", "--database-url", url).out

    refused(doudi(tmp_path, "keys", "create", "--role", "county", "--area", "620121001",
                  "--label", "x", "--database-url", url), "6-digit county codes")
    refused(doudi(tmp_path, "keys", "create", "--role", "platform", "--area", "620121",
                  "--label", "x", "--database-url", url), "whole province")
    refused(doudi(tmp_path, "keys", "revoke", "0" * 12, "--database-url", url), "no API key")
    refused(doudi(tmp_path, "keys", "list", "--format", "xml", "--database-url", url),
            "--format")
    assert len(list_keys(alert_store)) == 1


def test_keys_commands_do_not_wait_for_the_workspace_lock() -> None:
    from jobs.cli import app
    from jobs.commands import command_paths

    for path, info in command_paths(app):
        if path.startswith("keys "):
            assert not getattr(info.callback, "__doudi_locked__", False), path
