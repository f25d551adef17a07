"""Pre-registered OAuth clients (``clients:`` in bastion.yaml)."""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from bastion.config.base import ConfigModel
from bastion.core.redirects import redirect_uri_problem

ClientAuthMethod = Literal["none", "client_secret_basic", "client_secret_post", "private_key_jwt"]
ClientGrantType = Literal["authorization_code", "refresh_token", "client_credentials"]
SECRET_METHODS = ("client_secret_basic", "client_secret_post")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
CLIENT_ID = re.compile(r"^[A-Za-z0-9._~:@+-]{1,128}$")
MIN_SECRET_LENGTH = 32
KEYGEN_COMMAND = (
    'python -c "import secrets,hashlib; s=secrets.token_urlsafe(32); '
    'print(s, hashlib.sha256(s.encode()).hexdigest())"'
)


def _default_grant_types() -> list[ClientGrantType]:
    return ["authorization_code", "refresh_token"]


class OAuthClient(ConfigModel):
    """A pre-registered OAuth client (besides RFC 7591 registration and Client ID Metadata Documents).

    After loading, ``secret`` is always None: a secret given in the file is replaced by its SHA-256
    (``secret_sha256``), and ``token_endpoint_auth_method`` is always set.
    """

    client_id: str = Field(
        description=(
            "The client's identifier, unique among clients: letters, digits and ._~:@+- (at most 128). "
            "Must not start with 'dcr_' (reserved for dynamic registration) nor be a URL (those are "
            "Client ID Metadata Documents)."
        )
    )
    name: str | None = Field(None, description="Human-readable name, shown on the consent screen.")
    redirect_uris: list[str] = Field(
        default_factory=list,
        description=(
            "Where authorization responses may be sent, compared exactly (a loopback http URI matches "
            "any port). https, or http on 127.0.0.1, [::1] or localhost; no fragment. Required with the "
            "authorization_code grant."
        ),
    )
    secret_sha256: str | None = Field(
        None,
        description=(
            "Hex SHA-256 of the client secret (confidential clients: this or secret). Make a secret "
            f"and its hash with: {KEYGEN_COMMAND}. Give the secret to the client, put the hash here."
        ),
    )
    secret: str | None = Field(
        None,
        description=(
            "The client secret itself, as a ${ENV_VAR} reference (confidential clients: this or "
            f"secret_sha256); at least {MIN_SECRET_LENGTH} characters of generated randomness. It is "
            "hashed when the file is loaded and never kept in memory as given."
        ),
    )
    token_endpoint_auth_method: ClientAuthMethod | None = Field(
        None,
        description=(
            "How the client authenticates at the token endpoint. Default: client_secret_basic when "
            "a secret is given, else none (a public client)."
        ),
    )
    grant_types: list[ClientGrantType] = Field(
        default_factory=_default_grant_types,
        min_length=1,
        description=(
            "Grants the client may use. client_credentials needs a confidential client (a secret or "
            "private_key_jwt)."
        ),
    )
    jwks_uri: str | None = Field(
        None, description="private_key_jwt: https URL of the client's public keys (this or jwks)."
    )
    jwks: dict[str, Any] | None = Field(
        None, description="private_key_jwt: the client's public keys as a JWK Set (this or jwks_uri)."
    )
    scope: str | None = Field(
        None, description="Space-separated scopes the client may request; default: any."
    )
    trusted: bool = Field(
        False, description="Skip the consent screen for this client (first-party clients only)."
    )

    @model_validator(mode="before")
    @classmethod
    def _hash_secret(cls, data: Any) -> Any:
        """Replace ``secret`` by its SHA-256 and fill in the default auth method."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        secret = data.pop("secret", None)
        if secret is not None:
            if data.get("secret_sha256") is not None:
                raise ValueError("set either secret or secret_sha256, not both")
            if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"secret must be at least {MIN_SECRET_LENGTH} characters of generated randomness; "
                    f"make one with: {KEYGEN_COMMAND}"
                )
            data["secret_sha256"] = hashlib.sha256(secret.encode()).hexdigest()
        if data.get("token_endpoint_auth_method") is None:
            has_secret = data.get("secret_sha256") is not None
            data["token_endpoint_auth_method"] = "client_secret_basic" if has_secret else "none"
        return data

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str) -> str:
        if not CLIENT_ID.match(value) or value.startswith(("http:", "https:")):
            raise ValueError(
                "must be 1-128 letters, digits or ._~:@+- and not a URL (URL client ids are "
                "Client ID Metadata Documents)"
            )
        if value.startswith("dcr_"):
            raise ValueError("must not start with 'dcr_' (reserved for dynamically registered clients)")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 200 or not value.isprintable()):
            raise ValueError("must be printable and at most 200 characters")
        return value

    @field_validator("redirect_uris")
    @classmethod
    def _redirect_uris(cls, value: list[str]) -> list[str]:
        for uri in value:
            problem = redirect_uri_problem(uri)
            if problem is not None:
                raise ValueError(f"redirect URI {uri[:100]!r} {problem}")
        if len(set(value)) != len(value):
            raise ValueError("lists a redirect URI twice")
        return value

    @field_validator("secret_sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is not None and not SHA256_HEX.match(value.lower()):
            raise ValueError(f"must be 64 hex digits (a SHA-256); make one with: {KEYGEN_COMMAND}")
        return value.lower() if value is not None else None

    @field_validator("grant_types")
    @classmethod
    def _grant_types(cls, value: list[ClientGrantType]) -> list[ClientGrantType]:
        if len(set(value)) != len(value):
            raise ValueError("lists a grant type twice")
        if "refresh_token" in value and "authorization_code" not in value:
            raise ValueError(
                "refresh_token needs authorization_code (client_credentials gets no refresh token)"
            )
        return value

    @field_validator("jwks_uri")
    @classmethod
    def _jwks_uri(cls, value: str | None) -> str | None:
        parts = urlsplit(value) if value is not None else None
        if parts is not None and (parts.scheme != "https" or not parts.hostname or parts.fragment):
            raise ValueError("must be an https URL")
        return value

    @field_validator("jwks")
    @classmethod
    def _jwks(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            keys = value.get("keys")
            if not isinstance(keys, list) or not keys or not all(isinstance(k, dict) for k in keys):
                raise ValueError("must be a JWK Set: {keys: [ ... ]} with at least one key")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> OAuthClient:
        method = self.token_endpoint_auth_method
        if method in SECRET_METHODS and self.secret_sha256 is None:
            raise ValueError(f"{method} needs secret or secret_sha256")
        if method not in SECRET_METHODS and self.secret_sha256 is not None:
            raise ValueError(
                f"a secret is only used with client_secret_basic or client_secret_post, not {method}"
            )
        if method == "private_key_jwt" and (self.jwks is None) == (self.jwks_uri is None):
            raise ValueError("private_key_jwt needs exactly one of jwks or jwks_uri")
        if method != "private_key_jwt" and (self.jwks is not None or self.jwks_uri is not None):
            raise ValueError("jwks and jwks_uri are only used with private_key_jwt")
        if "client_credentials" in self.grant_types and method == "none":
            raise ValueError("client_credentials needs a confidential client (a secret or private_key_jwt)")
        if "authorization_code" in self.grant_types and not self.redirect_uris:
            raise ValueError("the authorization_code grant needs at least one redirect URI")
        return self

    @property
    def confidential(self) -> bool:
        return self.token_endpoint_auth_method not in (None, "none")
