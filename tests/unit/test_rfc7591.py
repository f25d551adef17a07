"""RFC 7591 registration requests: what MCP clients send is accepted; hostile metadata gets the
exact RFC 7591 §3.2.2 error."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.oauth.errors import InvalidClientMetadata, InvalidRedirectUri
from bastion.oauth.redirects import redirect_uri_matches
from bastion.oauth.rfc7591 import new_client_credentials, parse_registration

MCP_CLIENT = {  # what the Python SDK's OAuthClientProvider registers, plus MCP's application_type
    "redirect_uris": ["http://localhost:3000/callback"],
    "token_endpoint_auth_method": "none",
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "client_name": "Example MCP client",
    "application_type": "native",
}


def test_typical_mcp_client() -> None:
    request = parse_registration(MCP_CLIENT)
    assert request.public
    client_id, secret = new_client_credentials(request)
    assert client_id.startswith("dcr_")
    assert secret is None
    confidential = parse_registration({**MCP_CLIENT, "token_endpoint_auth_method": "client_secret_basic"})
    assert new_client_credentials(confidential)[1]


@pytest.mark.parametrize(
    "uris",
    [
        [],
        ["javascript:alert(1)"],
        ["data:text/html,hi"],
        ["http://evil.example/cb"],
        ["https://app.example/cb#frag"],
        ["https://user:pw@app.example/cb"],
        ["com.example.app:/callback"],
        "https://app.example/cb",
    ],
)
def test_bad_redirect_uris(uris: Any) -> None:
    with pytest.raises(InvalidRedirectUri):
        parse_registration({**MCP_CLIENT, "redirect_uris": uris})


@pytest.mark.parametrize(
    "change",
    [
        {"application_type": None},
        {"application_type": "desktop"},
        {"token_endpoint_auth_method": "client_secret_jwt"},
        {"token_endpoint_auth_method": "private_key_jwt"},
        {"grant_types": ["implicit"]},
        {"grant_types": ["refresh_token"]},
        {"response_types": ["token"]},
        {"logo_uri": "http://app.example/logo.png"},
        {"client_name": "x" * 300},
    ],
)
def test_bad_metadata(change: dict[str, Any]) -> None:
    body = {**MCP_CLIENT, **change}
    if change.get("application_type", "") is None:
        del body["application_type"]
    with pytest.raises(InvalidClientMetadata):
        parse_registration(body)


def test_web_apps_may_not_use_loopback() -> None:
    with pytest.raises(InvalidRedirectUri):
        parse_registration({**MCP_CLIENT, "application_type": "web"})
    assert parse_registration(
        {**MCP_CLIENT, "application_type": "web", "redirect_uris": ["https://app.example/cb"]}
    )


def test_redirect_matching_is_exact_except_loopback_ports() -> None:
    registered = ["http://localhost:3000/callback", "https://app.example/cb"]
    assert redirect_uri_matches(registered, "https://app.example/cb")
    assert redirect_uri_matches(registered, "http://localhost:51234/callback")
    assert not redirect_uri_matches(registered, "http://localhost:3000/callback/extra")
    assert not redirect_uri_matches(registered, "http://127.0.0.1:3000/callback")  # another host
    assert not redirect_uri_matches(registered, "https://app.example/cb?x=1")
    assert not redirect_uri_matches(registered, "https://app.example/CB")
