"""Creating and migrating the alert store's schema: Alembic, run from code.

No alembic.ini is needed: the script location is this package's `migrations/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine
from sqlalchemy.engine import Connection

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    """An Alembic config bound to `engine` (for upgrade, downgrade, autogenerate)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' would be read as interpolation by configparser.
    config.set_main_option(
        "sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%")
    )
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the store at `engine` up to `revision` (creating it from empty), all of it
    or none, and once when several processes open a new store at the same time.

    PostgreSQL: its DDL is transactional; an advisory lock makes a second migrator wait and
    then find the schema done. SQLite autocommits DDL in Python's driver (a kill -9 left
    some tables and no revision; two first runs raced): the migration runs on its own
    connection in one `BEGIN IMMEDIATE` transaction, which also makes a second migrator
    wait. A store left half-created before that (tables, no revision) is dropped and
    recreated when its tables are empty, else refused in one line.
    """
    if revision == "head" and current_revision(engine) == head_revision(engine):
        return  # the usual case: no write transaction, no waiting on other writers
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        migrator = _transactional_sqlite(engine)
        try:
            _upgrade(migrator, revision)
        finally:
            migrator.dispose()
        return
    _upgrade(engine, revision)


MIGRATION_LOCK = 0x646F756469  # PostgreSQL advisory lock key ("doudi")
SQLITE_WAIT_SECONDS = 60.0  # another process's migration: seconds, not minutes


def _upgrade(engine: Engine, revision: str) -> None:
    config = alembic_config(engine)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        _drop_half_created(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _transactional_sqlite(engine: Engine) -> Engine:
    """An engine on the same SQLite file whose transactions cover DDL (SQLAlchemy's
    pysqlite recipe): the driver's own transaction handling off, `BEGIN IMMEDIATE` ours."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    migrator = create_engine(engine.url, poolclass=NullPool,
                             connect_args={"timeout": SQLITE_WAIT_SECONDS})

    @event.listens_for(migrator, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(migrator, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return migrator


def _drop_half_created(connection: Connection) -> None:
    """Tables without a revision: a creation that died half-way (before migrations ran in
    one transaction). Empty: dropped, so the migration recreates them; else refused."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import MetaData, inspect, select
    from sqlalchemy import func as sql_func

    if MigrationContext.configure(connection).get_current_revision() is not None:
        return
    names = [t for t in inspect(connection).get_table_names() if t != "alembic_version"]
    if not names:
        return
    meta = MetaData()
    meta.reflect(connection, only=names)
    rows = sum(connection.execute(select(sql_func.count()).select_from(t)).scalar_one()
               for t in meta.tables.values())
    if rows:
        from doudi.errors import UserError

        raise UserError(
            f"alert store {connection.engine.url.render_as_string(hide_password=True)} has "
            f"{len(names)} table(s) holding {rows} row(s) but no schema revision (its "
            "creation was interrupted): back it up and restore a complete copy "
            "(docs/operations.md \"After a crash\")")
    meta.drop_all(connection)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Migrate the store at `engine` down to `revision` (`base` drops every table)."""
    config = alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the store is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    """The newest revision the code knows."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
