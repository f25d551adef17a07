"""IdP sessions keep the ID token of the sign-in (sealed, with its expiry): the subject token
Bastion presents to the IdP in an RFC 8693 exchange for an ID-JAG (Enterprise-Managed
Authorization towards upstreams). Sessions from before stay without one until their next
refresh at the IdP, or the next sign-in.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Nullable, no default: ADD COLUMN on SQLite and Postgres alike, without a table rewrite.
    # Sealed by the caller (AES-GCM): the database never holds an IdP token in the clear.
    op.add_column("idp_sessions", sa.Column("sealed_id_token", sa.Text, nullable=True))
    op.add_column("idp_sessions", sa.Column("id_token_expires_at", sa.Double, nullable=True))


def downgrade() -> None:
    # SQLite >= 3.35 drops a column that is in no index or constraint.
    op.drop_column("idp_sessions", "id_token_expires_at")
    op.drop_column("idp_sessions", "sealed_id_token")
