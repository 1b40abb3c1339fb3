"""Reaching the alert store's database: its URL, the engine, transactions, queries in chunks."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from doudi.settings import Settings, get_settings

# Keeps IN (...) lists well under SQLite's and PostgreSQL's parameter limits.
CHUNK = 500

T = TypeVar("T")


def chunks(values: Sequence[T]) -> Iterator[Sequence[T]]:
    """`values` in slices of at most CHUNK, for `column.in_(slice)` queries."""
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


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


def utcnow() -> datetime:
    """The store's default clock: now, in UTC."""
    return datetime.now(UTC)


class StoreDatabase:
    """The store's database: an engine, one transaction per call, and the store's clock."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self._clock = clock
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def __enter__(self) -> Self:
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
