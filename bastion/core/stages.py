"""The seams between pipeline stages, as small Protocols wired in app.py."""

from __future__ import annotations

from typing import Protocol

from bastion.core.credentials import Credentials, SuppliedToken
from bastion.core.errors import BastionError
from bastion.core.records import AuditRecord, Decision, InboundCall, Principal
from bastion.core.replies import Reply


class Authenticator(Protocol):
    def authenticate(self, call: InboundCall, authorization: str | None) -> Principal:
        """``authorization`` is the raw Authorization header, kept out of InboundCall so no
        record, log line or upstream request can ever carry the client's token."""
        ...

    def insufficient_scope(self, call: InboundCall, scopes: tuple[str, ...], reason: str) -> BastionError:
        """The error for a call that policy allows only with ``scopes`` (a 403 challenge
        naming them and the endpoint's own required scopes, so the client can step up)."""
        ...


class PolicyEngine(Protocol):
    def decide(self, principal: Principal, call: InboundCall) -> Decision: ...


class CredentialResolver(Protocol):
    def bind(
        self, principal: Principal, decision: Decision, supplied: SuppliedToken | None, tool: str | None
    ) -> Credentials: ...


class Dispatcher(Protocol):
    def known(self, endpoint: str | None) -> bool: ...

    async def dispatch(
        self, call: InboundCall, principal: Principal, decision: Decision, credentials: Credentials
    ) -> Reply:
        """``decision.lists``, when set, filters what list methods return to this principal."""
        ...


class AuditSink(Protocol):
    def record(self, rec: AuditRecord) -> None: ...
