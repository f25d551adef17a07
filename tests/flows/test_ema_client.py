"""Enterprise-Managed Authorization, Bastion as the client towards an upstream (issue 5, Role 3):
``EmaUpstreamCredentials`` finds the upstream's authorization server (RFC 9728, RFC 8414),
obtains the user's ID-JAG and redeems it (RFC 7523 jwt-bearer) for a token the upstream takes.

The upstream and its authorization server are a real Bastion (Role 1) on loopback, trusting a
throwaway test IdP key the ID-JAGs are minted with. A fake authorization server stands in only
for what that Bastion never does (a DPoP token type, a token unfit for a header, a 401 without
resource_metadata)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx2
import jwt
import pytest

from bastion.config.upstream_auth import EmaUpstreamAuth
from bastion.core.credentials import IdJagUnavailable
from bastion.core.errors import UpstreamCredentialsUnavailable
from bastion.core.records import Principal, UpstreamCredential
from bastion.vault.ema import EmaUpstreamCredentials
from tests.support import ema
from tests.support.gateway import Gateway, run_gateway
from tests.support.oauth import list_tools
from tests.support.procs import free_port
from tests.support.recording import recording_upstream

KEY = ema.new_key()  # the test IdP's
OTHER_KEY = ema.new_key()  # an IdP nobody trusts
CLIENT_KEY = ema.new_key()  # Bastion's private_key_jwt key at the upstream's authorization server
SECRET = "s3cr:t/+ " + secrets.token_urlsafe(32)  # RFC 6749 §2.3.1: ':' '+' '/' ' ' are encoded
PRM = "/.well-known/oauth-protected-resource"
SEEN = [SECRET]  # every token and ID-JAG the tests saw: none may ever be logged


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The upstream: a Bastion endpoint /mcp/a, with Bastion as its authorization server."""
    digest, grants = hashlib.sha256(SECRET.encode()).hexdigest(), ["client_credentials"]
    client_jwks = {"keys": [{**ema.public_jwk(CLIENT_KEY), "kid": "signer-1", "alg": "ES256", "use": "sig"}]}
    clients = [
        {"client_id": "agent", "secret_sha256": digest},
        {"client_id": "poster", "secret_sha256": digest, "token_endpoint_auth_method": "client_secret_post"},
        {"client_id": "signer", "jwks": client_jwks, "token_endpoint_auth_method": "private_key_jwt"},
    ]
    extra = {
        "auth": {"enabled": True, "scopes": ["mcp", "notes"]},
        "ema": {"trusted_issuers": [ema.trusted_issuer(KEY)]},
        "clients": [{**c, "grant_types": grants} for c in clients],
    }
    tmp = tmp_path_factory.mktemp("ema-client")
    with (
        recording_upstream() as up,
        run_gateway(tmp, [{"name": "a", "http": {"url": up.url}}], extra=extra) as g,
    ):
        yield g


@pytest.fixture(autouse=True)
def nothing_secret_is_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert not [seen for seen in SEEN if seen in caplog.text], "a token, an ID-JAG or a secret was logged"


@pytest.fixture(scope="module")
def fake_as() -> Iterator[ema.FakeAuthorizationServer]:
    with ema.fake_authorization_server() as server:
        yield server


@pytest.fixture
def fake(fake_as: ema.FakeAuthorizationServer) -> ema.FakeAuthorizationServer:
    fake_as.reset()
    return fake_as


def settings(**fields: Any) -> EmaUpstreamAuth:
    return EmaUpstreamAuth.model_validate(
        {"type": "ema", "id_jag_issuer": "corp", "client_id": "agent", "client_secret": SECRET, **fields}
    )


def user(name: str) -> Principal:
    return Principal(subject=name, client_id="mcp-client", authenticated=True)


def token_of(credential: UpstreamCredential) -> str:
    assert credential.mode == "ema"
    ((name, value),) = credential.headers
    assert name == "authorization"
    assert value.startswith("Bearer ")
    SEEN.append(value.removeprefix("Bearer "))
    return SEEN[-1]


@contextlib.asynccontextmanager
async def client(
    url: str, auth: EmaUpstreamAuth, *, key: Any = KEY, **kwargs: Any
) -> AsyncIterator[ema.EmaClient]:
    idp = ema.MintingIdJagSource(key)
    try:
        async with ema.ema_client(url, auth, idp, **kwargs) as under_test:
            yield under_test
    finally:
        SEEN.extend(idp.assertions)


