"""Checks of ``upstreams[].auth`` against the rest of the configuration (the transport, the
identity providers, ``auth.enabled``, the ID-JAG bridge), run when ``Settings`` is validated.
Each failure is a ``ValueError`` naming the upstream, which pydantic reports with its location."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.config.connections import CONNECTION_NAME, RESERVED_NAMES
from bastion.config.upstream_auth import (
    BASTION_ISSUER,
    ClientSuppliedAuth,
    EmaUpstreamAuth,
    ServiceAuth,
    TokenExchangeAuth,
    UpstreamOAuthAuth,
    UserApiKeyAuth,
    UserOAuthAuth,
)

if TYPE_CHECKING:
    from bastion.config.model import Upstream


def check_upstream_auth(
    upstream: Upstream, *, providers: list[str], auth_enabled: bool, bridge_enabled: bool
) -> None:
    """``providers``: the names of identity_providers; ``bridge_enabled``: ema.bridge.enabled."""
    auth = upstream.auth
    if isinstance(auth, ClientSuppliedAuth) and upstream.http is None:
        raise ValueError(f"upstream '{upstream.name}': auth.type client_supplied needs an http upstream")
    if isinstance(auth, ServiceAuth | UserOAuthAuth | UserApiKeyAuth | TokenExchangeAuth):
        if upstream.stdio is not None and auth.env is None:
            raise ValueError(
                f"upstream '{upstream.name}': auth.type {auth.type} on a stdio upstream needs env "
                "(the environment variable that carries the credential)"
            )
        if not isinstance(auth, ServiceAuth) and not auth_enabled:
            raise ValueError(
                f"upstream '{upstream.name}': auth.type {auth.type} needs auth.enabled "
                "(each user must be known)"
            )
    if isinstance(auth, TokenExchangeAuth) and auth.identity_provider not in providers:
        raise ValueError(
            f"upstream '{upstream.name}': auth.type token_exchange: identity_provider "
            f"'{auth.identity_provider}' is not one of identity_providers"
        )
    if isinstance(auth, UpstreamOAuthAuth):
        if upstream.http is None or not auth_enabled:
            raise ValueError(
                f"upstream '{upstream.name}': auth.type upstream_oauth needs an http upstream, auth.enabled"
            )
        if not CONNECTION_NAME.match(upstream.name) or upstream.name in RESERVED_NAMES:
            raise ValueError(
                f"upstream '{upstream.name}': auth.type upstream_oauth makes a connection of the same name "
                "(/connect/<name>): lowercase letters, digits and '-', not 'callback'"
            )
    if isinstance(auth, EmaUpstreamAuth):
        _check_ema(
            upstream, auth, providers=providers, auth_enabled=auth_enabled, bridge_enabled=bridge_enabled
        )


def _check_ema(
    upstream: Upstream,
    auth: EmaUpstreamAuth,
    *,
    providers: list[str],
    auth_enabled: bool,
    bridge_enabled: bool,
) -> None:
    where = f"upstream '{upstream.name}': auth.type ema"
    if upstream.http is None:
        raise ValueError(f"{where} needs an http upstream")
    if not auth_enabled:
        raise ValueError(f"{where} needs auth.enabled (each user must be known)")
    if auth.id_jag_issuer == BASTION_ISSUER:
        if not bridge_enabled:
            raise ValueError(f"{where}: id_jag_issuer 'bastion' needs ema.bridge.enabled")
    elif auth.id_jag_issuer not in providers:
        raise ValueError(
            f"{where}: id_jag_issuer '{auth.id_jag_issuer}' is neither 'bastion' nor an identity provider"
        )


__all__ = ["check_upstream_auth"]
