"""Alembic migrations of Bastion's schema, run programmatically by ``bastion.store.factory``."""
