"""The vault stage: binds a principal to the credentials each upstream needs for it.

Upstreams without per-user authentication (``auth.type: none``; their static ``http.headers``
live in their HTTP client) need nothing, so a deployment without any costs one attribute
lookup per call. Upstreams with a :class:`CredentialSource` get their credential resolved when
the upstream stage first talks to them for this call, and only then.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from bastion.core.credentials import Credentials
from bastion.core.records import NO_CREDENTIAL, Decision, Principal, UpstreamCredential


class CredentialSource(Protocol):
    async def credential(self, principal: Principal) -> UpstreamCredential: ...

    def forget(self, principal: Principal) -> None:
        """The upstream refused the credential: do not hand it out again."""
        ...


class _NoCredentials:
    __slots__ = ()

    async def for_upstream(self, name: str) -> UpstreamCredential:
        return NO_CREDENTIAL

    def refused(self, name: str) -> None:
        return


NO_CREDENTIALS = _NoCredentials()


class _Bound:
    __slots__ = ("_principal", "_sources")

    def __init__(self, sources: Mapping[str, CredentialSource], principal: Principal) -> None:
        self._sources = sources
        self._principal = principal

    async def for_upstream(self, name: str) -> UpstreamCredential:
        source = self._sources.get(name)
        if source is None:
            return NO_CREDENTIAL
        return await source.credential(self._principal)

    def refused(self, name: str) -> None:
        source = self._sources.get(name)
        if source is not None:
            source.forget(self._principal)


class Vault:
    def __init__(self, sources: Mapping[str, CredentialSource] | None = None) -> None:
        self._sources = dict(sources or {})

    def has_source(self, name: str) -> bool:
        return name in self._sources

    def bind(self, principal: Principal, decision: Decision) -> Credentials:
        if not self._sources:
            return NO_CREDENTIALS
        return _Bound(self._sources, principal)
