"""Initial alert store: alerts, reasons, status history, verdicts, referrals, export audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Migrations carry their own column types: the ORM models may change later, a
# migration must keep describing the schema as it was at its revision.
UTC_TIME = sa.DateTime(timezone=True)
STATUSES = "'new', 'dispatched', 'verified_confirmed', 'verified_dismissed', 'referred', 'closed'"


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("household_key", sa.String(length=64), nullable=False),
        sa.Column("county_code", sa.String(length=6), nullable=False),
        sa.Column("township_code", sa.String(length=9), nullable=False),
        sa.Column("village_code", sa.String(length=12), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("risk", sa.Float(), nullable=True),
        sa.Column("tier", sa.String(length=8), nullable=False),
        sa.Column("risk_types", sa.JSON(), nullable=False),
        sa.Column("departments", sa.JSON(), nullable=False),
        sa.Column("rule_triggers", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.CheckConstraint("source IN ('model', 'rules', 'both')", name="ck_alerts_source"),
        sa.CheckConstraint(f"status IN ({STATUSES})", name="ck_alerts_status"),
        sa.CheckConstraint("tier IN ('red', 'orange', 'yellow')", name="ck_alerts_tier"),
        sa.CheckConstraint(
            "risk IS NULL OR (risk >= 0 AND risk <= 1)", name="ck_alerts_risk_range"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.UniqueConstraint(
            "household_key",
            "as_of",
            "model_version",
            name="uq_alerts_household_key_as_of_model_version",
        ),
    )
    op.create_index("ix_alerts_township_code_status", "alerts", ["township_code", "status"])
    # One household, one chain: at most one alert per household that is not closed.
    op.create_index(
        "uq_alerts_open_household",
        "alerts",
        ["household_key"],
        unique=True,
        sqlite_where=sa.text("status <> 'closed'"),
        postgresql_where=sa.text("status <> 'closed'"),
    )

    op.create_table(
        "alert_reasons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("group_key", sa.String(length=64), nullable=False),
        sa.Column("text_zh", sa.Text(), nullable=False),
        sa.Column("contribution", sa.Float(), nullable=False),
        sa.Column("scale", sa.String(length=32), nullable=False),
        sa.CheckConstraint("rank BETWEEN 1 AND 4", name="ck_alert_reasons_rank_range"),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.id"],
            name="fk_alert_reasons_alert_id_alerts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_alert_reasons"),
        sa.UniqueConstraint("alert_id", "rank", name="uq_alert_reasons_alert_id_rank"),
    )

    op.create_table(
        "alert_status_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("from_status", sa.String(length=24), nullable=True),
        sa.Column("to_status", sa.String(length=24), nullable=False),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.id"],
            name="fk_alert_status_history_alert_id_alerts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_alert_status_history"),
    )
    op.create_index("ix_alert_status_history_alert_id", "alert_status_history", ["alert_id"])

    op.create_table(
        "verdicts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("risk_types", sa.JSON(), nullable=False),
        sa.Column("visited_on", sa.Date(), nullable=False),
        sa.Column("caseworker", sa.String(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("recorded_at", UTC_TIME, nullable=False),
        sa.Column("source_file", sa.String(length=255), nullable=True),
        sa.CheckConstraint("verdict IN ('confirmed', 'dismissed')", name="ck_verdicts_verdict"),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name="fk_verdicts_alert_id_alerts", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_verdicts"),
        sa.UniqueConstraint("alert_id", name="uq_verdicts_alert_id"),
    )

    op.create_table(
        "referrals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("department", sa.String(length=40), nullable=False),
        sa.Column("programme", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("referred_on", sa.Date(), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'granted', 'declined')", name="ck_referrals_status"
        ),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name="fk_referrals_alert_id_alerts", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_referrals"),
        sa.UniqueConstraint("alert_id", "department", name="uq_referrals_alert_id_department"),
    )

    op.create_table(
        "export_audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("township_code", sa.String(length=9), nullable=False),
        sa.Column("household_count", sa.Integer(), nullable=False),
        sa.Column("file_path", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_export_audit"),
    )
    op.create_index("ix_export_audit_township_code", "export_audit", ["township_code"])


def downgrade() -> None:
    op.drop_index("ix_export_audit_township_code", table_name="export_audit")
    op.drop_table("export_audit")
    op.drop_table("referrals")
    op.drop_table("verdicts")
    op.drop_index("ix_alert_status_history_alert_id", table_name="alert_status_history")
    op.drop_table("alert_status_history")
    op.drop_table("alert_reasons")
    op.drop_index("uq_alerts_open_household", table_name="alerts")
    op.drop_index("ix_alerts_township_code_status", table_name="alerts")
    op.drop_table("alerts")
