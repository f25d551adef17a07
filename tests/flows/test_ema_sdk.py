"""The official Python SDK's identity-assertion client (``IdentityAssertionOAuthProvider``)
through Bastion: a throwaway enterprise IdP does the RFC 8693 token exchange (an ID token for an
ID-JAG addressed to Bastion, for the MCP resource), the SDK redeems the ID-JAG at Bastion's
/token with the jwt-bearer grant, and then lists tools with Bastion's token."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.ema import IDP, id_jag, new_key, trusted_issuer
from tests.support.gateway import Gateway, run_gateway
from tests.support.recording import recording_upstream
from tests.support.sdk_oauth import MemoryTokenStorage
from tests.support.tls import serve_asgi

pytestmark = pytest.mark.timeout(90)

IDP_KEY = new_key()
SECRET = secrets.token_urlsafe(32)
IDP_CLIENT = "agent-at-idp"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
ID_JAG_TYPE = "urn:ietf:params:oauth:token-type:id-jag"
AUTH_METHODS = ("client_secret_post", "client_secret_basic")


class ThrowawayIdp:
    """The enterprise IdP's token endpoint: RFC 8693 token exchange of its own ID token for an
    ID-JAG (draft-ietf-oauth-identity-assertion-authz-grant §4.3)."""

    def __init__(self, bastion_client: str) -> None:
        self.bastion_client = bastion_client
        self.exchanges: list[dict[str, str]] = []
        self.app = Starlette(routes=[Route("/token", self.token, methods=["POST"])])

    def id_token(self) -> str:
        now = int(time.time())
        claims = {"iss": IDP, "sub": "user-42", "aud": IDP_CLIENT, "iat": now, "exp": now + 300}
        return jwt.encode({**claims, "email": "carol@example.test"}, IDP_KEY, algorithm="ES256")

    async def token(self, request: Request) -> JSONResponse:
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.exchanges.append(form)
        if (
            form.get("grant_type") != TOKEN_EXCHANGE
            or form.get("requested_token_type") != ID_JAG_TYPE
            or form.get("subject_token_type") != ID_TOKEN_TYPE
            or form.get("client_id") != IDP_CLIENT
        ):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        try:
            subject = jwt.decode(
                form["subject_token"], IDP_KEY.public_key(), algorithms=["ES256"], audience=IDP_CLIENT
            )
        except (KeyError, jwt.PyJWTError):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        assertion = id_jag(
            IDP_KEY,
            aud=form["audience"],
            resource=form.get("resource"),
            client_id=self.bastion_client,
            sub=subject["sub"],
            email=subject["email"],
            scope=form.get("scope", "mcp"),
        )
        return JSONResponse(
            {
                "access_token": assertion,
                "issued_token_type": ID_JAG_TYPE,
                "token_type": "N_A",
                "expires_in": 300,
            }
        )


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("ema-sdk")
    extra: dict[str, Any] = {
        "auth": {"enabled": True, "scopes": ["mcp"]},
        "ema": {"trusted_issuers": [trusted_issuer(IDP_KEY)]},
        "clients": [
            {
                "client_id": f"agent-{method}",
                "secret_sha256": hashlib.sha256(SECRET.encode()).hexdigest(),
                "grant_types": ["client_credentials"],
                "token_endpoint_auth_method": method,
            }
            for method in AUTH_METHODS
        ],
    }
    with (
        recording_upstream() as upstream,
        run_gateway(tmp, [{"name": "a", "http": {"url": upstream.url}}], extra=extra) as g,
    ):
        yield g


@pytest.mark.parametrize("auth_method", AUTH_METHODS)
async def test_the_sdk_identity_assertion_client_lists_tools(gw: Gateway, auth_method: str) -> None:
    idp = ThrowawayIdp(f"agent-{auth_method}")
    with serve_asgi(idp.app) as port:
        idp_token = f"http://127.0.0.1:{port}/token"

        async def fetch_id_jag(audience: str, resource: str) -> str:
            async with httpx2.AsyncClient(timeout=30) as http:
                response = await http.post(
                    idp_token,
                    data={
                        "grant_type": TOKEN_EXCHANGE,
                        "client_id": IDP_CLIENT,
                        "requested_token_type": ID_JAG_TYPE,
                        "subject_token": idp.id_token(),
                        "subject_token_type": ID_TOKEN_TYPE,
                        "audience": audience,
                        "resource": resource,
                        "scope": "mcp",
                    },
                )
            assert response.status_code == 200, response.text
            assert response.json()["issued_token_type"] == ID_JAG_TYPE
            return str(response.json()["access_token"])

        storage = MemoryTokenStorage()
        auth = IdentityAssertionOAuthProvider(
            server_url=gw.url("a"),
            storage=storage,
            client_id=f"agent-{auth_method}",
            client_secret=SECRET,
            issuer=gw.base,
            assertion_provider=fetch_id_jag,
            scope="mcp",
            token_endpoint_auth_method=auth_method,  # type: ignore[arg-type]
        )
        async with (
            httpx2.AsyncClient(auth=auth, timeout=30) as http,
            Client(streamable_http_client(gw.url("a"), http_client=http), mode="legacy") as client,
        ):
            names = {t.name for t in (await client.list_tools()).tools}
        assert names == {"echo"}
        assert len(idp.exchanges) == 1
        assert idp.exchanges[0]["audience"] == gw.base
        assert idp.exchanges[0]["resource"] == gw.url("a")
        assert storage.tokens is not None
        claims = jwt.decode(storage.tokens.access_token, options={"verify_signature": False})
        assert claims["aud"] == gw.url("a")
        assert claims["client_id"] == f"agent-{auth_method}"
