"""SQLAlchemy Core tables the SQL store queries (the schema itself is created by migrations).

Keep in step with ``bastion/store/migrations/versions``: a migration is a frozen
snapshot and never imports this module, so a change here needs a new revision there.
"""

from __future__ import annotations

import sqlalchemy as sa

# Our own name, so Bastion can share a database with another Alembic-managed app.
VERSION_TABLE = "bastion_alembic_version"
# The single chain-head row; appends lock it, purges never touch it.
HEAD_ID = 1

metadata = sa.MetaData()

audit_records = sa.Table(
    "audit_records",
    metadata,
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

audit_head = sa.Table(
    "audit_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("session_id", sa.Text, primary_key=True),
    sa.Column("endpoint", sa.Text),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("protocol_version", sa.Text, nullable=False),
    sa.Column("mode", sa.Text, nullable=False),
    sa.Column("upstream_session_id", sa.Text),
    sa.Column("client_capabilities", sa.Text, nullable=False),  # JSON text
    sa.Column("client_info", sa.Text, nullable=False),  # JSON text
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("last_seen", sa.Double, nullable=False),
    sa.Column("replica", sa.Text, nullable=False),
)

# -- authorization server (revision 0002) -------------------------------------------------------

# One row (id = SIGNING_KEYS_ID): the sealed key ring, opaque to the store.
SIGNING_KEYS_ID = 1

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("blob", sa.LargeBinary, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("username", sa.Text, nullable=False),
    sa.UniqueConstraint("username", name="uq_users_username"),
    sa.Column("password_hash", sa.Text),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("email", sa.Text),
    sa.Column("groups", sa.Text, nullable=False),  # JSON text: sorted list
    sa.Column("attributes", sa.Text, nullable=False),  # JSON text
    sa.Column("disabled", sa.Boolean, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)

grants = sa.Table(
    "grants",
    metadata,
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("key_hash", sa.Text, primary_key=True),
    sa.Column("payload", sa.Text, nullable=False),  # JSON text
    sa.Column("expires_at", sa.Double, nullable=False),
)

# Revocation is one flag on the family row, and every rotation locks that row first:
# a family revoked concurrently with a rotation can never leave a live successor behind.
refresh_families = sa.Table(
    "refresh_families",
    metadata,
    sa.Column("family_id", sa.Text, primary_key=True),
    sa.Column("revoked", sa.Boolean, nullable=False),
    # revision 0005: the owner, for revoke_for (NULL for families issued before it)
    sa.Column("user_id", sa.Text),
    sa.Column("client_id", sa.Text),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("token_hash", sa.Text, primary_key=True),
    sa.Column(
        "family_id",
        sa.Text,
        sa.ForeignKey("refresh_families.family_id", name="fk_refresh_tokens_family"),
        nullable=False,
    ),
    sa.Column("payload", sa.Text, nullable=False),  # JSON text
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("used_at", sa.Double),
    sa.Column("successor_hash", sa.Text),
)

consents = sa.Table(
    "consents",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("scopes", sa.Text, nullable=False),  # JSON text: sorted list
    sa.Column("resources", sa.Text, nullable=False),  # JSON text: sorted list
    sa.Column("granted_at", sa.Double, nullable=False),
)


# -- OAuth clients (revision 0003) --------------------------------------------------------------

clients = sa.Table(
    "clients",
    metadata,
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("source", sa.Text, nullable=False),  # config or dcr
    sa.Column("client_name", sa.Text),
    sa.Column("redirect_uris", sa.Text, nullable=False),  # JSON text: list, in order
    sa.Column("grant_types", sa.Text, nullable=False),  # JSON text: list, in order
    sa.Column("token_endpoint_auth_method", sa.Text, nullable=False),
    sa.Column("secret_hash", sa.Text),  # SHA-256 hex, never the secret
    sa.Column("jwks", sa.Text),  # JSON text
    sa.Column("jwks_uri", sa.Text),
    sa.Column("scope", sa.Text),
    sa.Column("application_type", sa.Text, nullable=False),
    sa.Column("trusted", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double),
    sa.Column("last_used_at", sa.Double),
    sa.Column("metadata", sa.Text, nullable=False),  # JSON text
)


# -- revoked access tokens and shared rate limits (revision 0004) -------------------------------

revoked_tokens = sa.Table(
    "revoked_tokens",
    metadata,
    sa.Column("jti", sa.Text, primary_key=True),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("revoked_at", sa.Double, nullable=False),
)

# One row per attempt. The surrogate key is there only so the table has a primary key
# (Postgres logical replication refuses DELETEs on tables without a replica identity).
throttle_hits = sa.Table(
    "throttle_hits",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("ts", sa.Double, nullable=False),
)


# -- sign-ins at enterprise IdPs (revisions 0006, 0007) -----------------------------------------

idp_sessions = sa.Table(
    "idp_sessions",
    metadata,
    sa.Column("session_id", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("sealed_refresh_token", sa.Text),  # sealed by the caller (AES-GCM), never plaintext
    sa.Column("auth_time", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("checked_at", sa.Double, nullable=False),
    sa.Column("sealed_id_token", sa.Text),  # sealed by the caller (AES-GCM), never plaintext
    sa.Column("id_token_expires_at", sa.Double),
)


# -- per-user downstream credentials (revision 0008) --------------------------------------------

# The secret is sealed under a data key of its own, and that data key is wrapped under the vault
# master key ``key_id`` (bastion.vault.envelope): the database never holds a credential, or a key
# that opens one, in the clear. The lease columns make a refresh single-flight across replicas
# without holding a row lock during the HTTP call to the provider.
vault_records = sa.Table(
    "vault_records",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("connection", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("key_id", sa.Text, nullable=False),  # indexed: rotation finds records by it
    sa.Column("wrapped_key", sa.Text, nullable=False),
    sa.Column("sealed", sa.Text, nullable=False),
    sa.Column("scopes", sa.Text, nullable=False),  # JSON text: list, in the provider's order
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
