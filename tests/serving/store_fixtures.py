"""Fixtures shared by the alert-store tests: a fresh store on SQLite AND PostgreSQL.

PostgreSQL: one throw-away database per test session (per xdist worker), created
with psycopg in autocommit and dropped at exit; each test gets its own schema
in it (via `search_path`). Store tests share one migrated schema per process,
emptied before each test; migration tests get an empty schema of their own.
Test modules load this file with `pytest_plugins`; fixture names carry a
`store` prefix so they cannot shadow other areas' fixtures.
"""

from __future__ import annotations

import atexit
import functools
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine

from serving.store import AlertStore, NewAlert, Reason
from serving.store.database import make_engine
from serving.store.models import Base
from serving.store.schema import upgrade

PG_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_ROOT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class FrozenClock:
    """A clock that moves only when told: the store's times become exact in tests."""

    def __init__(self, start: datetime = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@functools.cache
def session_database() -> str:
    """Create this test session's PostgreSQL database once; drop it at exit."""
    name = f"doudi_store_test_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(PG_SERVER, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {err}")

    def drop() -> None:
        with psycopg.connect(PG_SERVER, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    atexit.register(drop)
    return name


@pytest.fixture
def store_pg_url() -> Iterator[str]:
    """A store URL on PostgreSQL whose tables land in a fresh schema."""
    database = session_database()
    schema = f"t_{secrets.token_hex(6)}"
    conninfo = f"postgresql://postgres@127.0.0.1:5432/{database}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield f"{PG_ROOT_URL}/{database}?options=-csearch_path%3D{schema}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=BACKENDS)
def store_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(store_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The URL of an empty database (no tables): for migration tests."""
    if store_backend == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return str(request.getfixturevalue("store_pg_url"))


@functools.cache
def _sqlite_template() -> Path:
    """A SQLite store migrated once per process; tests get copies (migrating is slow)."""
    folder = Path(tempfile.mkdtemp(prefix="doudi_store_template_"))
    atexit.register(shutil.rmtree, folder, True)
    engine = make_engine(f"sqlite:///{folder / 'alerts.db'}")
    upgrade(engine)
    engine.dispose()
    return folder / "alerts.db"


@functools.cache
def _pg_shared_engine() -> Engine:
    """One migrated PostgreSQL schema per process; emptied before each test."""
    database = session_database()
    with psycopg.connect(f"{PG_SERVER.rsplit('/', 1)[0]}/{database}", autocommit=True) as conn:
        conn.execute("CREATE SCHEMA shared")
    engine = make_engine(f"{PG_ROOT_URL}/{database}?options=-csearch_path%3Dshared")
    upgrade(engine)
    atexit.register(engine.dispose)
    return engine


@pytest.fixture
def store_clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def alert_store(
    store_backend: str, store_clock: FrozenClock, tmp_path: Path
) -> Iterator[AlertStore]:
    """A migrated, empty store on the parametrized backend."""
    if store_backend == "sqlite":
        path = tmp_path / "alerts.db"
        shutil.copyfile(_sqlite_template(), path)
        store = AlertStore(make_engine(f"sqlite:///{path}"), clock=store_clock)
        yield store
        store.dispose()
        return
    engine = _pg_shared_engine()
    # DELETE beats TRUNCATE on tables this small; ids keep counting up, which
    # no test relies on.
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
    yield AlertStore(engine, clock=store_clock)


def store_url_of(store: AlertStore) -> str:
    """The URL another client (e.g. the CLI) uses to reach `store`."""
    return store.engine.url.render_as_string(hide_password=False)


AS_OF = date(2026, 3, 31)
VILLAGE = "620102003007"  # township 620102003


def alert(
    key: str,
    *,
    as_of: date = AS_OF,
    version: str = "m1",
    village: str = VILLAGE,
    risk: float = 0.7,
    tier: str = "red",
    risk_types: tuple[str, ...] = ("illness",),
) -> NewAlert:
    """A model alert with two reasons, for hand-made cases."""
    return NewAlert(
        household_key=key,
        village_code=village,
        as_of=as_of,
        model_version=version,
        tier=tier,
        risk=risk,
        risk_types=risk_types,
        reasons=(
            Reason(1, "medical_spending", "近12个月自付医疗费用高", 0.21),
            Reason(2, "income_trend", "人均纯收入下降", 0.08),
        ),
    )
