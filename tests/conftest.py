"""Fixtures shared by every test folder."""

from tests.support.postgres import pg_server

__all__ = ["pg_server"]
