"""Credential sources of ``upstreams[].auth``: ``service`` (one secret for everyone) and
``user_oauth`` / ``user_api_key`` (each user's own credential for a connection, from the vault).

A user without a usable credential gets :class:`~bastion.core.errors.ConnectionRequired`: a
connect intent is created and its URL goes back to the client as a URL elicitation. Only signed-in
users have connections; a client acting for itself (client credentials) gets none.

For stdio upstreams the credential is an environment variable, so it is fixed when the process
starts: a per-user credential gives each user their own process, and a renewed token a fresh one.

A header template of a ``user_oauth`` upstream may also use ``{instance_url}``: the API base the
provider gave with the user's tokens (Salesforce: their org's). Its connection must keep one (a
preset that does); a credential stored without one asks the user to reconnect.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from pathlib import Path
from typing import Protocol

from bastion.config.upstream_auth import (
    ServiceAuth,
    TokenExchangeAuth,
    UpstreamOAuthAuth,
    UserApiKeyAuth,
    UserOAuthAuth,
)
from bastion.core.errors import ConfigError, ConnectionRequired, UpstreamCredentialsUnavailable
from bastion.core.records import Principal, UpstreamCredential
from bastion.vault.intents import ConnectIntents
from bastion.vault.model import ConnectionMissing, Credential

log = logging.getLogger("bastion.vault")
NO_USER = (
    "this upstream acts for a signed-in user with their own account; a client acting for itself has none"
)
TOKEN_SLOT, INSTANCE_URL_SLOT = "{token}", "{instance_url}"
_PLACEHOLDERS = re.compile(r"(\{token\}|\{instance_url\})")


class AccessTokens(Protocol):
    """What a source needs of :class:`bastion.vault.connections.ConnectionVault`."""

    async def credential(self, user_id: str, connection: str) -> Credential: ...

    def keeps_instance_url(self, connection: str) -> bool:
        """Whether the connection's provider gives an ``instance_url`` that is kept."""
        ...

    async def forget_access_token(self, user_id: str, connection: str) -> None: ...

    async def granted_scopes(self, user_id: str, connection: str) -> tuple[str, ...] | None: ...


class Presenter:
    """Puts a credential where the upstream reads it: a header, or an environment variable."""

    def __init__(
        self,
        auth: ServiceAuth | UserOAuthAuth | UserApiKeyAuth | TokenExchangeAuth | UpstreamOAuthAuth,
        *,
        stdio: bool,
    ) -> None:
        self._stdio = stdio
        self._header = auth.header
        self._env = auth.env
        self._parts = _PLACEHOLDERS.split(auth.template)  # literal text and placeholders, in turn
        self.mode = auth.type

    @property
    def needs_instance_url(self) -> bool:
        """Whether the header's template uses ``{instance_url}`` (stdio: the template is unused)."""
        return not self._stdio and INSTANCE_URL_SLOT in self._parts[1::2]

    def present(
        self, secret: str, scope: str | None, *, instance_url: str | None = None
    ) -> UpstreamCredential:
        if self._stdio:
            assert self._env is not None  # config: stdio upstreams name the variable
            if scope is not None:  # a process per user, and a new one when the credential changes
                scope = f"{scope}:{hashlib.sha256(secret.encode()).hexdigest()[:16]}"
            return UpstreamCredential(env=((self._env, secret),), mode=self.mode, process_scope=scope)
        # one pass over the template: a token holding "{instance_url}" is sent as it is
        values = {TOKEN_SLOT: secret, INSTANCE_URL_SLOT: instance_url or INSTANCE_URL_SLOT}
        value = "".join(values[p] if i % 2 else p for i, p in enumerate(self._parts))
        return UpstreamCredential(headers=((self._header, value),), mode=self.mode, process_scope=scope)


def read_service_secret(auth: ServiceAuth, upstream: str) -> str:
    if auth.secret is not None:
        secret = auth.secret
    else:
        assert auth.secret_file is not None
        try:
            secret = Path(auth.secret_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"upstream '{upstream}': auth.secret_file {auth.secret_file}: {exc.strerror}"
            ) from None
    if not secret or any(ord(c) < 0x20 or ord(c) == 0x7F for c in secret):
        raise ConfigError(f"upstream '{upstream}': the service secret is empty or has control characters")
    return secret


