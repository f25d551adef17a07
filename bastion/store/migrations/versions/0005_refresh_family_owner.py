"""Refresh-token families learn their owner (user and client), so revoking a consent or
disabling a user can revoke that user's refresh tokens. Families issued before this
revision keep NULLs (their owner is only in the tokens' JSON payload).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Nullable, no default: ADD COLUMN on SQLite and Postgres alike, without a table rewrite.
    op.add_column("refresh_families", sa.Column("user_id", sa.Text))
    op.add_column("refresh_families", sa.Column("client_id", sa.Text))
    # revoke_for (one user's families, or those for one client)
    op.create_index("ix_refresh_families_user_client", "refresh_families", ["user_id", "client_id"])


def downgrade() -> None:
    op.drop_index("ix_refresh_families_user_client", table_name="refresh_families")
    # SQLite >= 3.35 drops a column that is in no index or constraint.
    op.drop_column("refresh_families", "client_id")
    op.drop_column("refresh_families", "user_id")
