"""RFC 8414 OAuth 2.0 Authorization Server Metadata for Bastion's authorization server.

Bastion's issuer is its public URL, which has no path, so the RFC 8414 well-known URL and the
OpenID Connect Discovery one are the two root paths MCP clients try in order
(``/.well-known/oauth-authorization-server``, then ``/.well-known/openid-configuration``); the
same document is served at both. Clients must compare ``issuer`` with the URL they built it
from (RFC 8414 §3.3), so it is the configured ``public_url`` string exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

WELL_KNOWN_PATHS = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")

AUTHORIZATION_PATH = "/authorize"
TOKEN_PATH = "/token"  # noqa: S105 - a URL path, not a secret
REGISTRATION_PATH = "/register"
JWKS_PATH = "/jwks"
REVOCATION_PATH = "/revoke"
INTROSPECTION_PATH = "/introspect"

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN
ID_JAG_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id-jag"  # noqa: S105 - a URN
CLIENT_AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt")
SIGNING_ALGS = ("ES256", "EdDSA", "RS256")


def authorization_server_metadata(
    issuer: str, *, scopes: Sequence[str], dynamic_registration: bool = True, id_jag_bridge: bool = False
) -> dict[str, Any]:
    """The metadata document. ``id_jag_bridge``: Bastion mints ID-JAGs by RFC 8693 token exchange
    (IDJAG §7.1 ``identity_chaining_requested_token_types_supported``); which audiences, clients
    and users the bridge serves is never published."""
    document: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": issuer + AUTHORIZATION_PATH,
        "token_endpoint": issuer + TOKEN_PATH,
        "jwks_uri": issuer + JWKS_PATH,
        "revocation_endpoint": issuer + REVOCATION_PATH,
        "introspection_endpoint": issuer + INTROSPECTION_PATH,
        "scopes_supported": list(scopes),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],  # plain is never accepted (OAuth 2.1 §7.5.1)
        "token_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(SIGNING_ALGS),
        "revocation_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "introspection_endpoint_auth_methods_supported": [m for m in CLIENT_AUTH_METHODS if m != "none"],
        "client_id_metadata_document_supported": True,
        "authorization_response_iss_parameter_supported": True,  # RFC 9207
    }
    if dynamic_registration:
        document["registration_endpoint"] = issuer + REGISTRATION_PATH
    if id_jag_bridge:
        document["grant_types_supported"].append(TOKEN_EXCHANGE_GRANT)
        document["identity_chaining_requested_token_types_supported"] = [ID_JAG_TOKEN_TYPE]
    return document
