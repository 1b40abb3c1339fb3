"""Alembic migrations are the only way the schema is made: up from empty, down, up again."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import IntegrityError

from doudi.settings import Settings
from serving.store import AlertStore, default_url, list_alerts, open_store
from serving.store.database import make_engine, normalise_url
from serving.store.models import AlertReason, Base
from serving.store.schema import current_revision, downgrade, head_revision, upgrade
from tests.serving.store_fixtures import alert

pytest_plugins = ["tests.serving.store_fixtures"]

TABLES = {
    "alerts",
    "alert_reasons",
    "alert_status_history",
    "verdicts",
    "referrals",
    "export_audit",
    "api_keys",
    "api_audit",
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
        assert current_revision(engine) == head_revision(engine) == "0004"

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


def test_0003_keeps_the_reasons_and_lets_an_alert_carry_eight(store_url: str) -> None:
    """Stores made before 0003 took four reasons at most; their rows survive the upgrade."""
    engine = make_engine(store_url)
    try:
        upgrade(engine, "0002")
        with AlertStore(engine) as store:
            (old,) = store.add_alerts([alert("hh-old")]).created
            eighth = AlertReason(alert_id=old, rank=8, group_key="g", text_zh="第八",
                                 contribution=0.1, scale="probability points")
            with pytest.raises(IntegrityError), store.transaction() as session:
                session.add(eighth)
        upgrade(engine)
        with AlertStore(engine) as store:
            assert [r.text_zh for r in store.get(old).reasons] == [
                "近12个月自付医疗费用高", "人均纯收入下降"
            ]
            with store.transaction() as session:
                session.add(eighth)
            assert [r.rank for r in store.get(old).reasons] == [1, 2, 8]
    finally:
        engine.dispose()


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
