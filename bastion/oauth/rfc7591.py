"""RFC 7591 Dynamic Client Registration: parsing and validating a registration request.

Deprecated by MCP 2026-07-28 in favour of Client ID Metadata Documents, but many clients still
register this way. MCP adds one rule (SEP-837): ``application_type`` MUST be sent. Errors are
RFC 7591 §3.2.2 codes: ``invalid_redirect_uri`` and ``invalid_client_metadata``.
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from bastion.oauth.errors import InvalidClientMetadata, InvalidRedirectUri
from bastion.oauth.redirects import is_loopback, redirect_uri_problem

AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt")
GRANT_TYPES = ("authorization_code", "refresh_token")


class RegistrationRequest(BaseModel):
    """The client metadata a registration may carry (RFC 7591 §2); unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    redirect_uris: tuple[str, ...]
    application_type: Literal["native", "web"]
    token_endpoint_auth_method: Literal[
        "none", "client_secret_basic", "client_secret_post", "private_key_jwt"
    ] = "client_secret_basic"  # noqa: S105 - the RFC 7591 §2 default method, not a secret
    grant_types: tuple[Literal["authorization_code", "refresh_token"], ...] = ("authorization_code",)
    response_types: tuple[Literal["code"], ...] = ("code",)
    client_name: str | None = None
    client_uri: str | None = None
    logo_uri: str | None = None
    scope: str | None = None
    contacts: tuple[str, ...] = ()
    software_id: str | None = None
    software_version: str | None = None
    jwks_uri: str | None = None
    jwks: dict[str, Any] | None = None

    @field_validator("client_uri", "logo_uri", "jwks_uri")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("must be an https URL")
        return value

    @field_validator("client_name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 200 or not value.isprintable()):
            raise ValueError("must be printable and at most 200 characters")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RegistrationRequest:
        method = self.token_endpoint_auth_method
        if method == "private_key_jwt" and not (self.jwks or self.jwks_uri):
            raise ValueError("private_key_jwt needs jwks or jwks_uri")
        if self.jwks and self.jwks_uri:
            raise ValueError("jwks and jwks_uri are mutually exclusive")
        if "refresh_token" in self.grant_types and "authorization_code" not in self.grant_types:
            raise ValueError("refresh_token without authorization_code makes no sense")
        return self

    @property
    def public(self) -> bool:
        return self.token_endpoint_auth_method == "none"  # noqa: S105


def parse_registration(body: object) -> RegistrationRequest:
    """Validate a registration request body (already decoded JSON)."""
    if not isinstance(body, dict):
        raise InvalidClientMetadata("the registration request must be a JSON object")
    uris = body.get("redirect_uris")
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
        raise InvalidRedirectUri("redirect_uris must be a non-empty list of URLs")
    for uri in uris:
        problem = redirect_uri_problem(uri)
        if problem is not None:
            raise InvalidRedirectUri(f"redirect URI {uri[:100]!r} {problem}")
    if body.get("application_type") == "web" and any(is_loopback(u) for u in uris):
        raise InvalidRedirectUri("a web application may not use loopback redirect URIs")
    if "application_type" not in body:
        raise InvalidClientMetadata("application_type is required (native or web)")
    try:
        return RegistrationRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        raise InvalidClientMetadata(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None


def new_client_credentials(request: RegistrationRequest) -> tuple[str, str | None]:
    """A fresh client_id and, for confidential clients with a shared secret, a secret (returned to
    the client once; only its hash is stored)."""
    client_id = "dcr_" + secrets.token_urlsafe(18)
    needs_secret = request.token_endpoint_auth_method in ("client_secret_basic", "client_secret_post")
    return client_id, secrets.token_urlsafe(32) if needs_secret else None
