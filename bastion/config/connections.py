"""``connections:`` in bastion.yaml: the downstream services users connect their own accounts at
(Salesforce, HubSpot, GitHub, ...), each a ``type: oauth`` provider or a ``type: api_key`` that
users paste. Upstreams name a connection in ``auth: {type: user_oauth | user_api_key}``.

An OAuth connection is a preset (data in ``bastion.vault.presets``: endpoints, default scopes,
quirks) plus overrides; ``preset: oauth`` is any provider, described by its endpoints or by its
``issuer`` (discovery). Users are sent to ``<public_url>/connect/<name>``; every provider gets
the one redirect URI ``<public_url>/connect/callback``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from bastion.config.base import ConfigModel, https_url

CONNECTION_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
RESERVED_NAMES = frozenset({"callback"})  # /connect/callback
# what Bastion itself puts in an authorization request: extra_authorize_params cannot change them
RESERVED_AUTHORIZE_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "scope",
        "user_scope",
        "code_challenge",
        "code_challenge_method",
    }
)
OAuthPreset = Literal[
    "github", "google", "microsoft", "salesforce", "slack", "atlassian", "zoom", "hubspot", "linear", "oauth"
]
TokenAuthMethod = Literal["client_secret_basic", "client_secret_post", "none"]
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 §3.3 scope-token
_PARAM = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_TENANT = re.compile(r"[A-Za-z0-9.-]{1,128}")


def _connection_name(value: str) -> str:
    if not CONNECTION_NAME.match(value):
        raise ValueError(
            "must start with a lowercase letter and contain only lowercase letters, digits and '-' "
            "(at most 63): it appears in /connect/<name>"
        )
    if value in RESERVED_NAMES:
        raise ValueError(f"'{value}' is reserved (/connect/{value})")
    return value


def _label(value: str | None) -> str | None:
    if value is not None and (not value.strip() or len(value) > 80 or re.search(r"[\x00-\x1f\x7f]", value)):
        raise ValueError("must be 1 to 80 printable characters")
    return value


class OAuthConnection(ConfigModel):
    """An OAuth provider: users sign in there once and allow Bastion access (code + PKCE).

    Bastion keeps their tokens, encrypted, and refreshes them when they expire."""

    name: str = Field(description="Identifier, used in /connect/<name> and by upstreams' auth.connection.")
    type: Literal["oauth"] = Field(description="An OAuth provider (authorization code + PKCE).")
    label: str | None = Field(
        None,
        description="Shown to users ('Connect <label>'). Default: the preset's (GitHub, Salesforce, ...).",
    )
    preset: OAuthPreset = Field(
        "oauth",
        description=(
            "github, google, microsoft (Graph), salesforce, slack (user tokens), atlassian, zoom, hubspot, "
            "linear, or oauth (any provider: give its endpoints or its issuer)."
        ),
    )
    client_id: str = Field(min_length=1, description="Bastion's client id at the provider (its OAuth app).")
    client_secret: str | None = Field(
        None, repr=False, description="Its secret, as ${ENV_VAR} (confidential clients)."
    )
    token_endpoint_auth_method: TokenAuthMethod | None = Field(
        None,
        description=(
            "How Bastion authenticates at the token endpoint: client_secret_basic, client_secret_post or "
            "none (public client, PKCE only). Default: the preset's; for oauth, client_secret_basic with a "
            "client_secret, else none."
        ),
    )
    scopes: list[str] | None = Field(
        None,
        description=(
            "Scopes asked for (slack: user scopes). Default: the preset's; [] asks for none (the app's "
            "configured scopes apply)."
        ),
    )
    tenant: str | None = Field(
        None, description="microsoft: tenant id or domain, organizations or common (default common)."
    )
    instance: str | None = Field(
        None,
        description=(
            "salesforce: the login URL, e.g. your My Domain https://acme.my.salesforce.com (default "
            "https://login.salesforce.com)."
        ),
    )
    sandbox: bool = Field(False, description="salesforce: sign in at https://test.salesforce.com.")
    issuer: str | None = Field(
        None,
        description=(
            "The provider's issuer: endpoints not given are read from <issuer>/.well-known/"
            "openid-configuration or the RFC 8414 /.well-known/oauth-authorization-server document."
        ),
    )
    authorization_endpoint: str | None = Field(None, description="Override the authorization endpoint.")
    token_endpoint: str | None = Field(None, description="Override the token endpoint.")
    revocation_endpoint: str | None = Field(
        None, description="RFC 7009 revocation endpoint: tokens are revoked there on Disconnect."
    )
    userinfo_endpoint: str | None = Field(
        None, description="Where the user's account name is read after connecting (GET, Bearer token)."
    )
    pkce: bool | None = Field(
        None, description="PKCE S256 (default true; set false only for a provider that rejects it)."
    )
    extra_authorize_params: dict[str, str] = Field(
        default_factory=dict,
        description="Extra authorization request parameters, e.g. {access_type: offline, prompt: consent}.",
    )
    refresh_margin: int = Field(
        60, ge=0, le=3600, description="Seconds before expiry at which an access token is refreshed."
    )
    account_claim: str | None = Field(
        None,
        description=(
            "Which claim names the user at the provider, from userinfo (or else the ID token), shown on "
            "My connections only (e.g. login, email). Default: the preset's."
        ),
    )
    timeout: float = Field(10.0, gt=0, le=60, description="Seconds allowed for each request to the provider.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _connection_name(value)

    @field_validator("label")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        return _label(value)

    @field_validator(
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "revocation_endpoint",
        "userinfo_endpoint",
        "instance",
    )
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        return https_url(value, fragment=False)

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str] | None) -> list[str] | None:
        for scope in value or ():
            if not _SCOPE.fullmatch(scope) or "," in scope:
                raise ValueError(f"{scope!r} is not a scope (no spaces, quotes, backslashes or commas)")
        return value

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str | None) -> str | None:
        if value is not None and not _TENANT.fullmatch(value):
            raise ValueError("must be a tenant id, a domain, organizations or common")
        return value

    @field_validator("extra_authorize_params")
    @classmethod
    def _params(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if key in RESERVED_AUTHORIZE_PARAMS:
                raise ValueError(f"{key} is set by Bastion itself")
            if not _PARAM.fullmatch(key) or re.search(r"[\x00-\x1f\x7f]", item) or len(item) > 512:
                raise ValueError(f"{key!r}: a parameter name and a printable value of at most 512 characters")
        return value

    @model_validator(mode="after")
    def _complete(self) -> OAuthConnection:
        preset = self.preset
        if self.tenant is not None and preset != "microsoft":
            raise ValueError("tenant is for preset microsoft only")
        if (self.instance is not None or self.sandbox) and preset != "salesforce":
            raise ValueError("instance and sandbox are for preset salesforce only")
        if self.instance is not None and self.sandbox:
            raise ValueError("set instance or sandbox, not both (a sandbox My Domain is an instance)")
        if preset == "oauth":
            if self.label is None:
                raise ValueError("label is required with preset oauth (it is shown to users)")
            endpoints = self.authorization_endpoint and self.token_endpoint
            if not (endpoints or self.issuer):
                raise ValueError(
                    "preset oauth needs authorization_endpoint and token_endpoint, or issuer (discovery)"
                )
        if preset == "slack" and not self.scopes:
            raise ValueError("slack needs scopes (the user scopes the app asks for, e.g. [search:read])")
        method = self.token_endpoint_auth_method
        if method == "none" and self.client_secret:
            raise ValueError("token_endpoint_auth_method none must not have a client_secret")
        if method in ("client_secret_basic", "client_secret_post") and not self.client_secret:
            raise ValueError(f"token_endpoint_auth_method {method} needs client_secret (use ${{ENV_VAR}})")
        if method is None and preset != "oauth" and not self.client_secret:
            raise ValueError(f"{preset} needs client_secret (use ${{ENV_VAR}})")
        if method == "none" and self.pkce is False:
            raise ValueError("a public client (token_endpoint_auth_method none) needs pkce")
        return self


class ApiKeyConnection(ConfigModel):
    """An API key: each user pastes their own once; Bastion keeps it, encrypted.

    How it is sent to an upstream (header, template) is that upstream's ``auth``."""

    name: str = Field(description="Identifier, used in /connect/<name> and by upstreams' auth.connection.")
    type: Literal["api_key"] = Field(description="An API key each user pastes.")
    label: str = Field(description="Shown to users ('Connect <label>').")
    instructions: str | None = Field(
        None,
        max_length=2000,
        description="Shown above the paste field: where users find or create their key (plain text).",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _connection_name(value)

    @field_validator("label")
    @classmethod
    def _label(cls, value: str) -> str:
        checked = _label(value)
        assert checked is not None
        return checked


Connection = Annotated[OAuthConnection | ApiKeyConnection, Field(discriminator="type")]


def connection_errors(connections: list[OAuthConnection | ApiKeyConnection]) -> list[str]:
    """Problems across entries (for ``Settings``): names must be unique."""
    seen: set[str] = set()
    errors = []
    for i, connection in enumerate(connections):
        if connection.name in seen:
            errors.append(f"connections[{i}]: name '{connection.name}' is used twice")
        seen.add(connection.name)
    return errors


__all__ = [
    "CONNECTION_NAME",
    "RESERVED_AUTHORIZE_PARAMS",
    "ApiKeyConnection",
    "Connection",
    "OAuthConnection",
    "OAuthPreset",
    "TokenAuthMethod",
    "connection_errors",
]
