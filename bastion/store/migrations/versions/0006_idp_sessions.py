"""Sign-ins at enterprise IdPs: the sealed IdP refresh token Bastion re-checks a user
with when an MCP client refreshes, and the session's maximum lifetime.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "idp_sessions",
        sa.Column("session_id", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        # sealed by the caller (AES-GCM): the database never holds an IdP token in the clear
        sa.Column("sealed_refresh_token", sa.Text),
        sa.Column("auth_time", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("checked_at", sa.Double, nullable=False),
    )
    # delete_for_user (a user disabled or deleted, signed out at one IdP)
    op.create_index("ix_idp_sessions_user_id", "idp_sessions", ["user_id"])
    # purge_expired
    op.create_index("ix_idp_sessions_expires_at", "idp_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_idp_sessions_expires_at", table_name="idp_sessions")
    op.drop_index("ix_idp_sessions_user_id", table_name="idp_sessions")
    op.drop_table("idp_sessions")