async def works_upstream(gw: Gateway, credential: UpstreamCredential) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await list_tools(http, gw.url("a"), token_of(credential))
    assert response.status_code == 200, response.text


async def refused(creds: EmaUpstreamCredentials, principal: Principal) -> UpstreamCredentialsUnavailable:
    with pytest.raises(UpstreamCredentialsUnavailable) as caught:
        await creds.credential(principal)
    assert caught.value.code == -32015
    assert SECRET not in caught.value.message + caught.value.detail
    return caught.value


# -- discovery ---------------------------------------------------------------------------------


async def test_discovers_the_authorization_server_from_protected_resource_metadata(gw: Gateway) -> None:
    async with client(gw.url("a"), settings()) as c:
        credential = await c.creds.credential(user("alice"))
        await works_upstream(gw, credential)
        (request,) = c.idp.requests
    assert request.user_id == "alice"
    assert request.client_id == "agent"
    assert request.audience == gw.base  # the AS issuer, from the PRM's authorization_servers
    assert request.resource == gw.url("a")  # the PRM resource, identical to the upstream URL
    assert request.scopes == ("mcp", "notes")  # the PRM scopes_supported
    assert c.paths("POST") == ["/mcp/a", "/token"]  # the 401 named the PRM document
    assert c.paths() == [f"{PRM}/mcp/a", "/.well-known/oauth-authorization-server"]
    claims = jwt.decode(token_of(credential), options={"verify_signature": False})
    assert claims["aud"] == gw.url("a")
    assert claims["client_id"] == "agent"
    assert credential.process_scope == "alice"


async def test_configured_resource_and_server_skip_protected_resource_metadata(gw: Gateway) -> None:
    auth = settings(resource=gw.url("a"), authorization_server=gw.base, scopes=["mcp"])
    async with client(gw.url("a"), auth) as c:
        await works_upstream(gw, await c.creds.credential(user("bob")))
        assert c.paths("POST") == ["/token"]
        assert c.paths() == ["/.well-known/oauth-authorization-server"]
        assert c.idp.requests[0].scopes == ("mcp",)


async def test_well_known_fallback_and_a_document_about_another_resource(gw: Gateway) -> None:
    """No 401 names a document for /mcp/a/extra; the path-suffixed URL has none, the root one
    describes /mcp: RFC 9728 §3.3 says ignore it, so there is no usable authorization server."""
    async with client(gw.url("a") + "/extra", settings()) as c:
        error = await refused(c.creds, user("alice"))
        assert c.paths()[-2:] == [f"{PRM}/mcp/a/extra", PRM]
    assert "another resource" in error.message
    assert repr(gw.url()) in error.detail
    assert not c.idp.requests


async def test_metadata_naming_another_issuer_is_refused(gw: Gateway) -> None:
    async with client(gw.url("a"), settings(authorization_server=gw.base + "/")) as c:
        error = await refused(c.creds, user("alice"))
    assert "another issuer" in error.message
    assert "RFC 8414" in error.detail


async def test_an_unreachable_server_is_not_asked_again_at_once(gw: Gateway) -> None:
    dead, now = f"http://127.0.0.1:{free_port()}", [time.time()]
    auth = settings(resource=gw.url("a"), authorization_server=dead)
    async with client(gw.url("a"), auth, clock=lambda: now[0]) as c:
        first = await refused(c.creds, user("alice"))
        asked = len(c.sent)
        now[0] += 4
        second = await refused(c.creds, user("bob"))
        assert len(c.sent) == asked  # the failure is remembered for a few seconds ...
        now[0] += 2
        await refused(c.creds, user("bob"))
        assert len(c.sent) > asked  # ... and then the server is asked again
    assert "cannot be reached" in first.message
    assert second.message == first.message


async def test_a_server_without_the_jwt_bearer_grant_is_refused(fake: ema.FakeAuthorizationServer) -> None:
    fake.metadata_extra = {"grant_types_supported": ["authorization_code"]}
    auth = settings(resource="http://127.0.0.1/mcp", authorization_server=fake.base)
    async with client("http://127.0.0.1/mcp", auth) as c:
        error = await refused(c.creds, user("alice"))
    assert "does not accept ID-JAGs" in error.message
    assert not fake.forms


# -- tokens, per user --------------------------------------------------------------------------


