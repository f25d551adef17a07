"""Enterprise-Managed Authorization, Role 2: Bastion mints ID-JAGs (the bridge). Two real Bastions
on loopback: A signs users in and, by RFC 8693 token exchange of a refresh token A issued, mints an
ID-JAG for B; B trusts A as an ID-JAG issuer, redeems it (RFC 7523 jwt-bearer) and serves a tool
list as the same user. Each policy rule and each malformed request is refused on its own."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest

from bastion.core.crypto import derive_key
from bastion.core.records import UserRecord
from bastion.idp.passwords import hash_password
from bastion.oauth.keys import master_key_from_text
from bastion.oauth.opaque import digest
from tests.support import ema
from tests.support.ema import ID_JAG_TYPE, REFRESH_TOKEN_TYPE, TOKEN_EXCHANGE, exchange
from tests.support.federation_checks import audit_records
from tests.support.gateway import Gateway, run_gateway
from tests.support.oauth import (
    REDIRECT_URI,
    authorization_code,
    browser,
    exchange_code,
    gateway_store,
    list_tools,
)
from tests.support.procs import free_port
from tests.support.recording import recording_upstream

PASSWORD = "correct horse battery"
SECRET = secrets.token_urlsafe(32)
B_SECRET = secrets.token_urlsafe(32)
OTHER_AS = "https://as.example.test"
OTHER_RESOURCES = ["https://mcp.example.test/one", "https://mcp.example.test/two"]
LIFETIME = 120


def _confidential(client_id: str) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "secret_sha256": hashlib.sha256(SECRET.encode()).hexdigest(),
        "redirect_uris": [REDIRECT_URI],
        "trusted": True,
    }


@dataclass
class Pair:
    a: Gateway  # mints ID-JAGs
    b: Gateway  # redeems them
    users: dict[str, str]  # username -> user id at A

    @property
    def b_resource(self) -> str:
        return self.b.url("a")


@pytest.fixture(scope="module")
def gateways(flow_tmp: Path) -> Iterator[tuple[Gateway, Gateway]]:
    b_port = free_port()
    b_base = f"http://127.0.0.1:{b_port}"
    with recording_upstream() as upstream:
        upstreams = [{"name": "a", "http": {"url": upstream.url}}]
        bridge = {
            "enabled": True,
            "lifetime": LIFETIME,
            "targets": [
                {
                    "audience": b_base,
                    "resources": [f"{b_base}/mcp/a"],
                    "scopes": ["mcp", "notes"],
                    "clients": ["agent", "agent2", "pub"],
                    "client_ids": {"agent": "b-agent"},
                    "users": ["alice"],
                    "groups": ["platform-team"],
                    "subject": "pairwise",
                    "include_email": True,
                },
                {
                    "audience": OTHER_AS,
                    "resources": OTHER_RESOURCES,
                    "scopes": ["read"],
                    "clients": ["agent"],
                },
            ],
        }
        a_extra = {
            "auth": {"enabled": True, "scopes": ["mcp", "notes"]},
            # a trusted issuer, so that A's own jwt-bearer grant is on (and refuses A's ID-JAGs)
            "ema": {"trusted_issuers": [ema.trusted_issuer(ema.new_key())], "bridge": bridge},
            "clients": [
                _confidential("agent"),
                _confidential("agent2"),
                _confidential("outsider"),
                {"client_id": "pub", "redirect_uris": [REDIRECT_URI], "trusted": True},
            ],
        }
        with run_gateway(flow_tmp, upstreams, extra=a_extra) as a:
            a_meta = httpx2.get(f"{a.base}/.well-known/oauth-authorization-server").json()
            issuer = {"issuer": a_meta["issuer"], "jwks_uri": a_meta["jwks_uri"], "algorithms": ["ES256"]}
            b_extra = {
                "auth": {"enabled": True, "scopes": ["mcp", "notes"]},
                "ema": {"trusted_issuers": [{**issuer, "clients": ["b-agent"]}]},
                "clients": [
                    {
                        "client_id": "b-agent",
                        "secret_sha256": hashlib.sha256(B_SECRET.encode()).hexdigest(),
                        "grant_types": ["client_credentials"],
                    }
                ],
            }
            with run_gateway(flow_tmp, upstreams, extra=b_extra, port=b_port) as b:
                yield a, b


@pytest.fixture(scope="module")
async def pair(gateways: tuple[Gateway, Gateway]) -> Pair:
    a, b = gateways
    hashed = await asyncio.to_thread(hash_password, PASSWORD)
    people = {
        "alice": ("alice@example.test", frozenset[str]()),  # allowed by name
        "bob": ("bob@example.test", frozenset({"platform-team"})),  # allowed by group
        "carol": ("carol@example.test", frozenset({"sales"})),  # neither
    }
    ids: dict[str, str] = {}
    async with gateway_store(a) as store:
        for name, (email, groups) in people.items():
            record = UserRecord(
                user_id="u_" + secrets.token_urlsafe(12),
                username=name,
                password_hash=hashed,
                display_name=name.title(),
                email=email,
                groups=groups,
                created_at=time.time(),
            )
            await store.users.add(record)
            ids[name] = record.user_id
    return Pair(a, b, ids)


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with browser() as client:
        yield client


async def refresh_token(http: httpx2.AsyncClient, pair: Pair, user: str, client: str = "agent") -> str:
    """A refresh token A issues to ``client`` for ``user`` (authorization code flow, in a browser
    of its own: ``http``'s cookie jar may hold another user's session)."""
    a = pair.a
    async with browser() as fresh:
        code, proof = await authorization_code(
            fresh, a.base, client_id=client, resource=a.url("a"), username=user, password=PASSWORD
        )
    auth = None if client == "pub" else (client, SECRET)
    response = await exchange_code(
        http, a.base, code=code, verifier=proof.verifier, client_id=client, resource=a.url("a"), auth=auth
    )
    assert response.status_code == 200, response.text
    return str(response.json()["refresh_token"])


async def to_b(pair: Pair, token: str | None, client: str = "agent", **form: Any) -> httpx2.Response:
    defaults: dict[str, Any] = {"audience": pair.b.base, "resource": pair.b_resource}
    return await exchange(pair.a.base, token, client=client, secret=SECRET, **{**defaults, **form})


def refused(response: httpx2.Response, error: str) -> str:
    assert response.status_code == 400, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["error"] == error, body
    return str(body["error_description"])


def refresh_row(gateway: Gateway, token: str) -> tuple[Any, ...]:
    with closing(sqlite3.connect(gateway.state_dir / "bastion.db")) as db:
        row = db.execute(
            "SELECT expires_at, used_at, successor_hash FROM refresh_tokens WHERE token_hash = ?",
            (digest(token),),
        ).fetchone()
    assert row is not None
    return tuple(row)


def pairwise(gateway: Gateway, audience: str, user_id: str) -> str:
    master = master_key_from_text((gateway.state_dir / "master.key").read_text(encoding="ascii"))
    mac = hmac.new(
        derive_key(master, "ema-bridge-pairwise"), f"{audience}\x00{user_id}".encode(), hashlib.sha256
    )
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


async def verified(pair: Pair, id_jag: str) -> dict[str, Any]:
    """The ID-JAG's claims, its signature checked with A's published JWKS."""
    async with httpx2.AsyncClient() as client:
        keys = jwt.PyJWKSet.from_dict((await client.get(f"{pair.a.base}/jwks")).json())
    header = jwt.get_unverified_header(id_jag)
    assert header["typ"] == "oauth-id-jag+jwt"
    assert header["alg"] == "ES256"
    key = next(k for k in keys.keys if k.key_id == header["kid"])
    claims: dict[str, Any] = jwt.decode(
        id_jag, key, algorithms=["ES256"], audience=pair.b.base, issuer=pair.a.base
    )
    return claims


# -- metadata --------------------------------------------------------------------------------


async def test_metadata_lists_the_exchange_but_never_the_targets(pair: Pair) -> None:
    async with httpx2.AsyncClient() as client:
        a_meta = await client.get(f"{pair.a.base}/.well-known/oauth-authorization-server")
        b_meta = (await client.get(f"{pair.b.base}/.well-known/oauth-authorization-server")).json()
    meta = a_meta.json()
    assert TOKEN_EXCHANGE in meta["grant_types_supported"]
    assert meta["identity_chaining_requested_token_types_supported"] == [ID_JAG_TYPE]
    for secret_of_policy in (pair.b.base, str(pair.b.port), OTHER_AS, "b-agent", "platform-team", "alice"):
        assert secret_of_policy not in a_meta.text
    # B mints nothing: no exchange in its metadata, and the grant is unsupported there
    assert TOKEN_EXCHANGE not in b_meta["grant_types_supported"]
    assert "identity_chaining_requested_token_types_supported" not in b_meta


# -- two Bastions chained --------------------------------------------------------------------


async def test_two_bastions_chained(pair: Pair, http: httpx2.AsyncClient) -> None:
    a, b = pair.a, pair.b
    token = await refresh_token(http, pair, "alice")
    response = await to_b(pair, token, scope="mcp")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["issued_token_type"] == ID_JAG_TYPE
    assert body["token_type"] == "N_A"
    assert body["scope"] == "mcp"
    assert LIFETIME - 5 <= body["expires_in"] <= LIFETIME
    assert "refresh_token" not in body
    id_jag = body["access_token"]

    claims = await verified(pair, id_jag)
    alice = pair.users["alice"]
    assert claims["iss"] == a.base
    assert claims["aud"] == b.base
    assert claims["sub"] == pairwise(a, b.base, alice)
    assert claims["sub"] != alice
    assert claims["client_id"] == "b-agent"  # the client's id at B, from client_ids
    assert claims["resource"] == pair.b_resource
    assert claims["scope"] == "mcp"
    assert claims["email"] == "alice@example.test"
    assert claims["exp"] - claims["iat"] == LIFETIME
    assert abs(claims["iat"] - time.time()) < 30
    assert isinstance(claims["auth_time"], int)
    assert claims["auth_time"] <= claims["iat"]
    assert len(claims["jti"]) >= 16
    assert "cnf" not in claims
    assert set(claims) == {
        "iss", "sub", "aud", "client_id", "jti", "iat", "exp", "resource", "scope", "auth_time", "email"
    }  # fmt: skip

    # the subject is stable per target: a second ID-JAG names the same sub, another jti
    again = (await to_b(pair, token)).json()["access_token"]
    again_claims = await verified(pair, again)
    assert again_claims["sub"] == claims["sub"]
    assert again_claims["jti"] != claims["jti"]
    assert again_claims["scope"] == "mcp notes"  # no scope asked: all the target allows

    # the exchange did not rotate the refresh token: it still refreshes at A
    assert refresh_row(a, token)[1:] == (None, None)
    renewed = await http.post(
        f"{a.base}/token",
        data={"grant_type": "refresh_token", "refresh_token": token},
        auth=("agent", SECRET),
    )
    assert renewed.status_code == 200, renewed.text

    # B redeems the ID-JAG and serves the tool list as that user
    redeemed = await ema.redeem(b.base, id_jag, client="b-agent", secret=B_SECRET)
    assert redeemed.status_code == 200, redeemed.text
    access = redeemed.json()["access_token"]
    assert (await list_tools(http, pair.b_resource, access)).status_code == 200
    b_claims = jwt.decode(access, options={"verify_signature": False})
    async with gateway_store(b) as store:
        user = await store.users.get(b_claims["sub"])
    assert user is not None
    assert user.email == "alice@example.test"
    assert user.attributes["idp_issuer"] == a.base
    assert user.attributes["idp_subject"] == claims["sub"]

    issued = [
        r
        for r in audit_records(b)
        if r.get("event") == "token.issued" and f"ID-JAG from {a.base}" in str(r.get("detail"))
    ]
    assert issued, "B's audit does not name A"
    assert issued[-1]["subject"] == user.user_id
    assert issued[-1]["client_id"] == "b-agent"
    a_issued = [r for r in audit_records(a) if r.get("event") == "token.issued"]
    assert any(
        r.get("detail") == f"token-exchange (ID-JAG for {b.base} {pair.b_resource})" and r["subject"] == alice
        for r in a_issued
    )

    # the ID-JAG is single-use at B, and A never accepts its own ID-JAG
    refused(await ema.redeem(b.base, id_jag, client="b-agent", secret=B_SECRET), "invalid_grant")
    own = await ema.redeem(a.base, again, client="agent", secret=SECRET)
    assert "own ID-JAGs" in refused(own, "invalid_grant")

    # no token of any kind in either log
    for log in (a.log(), b.log()):
        for value in (token, id_jag, again, access):
            assert value not in log


async def test_a_dpop_proof_binds_the_id_jag_to_its_key(pair: Pair, http: httpx2.AsyncClient) -> None:
    key = ema.new_key()
    token = await refresh_token(http, pair, "bob")
    proof = ema.dpop_proof(key, htu=f"{pair.a.base}/token")
    response = await to_b(pair, token, dpop=proof)
    assert response.status_code == 200, response.text
    id_jag = response.json()["access_token"]
    claims = await verified(pair, id_jag)
    assert claims["cnf"] == {"jkt": ema.thumbprint(key)}
    assert claims["sub"] == pairwise(pair.a, pair.b.base, pair.users["bob"])  # bob: by group
    b_token = f"{pair.b.base}/token"
    no_proof = await ema.redeem(pair.b.base, id_jag, client="b-agent", secret=B_SECRET)
    refused(no_proof, "invalid_grant")
    bound = await ema.redeem(
        pair.b.base, id_jag, client="b-agent", secret=B_SECRET, dpop=ema.dpop_proof(key, htu=b_token)
    )
    assert bound.status_code == 200, bound.text
    # a proof for another URL does not bind anything at A
    wrong = await to_b(pair, token, dpop=ema.dpop_proof(key, htu=f"{pair.b.base}/token"))
    refused(wrong, "invalid_grant")


async def test_resource_defaults_to_the_targets_only_one(pair: Pair, http: httpx2.AsyncClient) -> None:
    token = await refresh_token(http, pair, "alice")
    response = await exchange(
        pair.a.base, token, client="agent", secret=SECRET, audience=pair.b.base, scope="notes"
    )
    assert response.status_code == 200, response.text
    assert (await verified(pair, response.json()["access_token"]))["resource"] == pair.b_resource
    # several resources: the client must say which; each configured one works, others do not
    several = await exchange(pair.a.base, token, client="agent", secret=SECRET, audience=OTHER_AS)
    refused(several, "invalid_target")
    ok = await exchange(
        pair.a.base, token, client="agent", secret=SECRET, audience=OTHER_AS, resource=OTHER_RESOURCES[1]
    )
    assert ok.status_code == 200, ok.text
    claims = jwt.decode(ok.json()["access_token"], options={"verify_signature": False})
    assert claims["sub"] == pair.users["alice"]  # subject: user_id (default)
    assert claims["client_id"] == "agent"  # no mapping: the same id
    assert "email" not in claims  # include_email is off by default
    assert claims["scope"] == "read"


# -- refusals --------------------------------------------------------------------------------


async def test_policy_refusals(pair: Pair, http: httpx2.AsyncClient) -> None:
    a, b = pair.a, pair.b
    token = await refresh_token(http, pair, "alice")
    before = refresh_row(a, token)

    assert "audience" in refused(
        await to_b(pair, token, audience="https://unknown.example"), "invalid_target"
    )
    pair_refused = await to_b(pair, token, resource=OTHER_RESOURCES[0])
    assert "pair" in refused(pair_refused, "invalid_target")
    refused(await to_b(pair, token, resource=f"{b.base}/mcp/other"), "invalid_target")
    # agent2 is allowed for B, but the refresh token was issued to agent
    refused(await to_b(pair, token, client="agent2"), "invalid_grant")
    # outsider is a client of A, but not allowed to obtain ID-JAGs for B
    outsider = await refresh_token(http, pair, "alice", client="outsider")
    refused(await to_b(pair, outsider, client="outsider"), "unauthorized_client")
    # pub is listed for B, but a public client never gets an ID-JAG (EMA §7.7)
    public = await refresh_token(http, pair, "alice", client="pub")
    public_try = await exchange(a.base, public, client="pub", secret=None, audience=b.base)
    refused(public_try, "unauthorized_client")
    # carol is neither listed nor in an allowed group
    carol = await refresh_token(http, pair, "carol")
    assert "user may not" in refused(await to_b(pair, carol), "invalid_grant")
    # scopes beyond the target's
    refused(await to_b(pair, token, scope="mcp admin"), "invalid_scope")
    refused(
        await to_b(pair, token, audience=OTHER_AS, resource=OTHER_RESOURCES[0], scope="mcp"), "invalid_scope"
    )

    # nothing was rotated, used or revoked by any of this: the token still exchanges
    assert refresh_row(a, token) == before
    assert (await to_b(pair, token)).status_code == 200
    assert token not in a.log()


async def test_expired_revoked_rotated_and_unknown_subject_tokens(
    pair: Pair, http: httpx2.AsyncClient
) -> None:
    a = pair.a
    refused(await to_b(pair, "not-a-token"), "invalid_grant")
    refused(await to_b(pair, "x" * 600), "invalid_grant")

    revoked = await refresh_token(http, pair, "alice")
    answer = await http.post(f"{a.base}/revoke", data={"token": revoked}, auth=("agent", SECRET))
    assert answer.status_code == 200, answer.text
    refused(await to_b(pair, revoked), "invalid_grant")

    rotated = await refresh_token(http, pair, "alice")
    form = {"grant_type": "refresh_token", "refresh_token": rotated}
    assert (await http.post(f"{a.base}/token", data=form, auth=("agent", SECRET))).status_code == 200
    refused(await to_b(pair, rotated), "invalid_grant")

    expired = await refresh_token(http, pair, "alice")
    with closing(sqlite3.connect(a.state_dir / "bastion.db")) as db, db:
        db.execute(
            "UPDATE refresh_tokens SET expires_at = ? WHERE token_hash = ?",
            (time.time() - 1, digest(expired)),
        )
    refused(await to_b(pair, expired), "invalid_grant")

    disabled = await refresh_token(http, pair, "bob")
    async with gateway_store(a) as store:
        await store.users.set_disabled(pair.users["bob"], True)
    try:
        refused(await to_b(pair, disabled), "invalid_grant")
    finally:
        async with gateway_store(a) as store:
            await store.users.set_disabled(pair.users["bob"], False)


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"audience": None}, "audience missing"),
        ({"extra": [("audience", OTHER_AS)]}, "audience twice"),
        (
            {
                "resource": None,
                "extra": [("resource", "https://x.example/a"), ("resource", "https://x.example/b")],
            },
            "resource twice",
        ),
        ({"extra": [("scope", "mcp")], "scope": "notes"}, "scope twice"),
        ({"subject_token_type": None}, "subject_token_type missing"),
        ({"subject_token_type": "urn:ietf:params:oauth:token-type:access_token"}, "wrong subject_token_type"),
        ({"subject_token_type": ID_JAG_TYPE}, "an ID-JAG as subject token type"),
        ({"subject_token_type": "urn:ietf:params:oauth:token-type:saml2"}, "SAML not supported"),
        ({"requested_token_type": None}, "requested_token_type missing"),
        ({"requested_token_type": "urn:ietf:params:oauth:token-type:access_token"}, "not an ID-JAG"),
        ({"actor_token": "x", "actor_token_type": REFRESH_TOKEN_TYPE}, "actor token"),
    ],
)
async def test_malformed_requests_are_invalid_request(
    pair: Pair, http: httpx2.AsyncClient, changes: dict[str, Any], why: str
) -> None:
    token = await refresh_token(http, pair, "alice")
    refused(await to_b(pair, token, **changes), "invalid_request")


async def test_a_missing_subject_token_is_invalid_request(pair: Pair) -> None:
    refused(await to_b(pair, None), "invalid_request")


async def test_an_id_jag_is_never_a_subject_token(pair: Pair, http: httpx2.AsyncClient) -> None:
    token = await refresh_token(http, pair, "alice")
    id_jag = (await to_b(pair, token)).json()["access_token"]
    refused(await to_b(pair, id_jag, subject_token_type=ID_JAG_TYPE), "invalid_request")
    refused(await to_b(pair, id_jag), "invalid_grant")  # as a refresh token: unknown
    # as an ID token: this client has no identity-provider id, so ID tokens are not accepted
    id_token_type = "urn:ietf:params:oauth:token-type:id_token"
    refused(await to_b(pair, id_jag, subject_token_type=id_token_type), "unauthorized_client")


async def test_the_grant_is_unsupported_where_the_bridge_is_off(pair: Pair, http: httpx2.AsyncClient) -> None:
    response = await exchange(
        pair.b.base, "anything", client="b-agent", secret=B_SECRET, audience=pair.a.base
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"