class ServiceCredentials:
    """``auth: {type: service}``: the same secret for every call, whoever makes it."""

    def __init__(self, upstream: str, auth: ServiceAuth, *, stdio: bool) -> None:
        self._credential = Presenter(auth, stdio=stdio).present(read_service_secret(auth, upstream), None)

    async def credential(self, principal: Principal) -> UpstreamCredential:
        return self._credential

    def forget(self, principal: Principal) -> None:
        return  # nothing to renew: the administrator must fix the secret

    async def more_scopes(self, principal: Principal, scopes: tuple[str, ...]) -> ConnectionRequired | None:
        return None  # one secret for everyone: no user can grant it more


class ConnectionCredentials:
    """``auth: {type: user_oauth | user_api_key}``: the user's own credential for a connection;
    ``upstream_oauth``: for the connection of the upstream's own name."""

    def __init__(
        self,
        upstream: str,
        auth: UserOAuthAuth | UserApiKeyAuth | UpstreamOAuthAuth,
        *,
        label: str,
        tokens: AccessTokens,
        intents: ConnectIntents,
        stdio: bool,
    ) -> None:
        self._upstream = upstream
        self._connection = upstream if isinstance(auth, UpstreamOAuthAuth) else auth.connection
        self._label = label
        self._tokens = tokens
        self._intents = intents
        self._presenter = Presenter(auth, stdio=stdio)
        if self._presenter.needs_instance_url and not tokens.keeps_instance_url(self._connection):
            raise ConfigError(
                f"upstream '{upstream}': auth.template uses {INSTANCE_URL_SLOT}, but connection "
                f"'{self._connection}' keeps none (only presets that do, such as salesforce)"
            )
        self._background: set[asyncio.Task[None]] = set()

    async def credential(self, principal: Principal) -> UpstreamCredential:
        if not principal.authenticated or principal.client_id == principal.subject:
            raise UpstreamCredentialsUnavailable(self._upstream, NO_USER)
        try:
            found = await self._tokens.credential(principal.subject, self._connection)
            if self._presenter.needs_instance_url and found.instance_url is None:  # stored before
                raise ConnectionMissing(self._connection, reconnect=True, detail="no instance_url")
        except ConnectionMissing as missing:
            intent = await self._intents.create(
                principal.subject, self._connection, principal.client_id, reconnect=missing.reconnect
            )
            raise ConnectionRequired(
                self._upstream,
                connection=self._connection,
                label=self._label,
                url=self._intents.url(intent),
                elicitation_id=intent.elicitation_id,
                reconnect=missing.reconnect,
            ) from None
        return self._presenter.present(found.secret, principal.subject, instance_url=found.instance_url)

    async def more_scopes(self, principal: Principal, scopes: tuple[str, ...]) -> ConnectionRequired | None:
        """The upstream wants ``scopes`` (403 ``insufficient_scope``): the request to reconnect
        asking for them and every scope the token has (MCP authorization, step-up), or None when
        the token has them all already, so reconnecting would not help (no endless loop)."""
        held = await self._tokens.granted_scopes(principal.subject, self._connection)
        if held is None or set(scopes) <= set(held):
            return None
        wanted = tuple(dict.fromkeys((*held, *scopes)))
        intent = await self._intents.create(
            principal.subject, self._connection, principal.client_id, reconnect=True, scopes=wanted
        )
        return ConnectionRequired(
            self._upstream,
            connection=self._connection,
            label=self._label,
            url=self._intents.url(intent),
            elicitation_id=intent.elicitation_id,
            scopes=tuple(s for s in scopes if s not in held),
        )

    def forget(self, principal: Principal) -> None:
        """The upstream refused the token: the next call refreshes it first."""
        task = asyncio.ensure_future(self._tokens.forget_access_token(principal.subject, self._connection))
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not mark a %s token as refused: %s", self._connection, task.exception())


__all__ = ["AccessTokens", "ConnectionCredentials", "Presenter", "ServiceCredentials", "read_service_secret"]