async def test_a_token_is_cached_per_user_until_forgotten(gw: Gateway) -> None:
    async with client(gw.url("a"), settings()) as c:
        first = await c.creds.credential(user("alice"))
        assert await c.creds.credential(user("alice")) is first
        assert len(c.idp.requests) == 1
        assert c.paths("POST").count("/token") == 1
        c.creds.forget(user("alice"))  # the upstream answered 401
        again = await c.creds.credential(user("alice"))
        assert token_of(again) != token_of(first)
        assert len(c.idp.requests) == 2
        await works_upstream(gw, again)


async def test_refresh_margin_replaces_a_token_before_it_expires(gw: Gateway) -> None:
    now = [time.time()]
    async with client(gw.url("a"), settings(refresh_margin=120), clock=lambda: now[0]) as c:
        first = await c.creds.credential(user("alice"))  # Bastion's tokens live 900 s
        now[0] += 900 - 120 - 1
        assert await c.creds.credential(user("alice")) is first
        now[0] += 2
        second = await c.creds.credential(user("alice"))
        assert second is not first
        assert len(c.idp.requests) == 2
        await works_upstream(gw, second)


async def test_concurrent_calls_of_one_user_share_one_id_jag_and_one_token(gw: Gateway) -> None:
    async with client(gw.url("a"), settings()) as c:
        credentials = await asyncio.gather(*(c.creds.credential(user("carol")) for _ in range(50)))
        assert len({token_of(cr) for cr in credentials}) == 1
        assert len(c.idp.requests) == 1
        assert c.paths("POST").count("/token") == 1


async def test_users_do_not_wait_for_each_other(gw: Gateway) -> None:
    async with client(gw.url("a"), settings()) as c:
        c.idp.gates["slow"] = asyncio.Event()
        slow = asyncio.ensure_future(c.creds.credential(user("slow")))
        fast = await asyncio.wait_for(c.creds.credential(user("fast")), 10)
        assert not slow.done()
        c.idp.gates["slow"].set()
        slow_credential = await asyncio.wait_for(slow, 10)
        assert token_of(fast) != token_of(slow_credential)
        claims = [
            jwt.decode(token_of(cr), options={"verify_signature": False}) for cr in (fast, slow_credential)
        ]
        assert claims[0]["sub"] != claims[1]["sub"]  # two users at the upstream
        await works_upstream(gw, fast)
        await works_upstream(gw, slow_credential)


@pytest.mark.parametrize(
    "principal",
    [Principal(subject="anonymous"), Principal(subject="agent", client_id="agent", authenticated=True)],
    ids=["unauthenticated", "client acting for itself"],
)
async def test_a_call_without_a_user_gets_no_token(gw: Gateway, principal: Principal) -> None:
    async with client(gw.url("a"), settings()) as c:
        error = await refused(c.creds, principal)
        assert not c.sent
        assert not c.idp.requests
    assert error.message == (
        "upstream 'a': this upstream acts for a signed-in user; a client acting for itself has no user here"
    )


# -- client authentication at the upstream's authorization server ------------------------------


async def test_client_secret_post(gw: Gateway) -> None:
    idp = ema.MintingIdJagSource(KEY)
    auth = settings(client_id="poster", token_endpoint_auth_method="client_secret_post")
    creds = EmaUpstreamCredentials("a", gw.url("a"), auth, idp)  # its own HTTP client
    try:
        await works_upstream(gw, await creds.credential(user("dave")))
    finally:
        SEEN.extend(idp.assertions)
        await creds.aclose()
    assert idp.requests[0].client_id == "poster"


async def test_private_key_jwt(gw: Gateway, tmp_path: Path) -> None:
    key_file = tmp_path / "client.pem"
    key_file.write_bytes(ema.private_key_pem(CLIENT_KEY))
    auth = settings(
        client_id="signer",
        client_secret=None,
        token_endpoint_auth_method="private_key_jwt",
        private_key_file=str(key_file),
        private_key_id="signer-1",
    )
    async with client(gw.url("a"), auth) as c:
        await works_upstream(gw, await c.creds.credential(user("erin")))


