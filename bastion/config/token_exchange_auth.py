"""``upstreams[].auth: {type: token_exchange}``: the user's IdP sign-in exchanged for an upstream
token (RFC 8693, or Entra on-behalf-of); see bastion/vault/exchange.py."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from bastion.config.base import https_url
from bastion.config.presented import Presented

ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - an RFC 8693 URN
ClientAuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt"]


class TokenExchangeAuth(Presented):
    type: Literal["token_exchange"] = Field(
        description=(
            "A token for the upstream obtained for each user by token exchange at an authorization "
            "server (RFC 8693, e.g. Keycloak; or Entra's on-behalf-of flow), presenting a token of the "
            "user's sign-in to Bastion through one of identity_providers."
        )
    )
    identity_provider: str = Field(
        description="The identity_providers entry whose sign-in supplies the subject token (by name)."
    )
    style: Literal["rfc8693", "entra_obo"] = Field(
        "rfc8693",
        description=(
            "rfc8693: grant_type token-exchange with subject_token, audience, resource and scope. "
            "entra_obo: Microsoft Entra on-behalf-of (grant_type jwt-bearer, requested_token_use "
            "on_behalf_of), presenting the user's access token for Bastion's own API (subject_scopes) "
            "and asking for scopes."
        ),
    )
    token_endpoint: str | None = Field(
        None,
        description=(
            "Where to exchange (default: the identity provider's own token endpoint); another one "
            "needs client_id: Bastion's client secret at the identity provider is never sent elsewhere."
        ),
    )
    subject_token: Literal["id_token", "access_token"] | None = Field(
        None,
        description=(
            "rfc8693: what is presented (default id_token: the ID token of the user's sign-in; "
            "access_token: an access token the identity provider issues to Bastion for subject_scopes "
            "with the sign-in's refresh token). entra_obo always presents an access_token."
        ),
    )
    subject_scopes: list[str] = Field(
        default_factory=list,
        description=(
            "access_token / entra_obo: the scopes of that access token (Entra: "
            "['api://<bastion-app-id>/.default']); empty: the identity provider's default ones."
        ),
    )
    client_id: str | None = Field(
        None,
        description="Bastion's client id at the token endpoint (default: its own at the identity provider).",
    )
    client_secret: str | None = Field(
        None, description="Its secret, as ${ENV_VAR} (client_secret_basic / client_secret_post)."
    )
    token_endpoint_auth_method: ClientAuthMethod | None = Field(
        None, description="How that client authenticates (default client_secret_basic)."
    )
    private_key_file: str | None = Field(
        None, description="private_key_jwt: PEM private key Bastion signs its client assertions with."
    )
    private_key_id: str | None = Field(None, description="private_key_jwt: the key's kid, when needed.")
    audience: str | None = Field(
        None, description="rfc8693: the audience asked for (the upstream's client id or URI at the server)."
    )
    resource: str | None = Field(
        None, description="rfc8693: the RFC 8707 resource asked for (an absolute URI: the upstream's API)."
    )
    scopes: list[str] = Field(
        default_factory=list,
        description="Scopes asked for (entra_obo: required, e.g. ['api://<upstream-app-id>/.default']).",
    )
    requested_token_type: str | None = Field(
        None, description=f"rfc8693: the token type asked for (default {ACCESS_TOKEN_TYPE})."
    )
    refresh_margin: int = Field(
        60, ge=0, le=3600, description="Seconds before expiry at which a cached exchanged token is replaced."
    )

    @field_validator("token_endpoint")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        return https_url(value, fragment=False)

    @field_validator("resource")
    @classmethod
    def _absolute_uri(cls, value: str | None) -> str | None:
        if value is not None and (not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:\S+", value) or "#" in value):
            raise ValueError("must be an absolute URI without a fragment (RFC 8707)")
        return value

    @field_validator("requested_token_type")
    @classmethod
    def _token_type(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"urn:[A-Za-z0-9][A-Za-z0-9-]{0,31}:\S+", value):
            raise ValueError("must be a token type URN, e.g. urn:ietf:params:oauth:token-type:jwt")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TokenExchangeAuth:
        if self.style == "entra_obo":
            stray = [k for k in ("audience", "resource", "requested_token_type") if getattr(self, k)]
            if stray:
                raise ValueError(f"entra_obo names the downstream API by scopes; remove {', '.join(stray)}")
            if self.subject_token == "id_token":  # noqa: S105 - a token kind, not a secret
                raise ValueError("entra_obo presents an access token, not the id_token")
            if not self.scopes or not self.subject_scopes:
                raise ValueError(
                    "entra_obo needs scopes (the upstream API's, e.g. api://<upstream-app-id>/.default) and "
                    "subject_scopes (Bastion's own API, e.g. api://<bastion-app-id>/.default)"
                )
        elif not (self.audience or self.resource or self.scopes):
            raise ValueError("set audience, resource or scopes: what the exchanged token is for")
        if self.subject_scopes and self.presented == "id_token":
            raise ValueError("subject_scopes apply to subject_token: access_token only")
        if self.client_id is None:
            if self.token_endpoint is not None:  # the IdP client's secret never goes elsewhere
                raise ValueError(
                    "a token_endpoint of its own needs client_id (and that client's credentials)"
                )
            own = ("client_secret", "token_endpoint_auth_method", "private_key_file", "private_key_id")
            stray = [k for k in own if getattr(self, k) is not None]
            if stray:
                raise ValueError(f"{', '.join(stray)} need client_id (default: Bastion's client at the IdP)")
            return self
        method = self.token_endpoint_auth_method or "client_secret_basic"
        if method == "private_key_jwt" and not self.private_key_file:
            raise ValueError("private_key_jwt needs private_key_file")
        if method != "private_key_jwt" and not self.client_secret:
            raise ValueError(f"{method} needs client_secret")
        return self

    @property
    def presented(self) -> Literal["id_token", "access_token"]:
        """What the exchange presents: an ID token or an access token of the user's sign-in."""
        if self.style == "entra_obo":
            return "access_token"
        return self.subject_token or "id_token"


__all__ = ["ACCESS_TOKEN_TYPE", "TokenExchangeAuth"]
