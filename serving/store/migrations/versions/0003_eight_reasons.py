"""An alert keeps up to eight reasons (`settings.max_reasons` goes up to 8), not four.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-14
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The name as 0001 created it: the naming convention prefixed its given name once more.
RANK_RANGE = "ck_alert_reasons_ck_alert_reasons_rank_range"


def _rank_range(most: int) -> None:
    # SQLite cannot alter a CHECK: batch mode copies the table with the new one.
    with op.batch_alter_table("alert_reasons") as batch:
        batch.drop_constraint(op.f(RANK_RANGE), type_="check")
        batch.create_check_constraint(op.f(RANK_RANGE), f"rank BETWEEN 1 AND {most}")


def upgrade() -> None:
    _rank_range(8)


def downgrade() -> None:
    # Refused by the database while an alert has a fifth or later reason.
    _rank_range(4)