async def test_well_known_discovery_basic_encoding_and_the_grant(
    fake: ema.FakeAuthorizationServer,
) -> None:
    answer = {"access_token": "fake-access-token-1", "token_type": "bearer", "refresh_token": "rt"}
    fake.token_response = (200, answer)
    now, resource = [time.time()], f"{fake.base}/mcp"  # no 401 names a document: the well-known one
    fake.prm = {"resource": resource, "authorization_servers": [fake.base], "scopes_supported": ["x"]}
    async with client(resource, settings(client_id="agent one"), clock=lambda: now[0]) as c:
        assert token_of(await c.creds.credential(user("alice"))) == "fake-access-token-1"
        assert c.paths() == [f"{PRM}/mcp", "/.well-known/oauth-authorization-server"]
        now[0] += 300 - 60 - 1  # no expires_in: 300 s assumed
        await c.creds.credential(user("alice"))
        assert len(fake.forms) == 1
        now[0] += 2
        await c.creds.credential(user("alice"))
        assert len(fake.forms) == 2
    pair = f"agent+one:{quote_plus(SECRET, safe='')}"
    assert fake.authorizations[0] == "Basic " + base64.b64encode(pair.encode()).decode()
    grant = {"grant_type": ema.JWT_BEARER, "assertion": c.idp.assertions[0], "resource": resource}
    assert fake.forms[0] == {**grant, "scope": "x"}


# -- failures ----------------------------------------------------------------------------------


async def test_the_server_refuses_bastions_client_credentials(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "w" + SECRET
    async with client(gw.url("a"), settings(client_secret=wrong)) as c:
        error = await refused(c.creds, user("alice"))
    assert "client credentials" in error.message
    assert "invalid_client" in error.detail
    assert wrong not in error.message + error.detail
    assert (
        "its authorization server refused a token: token endpoint HTTP 401 error=invalid_client"
        in caplog.text
    )


async def test_the_server_refuses_an_id_jag_from_an_untrusted_idp(gw: Gateway) -> None:
    async with client(gw.url("a"), settings(), key=OTHER_KEY) as c:
        error = await refused(c.creds, user("alice"))
        assert c.idp.assertions[0] not in error.detail
    assert "did not accept your identity assertion" in error.message
    assert error.detail.startswith("token endpoint HTTP 400 error=invalid_grant")


async def test_an_echoing_server_does_not_get_secrets_logged(fake: ema.FakeAuthorizationServer) -> None:
    echo = "{assertion} from {client_id} with {client_secret}: " + "x" * 300
    fake.token_response = (400, {"error": "invalid_request", "error_description": echo})
    url = "http://127.0.0.1/mcp"
    auth = settings(
        resource=url, authorization_server=fake.base, token_endpoint_auth_method="client_secret_post"
    )
    async with client(url, auth) as c:
        error = await refused(c.creds, user("alice"))
        assert c.idp.assertions[0] not in error.detail  # the log check is the autouse fixture's
    assert error.message == "upstream 'a': its authorization server refused access (invalid_request)"
    assert error.detail.startswith("token endpoint HTTP 400 error=invalid_request [redacted] from agent with")
    assert len(error.detail) < 300


@pytest.mark.parametrize("sign_in", [True, False])
async def test_an_unavailable_id_jag_passes_its_message_through(gw: Gateway, sign_in: bool) -> None:
    async with client(gw.url("a"), settings()) as c:
        c.idp.fail = IdJagUnavailable("Corp refused an ID-JAG (access_denied)", sign_in=sign_in, detail="why")
        error = await refused(c.creds, user("alice"))
        assert c.paths("POST").count("/token") == 0
    expected = "Corp refused an ID-JAG (access_denied)" + ("; sign in to Bastion again" if sign_in else "")
    assert error.message == f"upstream 'a': {expected}"
    assert error.detail == "id-jag for alice: why"


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        ({"access_token": "at", "token_type": "DPoP", "expires_in": 60}, "DPoP-bound token"),
        ({"access_token": "at\r\nx-injected: 1", "token_type": "Bearer"}, "unusable answer"),
        ({"token_type": "Bearer"}, "unusable answer"),
        ({"access_token": "at", "token_type": "mac"}, "unusable answer"),
        ({"access_token": "at", "token_type": "Bearer", "expires_in": -5}, "unusable answer"),
        (b"x" * (70 * 1024), "unusable answer"),
    ],
    ids=["dpop", "header injection", "no token", "other type", "bad expires_in", "too large"],
)
async def test_unusable_token_responses(fake: ema.FakeAuthorizationServer, answer: Any, says: str) -> None:
    fake.token_response = (200, answer)
    auth = settings(resource="http://127.0.0.1/mcp", authorization_server=fake.base)
    async with client("http://127.0.0.1/mcp", auth) as c:
        error = await refused(c.creds, user("alice"))
    assert says in error.message
    assert "at" not in error.detail.split()
