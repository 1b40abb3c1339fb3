"""Alembic migrations are the only way the schema is made: up from empty, down, up again."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from doudi.settings import Settings
from serving.store import default_url, list_alerts, open_store
from serving.store.models import Base
from serving.store.schema import current_revision, downgrade, head_revision, upgrade
from serving.store.store import make_engine, normalise_url
from tests.serving.test_store_fixtures import alert

pytest_plugins = ["tests.serving.test_store_fixtures"]

TABLES = {
    "alerts",
    "alert_reasons",
    "alert_status_history",
    "verdicts",
    "referrals",
    "export_audit",
}


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_from_empty_downgrade_to_base_and_up_again(store_url: str) -> None:
    engine = make_engine(store_url)
    try:
        assert _tables(engine) == set()
        assert current_revision(engine) is None
        upgrade(engine)
        assert _tables(engine) == TABLES
        assert current_revision(engine) == head_revision(engine) == "0002"

        # The ORM models and the migrated schema agree (no autogenerate diff).
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []

        downgrade(engine, "base")
        assert _tables(engine) == set()
        assert current_revision(engine) is None
        upgrade(engine)
        assert _tables(engine) == TABLES
    finally:
        engine.dispose()


def test_open_store_migrates_once_and_keeps_data(store_url: str) -> None:
    with open_store(store_url) as store:
        store.add_alerts([alert("hh-a")])
    with open_store(store_url) as store:  # already at head: nothing to do
        assert list_alerts(store)["household_key"].tolist() == ["hh-a"]
        assert list_alerts(store)["as_of"].tolist() == [date(2026, 3, 31)]


def test_postgres_urls_without_a_driver_use_psycopg() -> None:
    assert normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"


def test_default_store_is_sqlite_in_the_workspace(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "ws")
    assert default_url(settings) == f"sqlite:///{tmp_path / 'ws' / 'alerts.db'}"
    with open_store(settings=settings) as store:
        assert list_alerts(store).empty
    assert (tmp_path / "ws" / "alerts.db").is_file()
    other = Settings(home=tmp_path, database_url="postgresql://postgres@127.0.0.1/x")
    assert default_url(other) == "postgresql://postgres@127.0.0.1/x"
