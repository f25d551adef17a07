"""Authorization server state: signing key ring, users, single-use grants, refresh-token
families, consents.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("blob", sa.LargeBinary, nullable=False),
    )

    op.create_table(
        "users",
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("password_hash", sa.Text),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("email", sa.Text),
        sa.Column("groups", sa.Text, nullable=False),
        sa.Column("attributes", sa.Text, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )

    op.create_table(
        "grants",
        sa.Column("kind", sa.Text, primary_key=True),
        sa.Column("key_hash", sa.Text, primary_key=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
    )
    # purge_expired
    op.create_index("ix_grants_expires_at", "grants", ["expires_at"])

    op.create_table(
        "refresh_families",
        sa.Column("family_id", sa.Text, primary_key=True),
        sa.Column("revoked", sa.Boolean, nullable=False),
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.Text, primary_key=True),
        sa.Column(
            "family_id",
            sa.Text,
            sa.ForeignKey("refresh_families.family_id", name="fk_refresh_tokens_family"),
            nullable=False,
        ),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("used_at", sa.Double),
        sa.Column("successor_hash", sa.Text),
    )
    op.create_index("ix_refresh_tokens_family_id", "refresh_tokens", ["family_id"])

    op.create_table(
        "consents",
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("client_id", sa.Text, primary_key=True),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("resources", sa.Text, nullable=False),
        sa.Column("granted_at", sa.Double, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("consents")
    op.drop_table("refresh_tokens")
    op.drop_table("refresh_families")
    op.drop_table("grants")
    op.drop_table("users")
    op.drop_table("signing_keys")
