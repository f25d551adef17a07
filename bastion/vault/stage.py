"""The vault stage: binds a principal to the credentials each upstream needs for it.

Upstreams without per-user authentication (``auth.type: none``; their static ``http.headers``
live in their HTTP client) need nothing, so a deployment without any costs one attribute
lookup per call. Upstreams with a :class:`CredentialSource` get their credential resolved when
the upstream stage first talks to them for this call, and only then.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from bastion.core.credentials import Credentials, SuppliedToken
from bastion.core.errors import ConnectionRequired
from bastion.core.records import NO_CREDENTIAL, Decision, Principal, UpstreamCredential
from bastion.vault.supplied import SuppliedCredentials


class CredentialSource(Protocol):
    async def credential(self, principal: Principal) -> UpstreamCredential: ...

    def forget(self, principal: Principal) -> None:
        """The upstream refused the credential: do not hand it out again."""
        ...

    async def more_scopes(self, principal: Principal, scopes: tuple[str, ...]) -> ConnectionRequired | None:
        """The upstream wants ``scopes`` the credential lacks: what to ask the user (None: nothing
        the user can do)."""
        ...


class _NoCredentials:
    """No upstream needs anything per user: one shared object, nothing allocated per call."""

    __slots__ = ()

    async def for_upstream(self, name: str) -> UpstreamCredential:
        return NO_CREDENTIAL

    def refused(self, name: str) -> None:
        return

    async def more_scopes(self, name: str, scopes: tuple[str, ...]) -> ConnectionRequired | None:
        return None


NO_CREDENTIALS = _NoCredentials()


class _Bound:
    __slots__ = ("_principal", "_sources", "_supplied", "_suppliers", "_tool")

    def __init__(
        self,
        vault: Vault,
        principal: Principal,
        supplied: SuppliedToken | None,
        tool: str | None,
    ) -> None:
        self._sources = vault.sources
        self._suppliers = vault.suppliers
        self._principal = principal
        self._supplied = supplied
        self._tool = tool

    async def for_upstream(self, name: str) -> UpstreamCredential:
        supplier = self._suppliers.get(name)
        if supplier is not None:
            return supplier.credential(self._principal, self._supplied, self._tool)
        source = self._sources.get(name)
        if source is None:
            return NO_CREDENTIAL
        return await source.credential(self._principal)

    def refused(self, name: str) -> None:
        source = self._sources.get(name)
        if source is not None:
            source.forget(self._principal)

    async def more_scopes(self, name: str, scopes: tuple[str, ...]) -> ConnectionRequired | None:
        source = self._sources.get(name)
        return await source.more_scopes(self._principal, scopes) if source is not None else None


class Vault:
    def __init__(
        self,
        sources: Mapping[str, CredentialSource] | None = None,
        suppliers: Mapping[str, SuppliedCredentials] | None = None,
    ) -> None:
        self.sources = dict(sources or {})
        self.suppliers = dict(suppliers or {})
        self._empty = not (self.sources or self.suppliers)

    def bind(
        self, principal: Principal, decision: Decision, supplied: SuppliedToken | None, tool: str | None
    ) -> Credentials:
        """``supplied``: a token the client sent with this call (#234 mode); ``tool``: the tool
        of a ``tools/call`` (None for any other message)."""
        if self._empty:
            return NO_CREDENTIALS
        return _Bound(self, principal, supplied, tool)
