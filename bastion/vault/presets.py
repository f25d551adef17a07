"""Downstream OAuth providers for ``connections:`` — data, not subclasses.

A preset says where the provider's endpoints are, what to ask for by default, and its quirks;
:func:`resolve` applies it to a configured connection, with the configuration winning, into a
frozen :class:`ResolvedConnection` that the provider client and the vault run on. Endpoints are
those the providers document; anything here can be overridden in the connection's config.

Quirks, per provider:

- GitHub answers the token endpoint in form encoding unless asked for JSON (Bastion always sends
  ``Accept: application/json``), and reports errors with HTTP 200 and an ``error`` field (a dead
  refresh token is ``bad_refresh_token``). OAuth-app tokens do not expire; GitHub-app user tokens
  do (8 hours) and come with a refresh token. A token is revoked with
  ``DELETE /applications/{client_id}/token`` (client Basic auth, JSON body), not RFC 7009.
- Google gives a refresh token only with ``access_type=offline`` (and again on a reconnect only
  with ``prompt=consent``).
- Microsoft (Entra ID, for Graph) needs the ``offline_access`` scope for a refresh token; it has
  no revocation endpoint; the account name comes from the ID token (``openid`` is asked for).
- Salesforce: the login host is ``login.salesforce.com``, ``test.salesforce.com`` (sandbox) or a
  My Domain; the ``refresh_token`` scope grants a refresh token; token responses carry no
  ``expires_in`` (the session timeout is the org's), so tokens are renewed when an upstream
  refuses them; they carry ``instance_url``, the API base of the user's org, which is kept.
- Slack (user tokens): user scopes go in ``user_scope`` (comma separated), the user's token is in
  ``authed_user``; errors are HTTP 200 with ``ok: false``; user tokens have ``token_type: user``.
- Atlassian: ``audience=api.atlassian.com`` and ``prompt=consent`` on the authorization request,
  ``offline_access`` for a refresh token (rotating).
- Zoom: client authentication with HTTP Basic only; refresh tokens rotate.
- HubSpot: client credentials in the form; access tokens live 30 minutes, refresh tokens do not
  rotate; its revocation (``DELETE .../refresh-tokens/<token>``) puts the token in the URL, so
  Bastion does not use it: revoke the app in HubSpot to cut access at once.
- Linear: scopes are comma separated (``read``, ``write``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote

from bastion.config.connections import ApiKeyConnection, OAuthConnection

AccountSource = Literal["userinfo", "id_token"]
RevocationStyle = Literal["rfc7009", "github"]
DEAD_GRANT = ("invalid_grant",)


@dataclass(frozen=True, slots=True)
class ProviderPreset:
    label: str
    authorization_endpoint: str | None = None  # {tenant} and {login} are filled in
    token_endpoint: str | None = None
    revocation_endpoint: str | None = None
    userinfo_endpoint: str | None = None
    scopes: tuple[str, ...] = ()  # asked for unless the connection names its own
    required_scopes: tuple[str, ...] = ()  # always asked for (a refresh token depends on them)
    scope_param: str = "scope"
    scope_separator: str = " "
    auth_method: str = "client_secret_basic"
    pkce: bool = True
    authorize_params: Mapping[str, str] = field(default_factory=dict)
    account_claim: str | None = None
    account_source: AccountSource = "userinfo"
    token_types: tuple[str, ...] = ("bearer",)  # accepted token_type values (lowercase)
    dead_grant: tuple[str, ...] = DEAD_GRANT  # refresh errors meaning the grant is gone for good
    nested_tokens: str | None = None  # the token response member holding the user's tokens
    revocation_style: RevocationStyle = "rfc7009"
    keeps_instance_url: bool = False  # the token response's instance_url is kept (an https URL)


_SALESFORCE = "{login}/services/oauth2"
_MICROSOFT = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0"

PRESETS: Mapping[str, ProviderPreset] = {
    "github": ProviderPreset(
        label="GitHub",
        authorization_endpoint="https://github.com/login/oauth/authorize",
        token_endpoint="https://github.com/login/oauth/access_token",  # noqa: S106 - a URL
        revocation_endpoint="https://api.github.com/applications/{client_id}/token",
        userinfo_endpoint="https://api.github.com/user",
        scopes=("read:user",),
        auth_method="client_secret_post",
        account_claim="login",
        dead_grant=("invalid_grant", "bad_refresh_token"),
        revocation_style="github",
    ),
    "google": ProviderPreset(
        label="Google",
        authorization_endpoint="https://accounts.google.com/o/oauth2/v2/auth",
        token_endpoint="https://oauth2.googleapis.com/token",  # noqa: S106 - a URL
        revocation_endpoint="https://oauth2.googleapis.com/revoke",
        userinfo_endpoint="https://openidconnect.googleapis.com/v1/userinfo",
        scopes=("openid", "email"),
        auth_method="client_secret_post",
        authorize_params={"access_type": "offline", "prompt": "consent"},
        account_claim="email",
    ),
    "microsoft": ProviderPreset(
        label="Microsoft",
        authorization_endpoint=f"{_MICROSOFT}/authorize",
        token_endpoint=f"{_MICROSOFT}/token",
        scopes=("openid", "User.Read"),
        required_scopes=("offline_access",),
        auth_method="client_secret_post",
        account_claim="preferred_username",
        account_source="id_token",
    ),
    "salesforce": ProviderPreset(
        label="Salesforce",
        authorization_endpoint=f"{_SALESFORCE}/authorize",
        token_endpoint=f"{_SALESFORCE}/token",
        revocation_endpoint=f"{_SALESFORCE}/revoke",
        userinfo_endpoint=f"{_SALESFORCE}/userinfo",
        scopes=("api", "refresh_token"),
        auth_method="client_secret_post",
        account_claim="preferred_username",
        keeps_instance_url=True,
    ),
    "slack": ProviderPreset(
        label="Slack",
        authorization_endpoint="https://slack.com/oauth/v2/authorize",
        token_endpoint="https://slack.com/api/oauth.v2.access",  # noqa: S106 - a URL
        revocation_endpoint="https://slack.com/api/auth.revoke",
        scope_param="user_scope",
        scope_separator=",",
        auth_method="client_secret_post",
        token_types=("bearer", "user"),
        dead_grant=("invalid_grant", "invalid_refresh_token", "token_revoked", "token_expired"),
        nested_tokens="authed_user",
    ),
    "atlassian": ProviderPreset(
        label="Atlassian",
        authorization_endpoint="https://auth.atlassian.com/authorize",
        token_endpoint="https://auth.atlassian.com/oauth/token",  # noqa: S106 - a URL
        userinfo_endpoint="https://api.atlassian.com/me",
        scopes=("read:me",),
        required_scopes=("offline_access",),
        auth_method="client_secret_post",
        authorize_params={"audience": "api.atlassian.com", "prompt": "consent"},
        account_claim="email",
    ),
    "zoom": ProviderPreset(
        label="Zoom",
        authorization_endpoint="https://zoom.us/oauth/authorize",
        token_endpoint="https://zoom.us/oauth/token",  # noqa: S106 - a URL
        revocation_endpoint="https://zoom.us/oauth/revoke",
        userinfo_endpoint="https://api.zoom.us/v2/users/me",
        auth_method="client_secret_basic",
        account_claim="email",
    ),
    "hubspot": ProviderPreset(
        label="HubSpot",
        authorization_endpoint="https://app.hubspot.com/oauth/authorize",
        token_endpoint="https://api.hubapi.com/oauth/v1/token",  # noqa: S106 - a URL
        scopes=("oauth",),
        auth_method="client_secret_post",
        dead_grant=("invalid_grant", "bad_refresh_token"),
    ),
    "linear": ProviderPreset(
        label="Linear",
        authorization_endpoint="https://linear.app/oauth/authorize",
        token_endpoint="https://api.linear.app/oauth/token",  # noqa: S106 - a URL
        revocation_endpoint="https://api.linear.app/oauth/revoke",
        scopes=("read",),
        scope_separator=",",
        auth_method="client_secret_post",
    ),
    "oauth": ProviderPreset(label=""),
}


@dataclass(frozen=True, slots=True)
class ResolvedOAuth:
    """Everything the provider client needs, preset and overrides applied. Endpoints may still be
    None when ``issuer`` is set: discovery fills them in."""

    preset: str
    client_id: str
    client_secret: str | None = field(repr=False)
    auth_method: str  # client_secret_basic, client_secret_post or none
    issuer: str | None
    authorization_endpoint: str | None
    token_endpoint: str | None
    revocation_endpoint: str | None
    userinfo_endpoint: str | None
    required_scopes: tuple[str, ...]
    scope_param: str
    scope_separator: str
    pkce: bool
    authorize_params: tuple[tuple[str, str], ...]
    account_claim: str | None
    account_source: AccountSource
    token_types: tuple[str, ...]
    dead_grant: tuple[str, ...]
    nested_tokens: str | None
    revocation_style: RevocationStyle
    timeout: float
    # sent with every token request too (upstream_oauth: the RFC 8707 resource)
    token_params: tuple[tuple[str, str], ...] = ()
    # RFC 9207: the provider sends ``iss`` with its authorization responses, and they must carry it
    iss_parameter: bool = False
    # the token response's ``instance_url`` (the API base of the user's org) is kept
    keeps_instance_url: bool = False


@dataclass(frozen=True, slots=True)
class ResolvedConnection:
    """A ``connections:`` entry ready to run: what the pages show (``name``, ``type``, ``label``,
    ``scopes`` as asked for, ``instructions``) and, for OAuth, the provider settings."""

    name: str
    type: str  # "oauth" | "api_key"
    label: str
    scopes: tuple[str, ...] = ()
    instructions: str | None = None
    refresh_margin: int = 60
    oauth: ResolvedOAuth | None = None


def resolve(config: OAuthConnection | ApiKeyConnection) -> ResolvedConnection:
    if isinstance(config, ApiKeyConnection):
        return ResolvedConnection(
            name=config.name, type="api_key", label=config.label, instructions=config.instructions
        )
    preset = PRESETS[config.preset]
    login = config.instance or (
        "https://test.salesforce.com" if config.sandbox else "https://login.salesforce.com"
    )
    values = {
        "tenant": config.tenant or "common",
        "login": login.rstrip("/"),
        "client_id": quote(config.client_id, safe=""),
    }

    def endpoint(configured: str | None, template: str | None) -> str | None:
        if configured is not None:
            return configured
        return template.format(**values) if template is not None else None

    method: str | None = config.token_endpoint_auth_method
    if method is None:
        method = preset.auth_method if config.preset != "oauth" else None
        method = method or ("client_secret_basic" if config.client_secret else "none")
    scopes = tuple(config.scopes) if config.scopes is not None else preset.scopes
    scopes = (*scopes, *(s for s in preset.required_scopes if s not in scopes))
    revocation = endpoint(config.revocation_endpoint, preset.revocation_endpoint)
    style: RevocationStyle = preset.revocation_style if config.revocation_endpoint is None else "rfc7009"
    oauth = ResolvedOAuth(
        preset=config.preset,
        client_id=config.client_id,
        client_secret=config.client_secret,
        auth_method=method,
        issuer=config.issuer,
        authorization_endpoint=endpoint(config.authorization_endpoint, preset.authorization_endpoint),
        token_endpoint=endpoint(config.token_endpoint, preset.token_endpoint),
        revocation_endpoint=revocation,
        userinfo_endpoint=endpoint(config.userinfo_endpoint, preset.userinfo_endpoint),
        required_scopes=preset.required_scopes,
        scope_param=preset.scope_param,
        scope_separator=preset.scope_separator,
        pkce=config.pkce if config.pkce is not None else preset.pkce,
        authorize_params=tuple({**preset.authorize_params, **config.extra_authorize_params}.items()),
        account_claim=config.account_claim or preset.account_claim,
        account_source=preset.account_source if config.userinfo_endpoint is None else "userinfo",
        token_types=preset.token_types,
        dead_grant=preset.dead_grant,
        nested_tokens=preset.nested_tokens,
        revocation_style=style,
        timeout=config.timeout,
        keeps_instance_url=preset.keeps_instance_url,
    )
    return ResolvedConnection(
        name=config.name,
        type="oauth",
        label=config.label or preset.label,
        scopes=scopes,
        refresh_margin=config.refresh_margin,
        oauth=oauth,
    )


def resolve_all(configs: list[OAuthConnection | ApiKeyConnection]) -> tuple[ResolvedConnection, ...]:
    return tuple(resolve(c) for c in configs)


__all__ = [
    "PRESETS",
    "ProviderPreset",
    "ResolvedConnection",
    "ResolvedOAuth",
    "resolve",
    "resolve_all",
]
