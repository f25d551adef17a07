"""Per-user downstream credentials (issue #7): one row per (user, connection), the secret sealed
under a data key of its own and that data key wrapped under a vault master key; a version for
compare-and-set writes and a lease for single-flight refreshes across replicas.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "vault_records",
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("connection", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        # the master key the data key is wrapped under (an id derived from it, never the key)
        sa.Column("key_id", sa.Text, nullable=False),
        # sealed by the caller (AES-256-GCM): the database never holds a credential in the clear
        sa.Column("wrapped_key", sa.Text, nullable=False),
        sa.Column("sealed", sa.Text, nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),  # JSON text: list
        sa.Column("expires_at", sa.Double),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("account", sa.Text),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("last_used_at", sa.Double),
        sa.Column("lease_owner", sa.Text),
        sa.Column("lease_until", sa.Double, nullable=False),
    )
    # key_ids (the startup check) and wrapped_under_other_than (bastion vault rotate-key);
    # list_for_user and delete_for_user use the primary key's leading column
    op.create_index("ix_vault_records_key_id", "vault_records", ["key_id"])


def downgrade() -> None:
    op.drop_index("ix_vault_records_key_id", table_name="vault_records")
    op.drop_table("vault_records")
