"""The token endpoint of the real ``bastion serve``: the authorization-code grant (single use,
PKCE, redirect URI, resource and client binding, replay revoking what was issued), client
authentication, and the client-credentials grant. Every response is checked for
``Cache-Control: no-store``; every refusal for leaving the code unusable or untouched."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest

from tests.support.gateway import Gateway, run_gateway
from tests.support.oauth import (
    REDIRECT_URI,
    Pkce,
    add_users,
    authorization_code,
    browser,
    challenge_params,
    exchange_code,
    list_tools,
    pkce,
)
from tests.support.recording import recording_upstream

PASSWORD = "correct horse battery"
CONF_SECRET = "conf-secret-0123456789abcdefghijklmnopqrstuvwxyz"
MACHINE_SECRET = "machine-secret-0123456789abcdefghijklmnopqrstuvwxyz"
CLIENTS = [
    {"client_id": "pub", "name": "Public", "redirect_uris": [REDIRECT_URI], "trusted": True},
    {"client_id": "pub2", "name": "Other Public", "redirect_uris": [REDIRECT_URI], "trusted": True},
    {
        "client_id": "conf",
        "name": "Confidential",
        "redirect_uris": [REDIRECT_URI],
        "secret_sha256": hashlib.sha256(CONF_SECRET.encode()).hexdigest(),
        "trusted": True,
    },
    {
        "client_id": "machine",
        "name": "Machine",
        "grant_types": ["client_credentials"],
        "secret_sha256": hashlib.sha256(MACHINE_SECRET.encode()).hexdigest(),
    },
]


@pytest.fixture(scope="module")
def gw(flow_tmp: Path) -> Iterator[Gateway]:
    with recording_upstream() as upstream:
        upstreams = [{"name": n, "http": {"url": upstream.url}} for n in ("a", "b")]
        with run_gateway(flow_tmp, upstreams, extra={"auth": {"enabled": True}, "clients": CLIENTS}) as g:
            yield g


@pytest.fixture(scope="module")
async def users(gw: Gateway) -> dict[str, str]:
    return await add_users(gw, {"alice": PASSWORD})


@pytest.fixture
async def http(users: dict[str, str]) -> AsyncIterator[httpx2.AsyncClient]:
    async with browser() as client:
        yield client


async def code_for(http: httpx2.AsyncClient, gw: Gateway, client_id: str = "pub") -> tuple[str, Pkce]:
    return await authorization_code(
        http, gw.base, client_id=client_id, resource=gw.url("a"), username="alice", password=PASSWORD
    )


def token_error(response: httpx2.Response, error: str, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    assert response.headers["cache-control"] == "no-store"
    assert "access_token" not in body
    return body


def issued(response: httpx2.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    assert body["token_type"] == "Bearer"
    return body


def claims(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


async def redeem(
    http: httpx2.AsyncClient,
    gw: Gateway,
    code: str,
    verifier: str | None,
    client_id: str = "pub",
    **extra: str | None,
) -> httpx2.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": REDIRECT_URI,
        "client_id": client_id,
        "resource": gw.url("a"),
        **extra,
    }
    return await http.post(f"{gw.base}/token", data={k: v for k, v in form.items() if v is not None})


async def refresh(
    http: httpx2.AsyncClient, gw: Gateway, token: str, client_id: str = "pub"
) -> httpx2.Response:
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id}
    return await http.post(f"{gw.base}/token", data=form)


# -- authorization_code --------------------------------------------------------------------------


async def test_code_redeems_once_and_a_replay_revokes_what_it_issued(
    gw: Gateway, http: httpx2.AsyncClient
) -> None:
    code, proof = await code_for(http, gw)
    first = issued(await redeem(http, gw, code, proof.verifier))
    access, refresh_token = first["access_token"], first["refresh_token"]
    assert claims(access)["aud"] == gw.url("a")
    assert (await list_tools(http, gw.url("a"), access)).status_code == 200

    token_error(await redeem(http, gw, code, proof.verifier), "invalid_grant")

    # one replica: the revocation is effective at once, not only after the 5 s sync
    refused = await list_tools(http, gw.url("a"), access)
    assert refused.status_code == 401
    assert challenge_params(refused.headers["www-authenticate"])["error"] == "invalid_token"
    token_error(await refresh(http, gw, refresh_token), "invalid_grant")


@pytest.mark.parametrize(
    "verifier",
    [None, "", "too-short", pkce().verifier, "A" * 129],
    ids=["missing", "empty", "malformed", "other-verifier", "too-long"],
)
async def test_wrong_code_verifier_never_yields_a_token_and_burns_the_code(
    gw: Gateway, http: httpx2.AsyncClient, verifier: str | None
) -> None:
    code, proof = await code_for(http, gw)
    token_error(await redeem(http, gw, code, verifier), "invalid_grant")
    # the code was consumed when it was first presented: the right verifier is too late now
    token_error(await redeem(http, gw, code, proof.verifier), "invalid_grant")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"redirect_uri": "http://127.0.0.1:53682/other"}, "invalid_grant"),
        ({"redirect_uri": None}, "invalid_grant"),
        ({"resource": "{b}"}, "invalid_target"),
        ({"client_id": "pub2"}, "invalid_grant"),
    ],
    ids=["redirect-uri-changed", "redirect-uri-missing", "other-resource", "other-client"],
)
async def test_code_bound_to_redirect_uri_resource_and_client(
    gw: Gateway, http: httpx2.AsyncClient, change: dict[str, str | None], error: str
) -> None:
    code, proof = await code_for(http, gw)
    sent = {k: (v.format(b=gw.url("b")) if v else v) for k, v in change.items()}
    token_error(await redeem(http, gw, code, proof.verifier, **sent), error)
    token_error(await redeem(http, gw, code, proof.verifier), "invalid_grant")


async def test_resource_may_be_omitted_at_the_token_endpoint(gw: Gateway, http: httpx2.AsyncClient) -> None:
    code, proof = await code_for(http, gw)
    body = issued(await redeem(http, gw, code, proof.verifier, resource=None))
    assert claims(body["access_token"])["aud"] == gw.url("a")


async def test_unknown_and_missing_grant_type(gw: Gateway, http: httpx2.AsyncClient) -> None:
    for grant in ("password", "urn:ietf:params:oauth:grant-type:device_code", "implicit"):
        response = await http.post(f"{gw.base}/token", data={"grant_type": grant, "client_id": "pub"})
        token_error(response, "unsupported_grant_type")
    token_error(await http.post(f"{gw.base}/token", data={"client_id": "pub"}), "invalid_request")


async def test_token_endpoint_wants_a_form_post(gw: Gateway, http: httpx2.AsyncClient) -> None:
    as_json = await http.post(f"{gw.base}/token", json={"grant_type": "client_credentials"})
    token_error(as_json, "invalid_request")


async def test_confidential_client_must_authenticate(gw: Gateway, http: httpx2.AsyncClient) -> None:
    code, proof = await code_for(http, gw, "conf")
    # no authentication at all: invalid_client (400: no Authorization header was sent)
    body = token_error(await redeem(http, gw, code, proof.verifier, client_id="conf"), "invalid_client")
    assert "client_secret_basic" in body["error_description"]
    # a wrong secret over HTTP Basic: 401 with a Basic challenge (RFC 6749 §5.2)
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": proof.verifier}
    form["redirect_uri"] = REDIRECT_URI
    wrong = await http.post(f"{gw.base}/token", data=form, auth=("conf", CONF_SECRET + "x"))
    token_error(wrong, "invalid_client", 401)
    assert wrong.headers["www-authenticate"].startswith("Basic ")
    # the right secret in the wrong place (client_secret_post for a client_secret_basic client)
    posted = await redeem(http, gw, code, proof.verifier, client_id="conf", client_secret=CONF_SECRET)
    token_error(posted, "invalid_client")
    # two methods at once
    both = await http.post(
        f"{gw.base}/token", data={**form, "client_secret": CONF_SECRET}, auth=("conf", CONF_SECRET)
    )
    token_error(both, "invalid_request")
    # failed client authentication consumed nothing: the code still works for the real client
    ok = await exchange_code(
        http,
        gw.base,
        code=code,
        verifier=proof.verifier,
        client_id="conf",
        resource=gw.url("a"),
        auth=("conf", CONF_SECRET),
    )
    body = issued(ok)
    assert claims(body["access_token"])["client_id"] == "conf"
    again = await http.post(
        f"{gw.base}/token",
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
        auth=("conf", CONF_SECRET),
    )
    assert issued(again)["refresh_token"] != body["refresh_token"]


async def test_public_client_cannot_redeem_a_confidential_clients_code(
    gw: Gateway, http: httpx2.AsyncClient
) -> None:
    code, proof = await code_for(http, gw, "conf")
    token_error(await redeem(http, gw, code, proof.verifier, client_id="pub"), "invalid_grant")


async def test_unknown_client_at_the_token_endpoint(gw: Gateway, http: httpx2.AsyncClient) -> None:
    code, proof = await code_for(http, gw)
    token_error(await redeem(http, gw, code, proof.verifier, client_id="nobody"), "invalid_client")
    wrong = await http.post(
        f"{gw.base}/token", data={"grant_type": "client_credentials"}, auth=("nobody", "secret")
    )
    token_error(wrong, "invalid_client", 401)
    assert wrong.headers["www-authenticate"].startswith("Basic ")
    # a failed client authentication consumed nothing
    issued(await redeem(http, gw, code, proof.verifier))


@pytest.mark.parametrize("endpoint", ["token", "revoke", "introspect"])
async def test_401_for_another_authorization_scheme_carries_a_challenge(
    gw: Gateway, http: httpx2.AsyncClient, endpoint: str
) -> None:
    form = {"grant_type": "client_credentials", "resource": gw.url("a"), "token": "x"}
    response = await http.post(f"{gw.base}/{endpoint}", data=form, headers={"authorization": "Bearer abc"})
    token_error(response, "invalid_client", 401)
    assert "www-authenticate" in response.headers


# -- client_credentials --------------------------------------------------------------------------


async def client_credentials(
    http: httpx2.AsyncClient, gw: Gateway, auth: tuple[str, str] | None, **form: str
) -> httpx2.Response:
    return await http.post(f"{gw.base}/token", data={"grant_type": "client_credentials", **form}, auth=auth)


async def test_client_credentials_token_for_a_machine_client(gw: Gateway, http: httpx2.AsyncClient) -> None:
    response = await client_credentials(http, gw, ("machine", MACHINE_SECRET), resource=gw.url("a"))
    body = issued(response)
    assert "refresh_token" not in body
    token = claims(body["access_token"])
    assert (token["sub"], token["client_id"], token["aud"]) == ("machine", "machine", gw.url("a"))
    assert token["iss"] == gw.base
    assert jwt.get_unverified_header(body["access_token"])["typ"] == "at+jwt"
    assert (await list_tools(http, gw.url("a"), body["access_token"])).status_code == 200
    refused = await list_tools(http, gw.url("b"), body["access_token"])
    assert refused.status_code == 401


async def test_client_credentials_refusals(gw: Gateway, http: httpx2.AsyncClient) -> None:
    public = await client_credentials(http, gw, None, client_id="pub", resource=gw.url("a"))
    token_error(public, "unauthorized_client")
    # conf has a secret but is not registered for client_credentials
    conf = await client_credentials(http, gw, ("conf", CONF_SECRET), resource=gw.url("a"))
    token_error(conf, "unauthorized_client")
    token_error(await client_credentials(http, gw, ("machine", MACHINE_SECRET)), "invalid_target")
    unknown = await client_credentials(http, gw, ("machine", MACHINE_SECRET), resource=gw.base + "/mcp/zzz")
    token_error(unknown, "invalid_target")
    scope = await client_credentials(
        http, gw, ("machine", MACHINE_SECRET), resource=gw.url("a"), scope="admin"
    )
    token_error(scope, "invalid_scope")
    wrong = await client_credentials(http, gw, ("machine", "not-the-secret"), resource=gw.url("a"))
    token_error(wrong, "invalid_client", 401)
    # the machine client has no authorization-code grant
    code, proof = await code_for(http, gw)
    stolen = await http.post(
        f"{gw.base}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": proof.verifier,
            "redirect_uri": REDIRECT_URI,
        },
        auth=("machine", MACHINE_SECRET),
    )
    token_error(stolen, "unauthorized_client")
    issued(await redeem(http, gw, code, proof.verifier))  # unauthorized_client consumed nothing
