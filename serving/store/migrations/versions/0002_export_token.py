"""Export audit rows name their export's token (atomic, audited exports).

An export writes its files in a staging folder named by a random token, commits the
audit row (with the token) and the alerts' dispatch in one transaction, then moves the
files into place. After a crash, the token tells a rerun whether that staging folder
was committed (finish moving it) or not (delete it).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("export_audit") as batch:
        batch.add_column(sa.Column("export_token", sa.String(length=32), nullable=True))
        batch.create_index("ix_export_audit_export_token", ["export_token"])


def downgrade() -> None:
    with op.batch_alter_table("export_audit") as batch:
        batch.drop_index("ix_export_audit_export_token")
        batch.drop_column("export_token")
