"""OAuth client registrations: pre-registered (config) and RFC 7591 dynamic registrations.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "clients",
        sa.Column("client_id", sa.Text, primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("client_name", sa.Text),
        sa.Column("redirect_uris", sa.Text, nullable=False),
        sa.Column("grant_types", sa.Text, nullable=False),
        sa.Column("token_endpoint_auth_method", sa.Text, nullable=False),
        sa.Column("secret_hash", sa.Text),
        sa.Column("jwks", sa.Text),
        sa.Column("jwks_uri", sa.Text),
        sa.Column("scope", sa.Text),
        sa.Column("application_type", sa.Text, nullable=False),
        sa.Column("trusted", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double),
        sa.Column("last_used_at", sa.Double),
        sa.Column("metadata", sa.Text, nullable=False),
    )
    # purge_expired
    op.create_index("ix_clients_expires_at", "clients", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_clients_expires_at", table_name="clients")
    op.drop_table("clients")
