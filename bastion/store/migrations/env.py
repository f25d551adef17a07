"""Alembic environment: runs on the connection handed over by ``bastion.store.factory``.

There is no alembic.ini and no URL here on purpose: the factory opens the async
engine, takes the migration lock inside a transaction and passes the (sync-facing)
connection through ``Config.attributes["connection"]``; the migrations then join that
transaction, so the lock and the schema change commit together.
"""

from __future__ import annotations

from alembic import context

from bastion.store.tables import VERSION_TABLE

connection = context.config.attributes.get("connection")
if context.is_offline_mode() or connection is None:
    raise RuntimeError("Bastion's migrations run through `bastion db upgrade`, not the alembic command")

context.configure(
    connection=connection,
    version_table=VERSION_TABLE,
    # SQLite cannot ALTER most things; batch mode lets later revisions use op.alter_column there too.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
