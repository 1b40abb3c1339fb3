"""Tables of the alert store (SQLAlchemy 2.0 typed ORM).

The schema is created only by the Alembic migrations in `migrations/`; these
classes mirror it for queries (tests check that the two agree).
Households appear only as pseudonymous `household_key`s, caseworkers as staff
codes: the store never holds a raw identity or household number.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from doudi.settings import MAX_REASONS_LIMIT

# Explicit constraint names keep migrations identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TIERS = ("red", "orange", "yellow")
SOURCES = ("model", "rules", "both")
VERDICTS = ("confirmed", "dismissed")
REFERRAL_STATUSES = ("pending", "granted", "declined")
STATUSES = (
    "new",
    "dispatched",
    "verified_confirmed",
    "verified_dismissed",
    "referred",
    "closed",
)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the alert store keeps times in UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime(), list[str]: JSON()}


class Alert(Base):
    """One alert: a household's chain of help, from the score to closure."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    household_key: Mapped[str] = mapped_column(String(64))
    county_code: Mapped[str] = mapped_column(String(6))
    township_code: Mapped[str] = mapped_column(String(9))
    village_code: Mapped[str] = mapped_column(String(12))
    as_of: Mapped[date] = mapped_column(Date)
    model_version: Mapped[str] = mapped_column(String(64))
    risk: Mapped[float | None] = mapped_column(Float)  # calibrated probability
    tier: Mapped[str] = mapped_column(String(8))
    risk_types: Mapped[list[str]]
    departments: Mapped[list[str]]
    rule_triggers: Mapped[list[str]]
    source: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(24))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    reasons: Mapped[list[AlertReason]] = relationship(
        back_populates="alert", order_by="AlertReason.rank", cascade="all, delete-orphan"
    )
    history: Mapped[list[StatusChange]] = relationship(
        back_populates="alert", order_by="StatusChange.id", cascade="all, delete-orphan"
    )
    verdict: Mapped[Verdict | None] = relationship(
        back_populates="alert", cascade="all, delete-orphan"
    )
    referrals: Mapped[list[Referral]] = relationship(
        back_populates="alert", order_by="Referral.id", cascade="all, delete-orphan"
    )

    __table_args__ = (
        UniqueConstraint("household_key", "as_of", "model_version"),
        CheckConstraint(_one_of("tier", TIERS), name="tier"),
        CheckConstraint(_one_of("source", SOURCES), name="source"),
        CheckConstraint(_one_of("status", STATUSES), name="status"),
        CheckConstraint("risk IS NULL OR (risk >= 0 AND risk <= 1)", name="risk_range"),
        Index("ix_alerts_township_code_status", "township_code", "status"),
        # One household, one chain: at most one alert that is not closed.
        Index(
            "uq_alerts_open_household",
            "household_key",
            unique=True,
            sqlite_where=text("status <> 'closed'"),
            postgresql_where=text("status <> 'closed'"),
        ),
    )


class AlertReason(Base):
    """One of the explained reasons shown with an alert (up to `MAX_REASONS_LIMIT`)."""

    __tablename__ = "alert_reasons"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(Integer)
    group_key: Mapped[str] = mapped_column(String(64))
    text_zh: Mapped[str] = mapped_column(Text)
    contribution: Mapped[float] = mapped_column(Float)
    scale: Mapped[str] = mapped_column(String(32))  # e.g. 'probability points'

    alert: Mapped[Alert] = relationship(back_populates="reasons")

    __table_args__ = (
        UniqueConstraint("alert_id", "rank"),
        CheckConstraint(f"rank BETWEEN 1 AND {MAX_REASONS_LIMIT}", name="rank_range"),
    )


class StatusChange(Base):
    """Every status change of an alert, with who made it and when."""

    __tablename__ = "alert_status_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(24))  # None: the alert's creation
    to_status: Mapped[str] = mapped_column(String(24))
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)

    alert: Mapped[Alert] = relationship(back_populates="history")


class Verdict(Base):
    """A caseworker's finding after visiting the household (one per alert)."""

    __tablename__ = "verdicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), unique=True)
    verdict: Mapped[str] = mapped_column(String(16))
    risk_types: Mapped[list[str]]  # confirmed hardship types; empty when dismissed
    visited_on: Mapped[date] = mapped_column(Date)
    caseworker: Mapped[str] = mapped_column(String(32))  # staff code, never a resident ID
    note: Mapped[str | None] = mapped_column(Text)
    recorded_at: Mapped[datetime]
    source_file: Mapped[str | None] = mapped_column(String(255))  # file name, for audit

    alert: Mapped[Alert] = relationship(back_populates="verdict")

    __table_args__ = (CheckConstraint(_one_of("verdict", VERDICTS), name="verdict"),)


class Referral(Base):
    """A confirmed hardship handed to one department (one row per department)."""

    __tablename__ = "referrals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    department: Mapped[str] = mapped_column(String(40))
    programme: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))
    referred_on: Mapped[date] = mapped_column(Date)
    updated_at: Mapped[datetime]

    alert: Mapped[Alert] = relationship(back_populates="referrals")

    __table_args__ = (
        UniqueConstraint("alert_id", "department"),
        CheckConstraint(_one_of("status", REFERRAL_STATUSES), name="status"),
    )


class ExportAudit(Base):
    """Who exported which township's households (re-identified) to which file."""

    __tablename__ = "export_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    actor: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    township_code: Mapped[str] = mapped_column(String(9), index=True)
    household_count: Mapped[int] = mapped_column(Integer)
    file_path: Mapped[str] = mapped_column(Text)
    # The export's staging token (serving/staging.py): after a crash, a committed export's
    # staging folder is finished, an uncommitted one deleted. None for rows before 0002.
    export_token: Mapped[str | None] = mapped_column(String(32), index=True)


ROLES = ("platform", "county", "township", "analyst")  # serving.access.Role


class ApiKey(Base):
    """A key of the scoring API (serving/access.py): its hash, never the key itself."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # the public key id
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 of the key, hex
    role: Mapped[str] = mapped_column(String(16))
    area: Mapped[list[str]]  # county or township codes; [] for the whole province
    label: Mapped[str] = mapped_column(String(200))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]

    __table_args__ = (CheckConstraint(_one_of("role", ROLES), name="role"),)


class ApiAudit(Base):
    """One request to an API endpoint, allowed or refused: who, what, which households."""

    __tablename__ = "api_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    key_id: Mapped[str | None] = mapped_column(String(16))  # None: no key of the store
    role: Mapped[str | None] = mapped_column(String(16))
    endpoint: Mapped[str] = mapped_column(String(32))
    status: Mapped[int] = mapped_column(Integer)  # the HTTP status answered
    refusal: Mapped[str | None] = mapped_column(String(32))  # why a 401/403, else None
    households_asked: Mapped[list[str]]  # well-formed pseudonyms only, never raw input
    households_answered: Mapped[list[str]]

    __table_args__ = (Index("ix_api_audit_key_id_at", "key_id", "at"),)
