"""RFC 9207 for ``connections:``: the provider client learns from the provider's metadata
(``authorization_response_iss_parameter_supported``) that its authorization responses always
carry ``iss``, and from then on refuses one without it; a wrong ``iss`` is refused either way.
The connect callback (tests/flows/test_connect_iss.py) asks before it uses the state."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from bastion.config.connections import OAuthConnection
from bastion.vault.presets import resolve
from bastion.vault.provider import Providers

ISSUER = "https://id.example/tenant"


def metadata(**extra: Any) -> dict[str, Any]:
    return {
        "issuer": ISSUER,
        "authorization_endpoint": "https://id.example/authorize",
        "token_endpoint": "https://id.example/token",
        **extra,
    }


def providers(answer: dict[str, Any], seen: list[str], **config: Any) -> Providers:
    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(str(request.url))
        return httpx2.Response(200, json=answer)

    connection = resolve(
        OAuthConnection.model_validate(
            {"name": "wiki", "type": "oauth", "label": "Wiki", "client_id": "c", "issuer": ISSUER, **config}
        )
    )
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    return Providers([connection], http=http)


@pytest.mark.parametrize(
    ("advertised", "missing_ok"), [(True, False), (False, True), ("yes", True), (None, True)]
)
async def test_discovery_decides_whether_iss_is_required(advertised: object, missing_ok: bool) -> None:
    extra = {} if advertised is None else {"authorization_response_iss_parameter_supported": advertised}
    seen: list[str] = []
    found = providers(metadata(**extra), seen)
    client = found.get("wiki")
    assert client is not None
    assert client.issuer_matches(None)  # not known before the metadata is read
    assert await found.discover() == {}
    assert seen == [f"{ISSUER}/.well-known/openid-configuration"]
    assert client.issuer_matches(None) is missing_ok
    assert client.issuer_matches(ISSUER)
    assert not client.issuer_matches("https://evil.example")
    assert not client.issuer_matches(ISSUER + "/")


async def test_configured_endpoints_read_no_metadata_and_accept_a_response_without_iss() -> None:
    seen: list[str] = []
    configured = providers(
        metadata(authorization_response_iss_parameter_supported=True),
        seen,
        authorization_endpoint="https://id.example/authorize",
        token_endpoint="https://id.example/token",
        revocation_endpoint="https://id.example/revoke",
        userinfo_endpoint="https://id.example/userinfo",
    )
    client = configured.get("wiki")
    assert client is not None
    await client.discover()
    assert seen == []  # nothing to discover: the metadata is never read
    assert client.issuer_matches(None)
    assert not client.issuer_matches("https://evil.example")  # the issuer is known all the same
