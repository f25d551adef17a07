"""Revoked JWT access tokens (a deny list every replica polls) and rate-limit hits shared
by every replica (login brute force, dynamic client registration).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.Text, primary_key=True),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("revoked_at", sa.Double, nullable=False),
    )
    # revoked_since (replicas polling for new revocations); purge_expired
    op.create_index("ix_revoked_tokens_revoked_at", "revoked_tokens", ["revoked_at"])
    op.create_index("ix_revoked_tokens_expires_at", "revoked_tokens", ["expires_at"])

    op.create_table(
        "throttle_hits",
        # INTEGER PRIMARY KEY on SQLite (the rowid), BIGSERIAL on Postgres
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("ts", sa.Double, nullable=False),
    )
    # hit counts one key's window; reset deletes one key
    op.create_index("ix_throttle_hits_key_ts", "throttle_hits", ["key", "ts"])
    # purge_before
    op.create_index("ix_throttle_hits_ts", "throttle_hits", ["ts"])


def downgrade() -> None:
    op.drop_index("ix_throttle_hits_ts", table_name="throttle_hits")
    op.drop_index("ix_throttle_hits_key_ts", table_name="throttle_hits")
    op.drop_table("throttle_hits")
    op.drop_index("ix_revoked_tokens_expires_at", table_name="revoked_tokens")
    op.drop_index("ix_revoked_tokens_revoked_at", table_name="revoked_tokens")
    op.drop_table("revoked_tokens")
