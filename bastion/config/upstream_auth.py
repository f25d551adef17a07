"""``upstreams[].auth``: how Bastion authenticates to an upstream on behalf of each user.

``none`` (the default): the upstream gets no per-user credential (static ``http.headers`` still
apply). ``ema``: the upstream's authorization server accepts ID-JAGs (Enterprise-Managed
Authorization); for each user Bastion obtains an ID-JAG, redeems it there (RFC 7523 jwt-bearer)
and sends the resulting access token — never Bastion's own token, never the client's.
``service``: one static secret for every user (from an environment variable or a file).
``user_oauth`` / ``user_api_key``: each user's own credential for a ``connections:`` entry,
from the vault; a user without one is sent to connect (a URL elicitation). ``token_exchange``:
for each user, a token from an authorization server (RFC 8693, or Entra on-behalf-of) in
exchange for a token of their sign-in to Bastion through an enterprise identity provider.

How a credential is presented is a template: a header (``Authorization: Bearer {token}``,
``X-Api-Key: {token}``) for HTTP upstreams, an environment variable of the user's own process
for stdio upstreams.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from bastion.config.base import ConfigModel, https_url
from bastion.config.presented import Presented, header_name, token_template
from bastion.config.token_exchange_auth import ACCESS_TOKEN_TYPE, TokenExchangeAuth

BASTION_ISSUER = "bastion"


class NoUpstreamAuth(ConfigModel):
    type: Literal["none"] = Field("none", description="No per-user credential.")


class EmaUpstreamAuth(ConfigModel):
    type: Literal["ema"] = Field(
        description="Enterprise-Managed Authorization (ID-JAG) towards the upstream."
    )
    id_jag_issuer: str = Field(
        description=(
            "Who mints each user's ID-JAG: 'bastion' (this Bastion's own bridge, see ema.bridge) or the "
            "name of one of identity_providers (RFC 8693 token exchange there, presenting the ID token of "
            "the user's sign-in through that provider)."
        )
    )
    client_id: str = Field(
        min_length=1, description="Bastion's client id at the upstream's authorization server."
    )
    client_secret: str | None = Field(
        None, description="Bastion's secret there (client_secret_basic / client_secret_post)."
    )
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post", "private_key_jwt"] = (
        Field("client_secret_basic", description="How Bastion authenticates at that token endpoint.")
    )
    private_key_file: str | None = Field(
        None, description="private_key_jwt: PEM private key Bastion signs its client assertions with."
    )
    private_key_id: str | None = Field(
        None, description="private_key_jwt: the key's kid, when the AS needs it."
    )
    scopes: list[str] = Field(
        default_factory=list,
        description="Scopes asked for at the upstream (empty: those its metadata lists, else none).",
    )
    authorization_server: str | None = Field(
        None,
        description=(
            "The upstream authorization server's issuer (default: the first one its Protected Resource "
            "Metadata names)."
        ),
    )
    resource: str | None = Field(
        None,
        description="The upstream's resource identifier (default: from its Protected Resource Metadata).",
    )
    refresh_margin: int = Field(
        60, ge=0, le=3600, description="Seconds before expiry at which a cached upstream token is replaced."
    )

    @field_validator("authorization_server", "resource")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        return https_url(value, fragment=False)

    @model_validator(mode="after")
    def _client_auth(self) -> EmaUpstreamAuth:
        method = self.token_endpoint_auth_method
        if method == "private_key_jwt" and not self.private_key_file:
            raise ValueError("private_key_jwt needs private_key_file")
        if method != "private_key_jwt" and not self.client_secret:
            raise ValueError(f"{method} needs client_secret")
        return self


class ServiceAuth(Presented):
    type: Literal["service"] = Field(
        description="One static secret for every user (e.g. an order-management API key)."
    )
    secret: str | None = Field(
        None, description="The secret, as ${ENV_VAR} (never written in the file itself)."
    )
    secret_file: str | None = Field(
        None, description="Or: a file holding the secret (trailing newline ignored)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> ServiceAuth:
        if (self.secret is None) == (self.secret_file is None):
            raise ValueError("set exactly one of secret or secret_file")
        return self


class UserOAuthAuth(Presented):
    type: Literal["user_oauth"] = Field(
        description="Each user's own OAuth token for a connection (vault); users connect once."
    )
    connection: str = Field(description="The connections: entry (type oauth) whose token is presented.")


class UpstreamOAuthAuth(Presented):
    type: Literal["upstream_oauth"] = Field(
        description=(
            "The upstream is itself OAuth-protected (MCP authorization): Bastion discovers its Protected "
            "Resource Metadata and authorization server, registers there (CIMD, DCR or the configured "
            "client) and each user authorizes Bastion once (code + PKCE, resource indicator)."
        )
    )
    registration: Literal["auto", "cimd", "dcr", "static"] = Field(
        "auto",
        description=(
            "How Bastion becomes a client of the upstream's authorization server. auto: a Client ID "
            "Metadata Document when the server supports them and public_url is https, else Dynamic Client "
            "Registration (RFC 7591) when it offers it, else an error asking for static."
        ),
    )
    client_id: str | None = Field(None, description="static: Bastion's client id at that server.")
    client_secret: str | None = Field(None, description="static: its secret, as ${ENV_VAR} (confidential).")
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post", "none"] | None = Field(
        None, description="static: how it authenticates (default: client_secret_basic with a secret)."
    )
    scopes: list[str] = Field(
        default_factory=list,
        description="Scopes asked for (empty: the 401 challenge's scope, else the scopes_supported).",
    )
    authorization_server: str | None = Field(
        None, description="The authorization server's issuer (default: the first its metadata names)."
    )
    resource: str | None = Field(
        None, description="The upstream's resource identifier (default: its URL, checked in its metadata)."
    )
    label: str | None = Field(None, description="Shown to users ('Connect <label>'); default its name.")
    refresh_margin: int = Field(
        60, ge=0, le=3600, description="Seconds before expiry at which a user's token is refreshed."
    )
    timeout: float = Field(10.0, gt=0, le=60, description="Seconds to wait for the authorization server.")

    @field_validator("authorization_server", "resource")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        return https_url(value, fragment=False)

    @field_validator("label")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        bad = value is not None and (not value.strip() or len(value) > 80 or re.search(r"[\x00-\x1f]", value))
        if bad:
            raise ValueError("must be 1 to 80 printable characters")
        return value

    @model_validator(mode="after")
    def _static_client(self) -> UpstreamOAuthAuth:
        own = [k for k in ("client_id", "client_secret", "token_endpoint_auth_method") if getattr(self, k)]
        if self.registration != "static":
            if own:
                raise ValueError(f"{', '.join(own)} apply to registration: static only")
            return self
        if not self.client_id:
            raise ValueError("registration: static needs client_id")
        if self.token_endpoint_auth_method not in (None, "none") and not self.client_secret:
            raise ValueError(f"{self.token_endpoint_auth_method} needs client_secret")
        return self


class UserApiKeyAuth(Presented):
    type: Literal["user_api_key"] = Field(
        description="Each user's own API key for a connection (vault); users paste it once."
    )
    connection: str = Field(description="The connections: entry (type api_key) whose key is presented.")
    template: str = Field("{token}", description="The header's value; {token} is the user's key.")
    header: str = Field("x-api-key", description="HTTP upstreams: the request header that carries it.")


class ClientSuppliedAuth(ConfigModel):
    type: Literal["client_supplied"] = Field(
        description=(
            "The #234 compatibility mode: the MCP client supplies the user's token for the downstream "
            "service with each tools/call (params._meta.authorization); Bastion still requires its own "
            "token from the client, removes the supplied one from the message and sends it in `header`."
        )
    )
    header: str = Field("authorization", description="The upstream request header that carries the token.")
    template: str = Field("Bearer {token}", description="The header's value; {token} is the supplied token.")
    scopes: list[str] = Field(
        default_factory=list,
        description="The downstream scopes the supplied token needs (announced in tools/list annotations).",
    )
    tool_scopes: dict[str, list[str]] = Field(
        default_factory=dict, description="Per tool: the downstream scopes it needs (instead of scopes)."
    )

    @field_validator("header")
    @classmethod
    def _header(cls, value: str) -> str:
        return header_name(value)

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        return token_template(value)


UpstreamAuth = Annotated[
    NoUpstreamAuth
    | ServiceAuth
    | UserOAuthAuth
    | UserApiKeyAuth
    | EmaUpstreamAuth
    | ClientSuppliedAuth
    | TokenExchangeAuth
    | UpstreamOAuthAuth,
    Field(discriminator="type"),
]
VAULT_MODES = (UserOAuthAuth, UserApiKeyAuth)

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "BASTION_ISSUER",
    "VAULT_MODES",
    "ClientSuppliedAuth",
    "EmaUpstreamAuth",
    "NoUpstreamAuth",
    "Presented",
    "ServiceAuth",
    "TokenExchangeAuth",
    "UpstreamAuth",
    "UpstreamOAuthAuth",
    "UserApiKeyAuth",
    "UserOAuthAuth",
    "header_name",
    "token_template",
]
