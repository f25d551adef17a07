"""Initial schema: the hash-chained audit log (records + chain head) and MCP sessions.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

GENESIS_HASH = "0" * 64


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("ts", sa.Double, nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("trace_id", sa.Text, nullable=False),
        sa.Column("endpoint", sa.Text),
        sa.Column("upstream", sa.Text),
        sa.Column("era", sa.Text),
        sa.Column("method", sa.Text),
        sa.Column("name", sa.Text),
        sa.Column("request_id", sa.Text),
        sa.Column("status", sa.BigInteger),
        sa.Column("error_code", sa.BigInteger),
        sa.Column("latency_ms", sa.Double),
        sa.Column("upstream_ms", sa.Double),
        sa.Column("subject", sa.Text),
        sa.Column("client_id", sa.Text),
        sa.Column("session", sa.Text),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    # ts: retention purges; trace_id: "what happened to request X".
    op.create_index("ix_audit_records_ts", "audit_records", ["ts"])
    op.create_index("ix_audit_records_trace_id", "audit_records", ["trace_id"])

    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS_HASH}])

    op.create_table(
        "sessions",
        sa.Column("session_id", sa.Text, primary_key=True),
        sa.Column("endpoint", sa.Text),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("protocol_version", sa.Text, nullable=False),
        sa.Column("mode", sa.Text, nullable=False),
        sa.Column("upstream_session_id", sa.Text),
        sa.Column("client_capabilities", sa.Text, nullable=False),
        sa.Column("client_info", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("last_seen", sa.Double, nullable=False),
        sa.Column("replica", sa.Text, nullable=False),
    )
    op.create_index("ix_sessions_last_seen", "sessions", ["last_seen"])


def downgrade() -> None:
    op.drop_table("sessions")
    op.drop_table("audit_head")
    op.drop_table("audit_records")
