"""The token endpoint's answers to ``TokenExchangeCredentials`` (bastion/vault/exchange.py),
from a real server on loopback (``tests.support.ema.fake_authorization_server``), with a
recording ``SubjectTokenSource`` (``tests.support.exchange``).

Checked: the answers a server may give (Bearer, N_A, DPoP, expires_in as a string or missing:
then a JWT's own exp, else 300 s; unusable ones); its refusals by error code, the description
kept out of the message and scrubbed in the log; no user, no sign-in, no server."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from bastion.core.credentials import SubjectTokenUnavailable
from bastion.core.errors import UpstreamCredentialsUnavailable
from bastion.core.records import Principal
from bastion.vault.client_auth import ClientAuth
from tests.support.ema import FakeAuthorizationServer, fake_authorization_server
from tests.support.exchange import (
    ISSUED,
    SECRET,
    SUBJECT,
    Clock,
    Subjects,
    config,
    credentials,
    refusal,
    user,
)
from tests.support.procs import free_port


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAuthorizationServer]:
    with fake_authorization_server() as fake:
        yield fake


@pytest.fixture
def subjects(server: FakeAuthorizationServer) -> Subjects:
    server.reset()
    server.token_response = (200, ISSUED)
    return Subjects(f"{server.base}/token")


# -- the answers -----------------------------------------------------------------------------------


def _jwt(exp: float) -> str:
    return jwt.encode({"sub": "u", "exp": int(exp)}, "k" * 32, algorithm="HS256")


@pytest.mark.parametrize(
    ("answer", "lifetime"),
    [
        ({"access_token": "t", "token_type": "N_A", "expires_in": 120}, 120),
        ({"access_token": "t", "token_type": "bearer", "expires_in": "3600"}, 3600),
        ({"access_token": "opaque", "token_type": "Bearer"}, 300),
        ({"access_token": _jwt(Clock().now + 900), "token_type": "Bearer"}, 900),
    ],
)
async def test_usable_answers(
    server: FakeAuthorizationServer, subjects: Subjects, answer: dict[str, Any], lifetime: float
) -> None:
    clock = Clock()  # the JWT's exp counts on it too
    server.token_response = (200, answer)
    creds = credentials(subjects, config(refresh_margin=0), clock=clock)
    try:
        await creds.credential(user("alice"))
        clock.now += lifetime - 5
        await creds.credential(user("alice"))
        assert len(server.forms) == 1
        clock.now += 10
        with contextlib.suppress(UpstreamCredentialsUnavailable):  # the JWT's own exp has passed
            await creds.credential(user("alice"))
        assert len(server.forms) == 2
    finally:
        await creds.aclose()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"access_token": "t", "token_type": "DPoP", "expires_in": 60}, "issued a DPoP-bound token"),
        ({"access_token": "t", "expires_in": 60}, "sent an unusable answer"),
        ({"access_token": "has space", "token_type": "Bearer"}, "sent an unusable answer"),
        ({"access_token": "t", "token_type": "Bearer", "expires_in": -1}, "sent an unusable answer"),
        ({"access_token": _jwt(Clock().now - 10), "token_type": "Bearer"}, "sent an unusable answer"),
        ({"token_type": "Bearer"}, "sent an unusable answer"),
        ([1, 2], "sent an unusable answer"),
        (b"x" * (65 * 1024), "sent an unusable answer"),
    ],
)
async def test_unusable_answers(
    server: FakeAuthorizationServer, subjects: Subjects, answer: Any, expected: str
) -> None:
    server.token_response = (200, answer)
    creds = credentials(subjects)
    try:
        refused = await refusal(creds, user("alice"))
    finally:
        await creds.aclose()
    assert f"upstream 'crm': Keycloak {expected}" in refused.message


# -- refusals and failures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            {"error": "invalid_grant"},
            "Keycloak refused the token exchange for this server (invalid_grant)",
        ),
        (400, {"error": "invalid_target", "suberror": "x"}, "(invalid_target, x)"),
        (401, {"error": "invalid_client"}, "an administrator must fix them"),
        (
            400,
            {"error": "interaction_required"},
            "(interaction_required); sign in to Bastion again through Keycloak",
        ),
        (400, {"error": "invalid_grant", "suberror": "consent_required"}, "sign in to Bastion again"),
        (400, {"error": "bad code with spaces"}, "answered the token exchange with an error (HTTP 400)"),
        (503, b"down", "Keycloak is unavailable (HTTP 503); try again later"),
        (429, {}, "try again later"),
    ],
)
async def test_refusals_are_named_by_their_code(
    server: FakeAuthorizationServer,
    subjects: Subjects,
    caplog: pytest.LogCaptureFixture,
    status: int,
    body: Any,
    expected: str,
) -> None:
    caplog.set_level(logging.WARNING, "bastion.vault")
    echo = "echo {subject_token} {client_secret} eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl \x1b[31m"
    if isinstance(body, dict):
        body = {**body, "error_description": echo}
    server.token_response = (status, body)
    creds = credentials(subjects, client=ClientAuth("bastion", "client_secret_post", secret=SECRET))
    try:
        refused = await refusal(creds, user("alice"))
    finally:
        await creds.aclose()
    assert expected in refused.message
    assert "echo" not in refused.message  # the description stays out of the message
    for text in (refused.detail, caplog.text):
        assert SUBJECT not in text
        assert SECRET not in text
        assert "eyJ" not in text
        assert "\x1b" not in text


async def test_a_token_endpoint_of_its_own_is_called_its_authorization_server(subjects: Subjects) -> None:
    dead = f"http://127.0.0.1:{free_port()}/token"
    creds = credentials(
        subjects, config(token_endpoint=dead, client_id="bastion-at-as", client_secret=SECRET)
    )
    try:
        down = await refusal(creds, user("alice"))
    finally:
        await creds.aclose()
    assert "its authorization server cannot be reached; try again later" in down.message
    assert subjects.asked  # the subject token was ready; the server was not


async def test_no_sign_in_and_no_user(server: FakeAuthorizationServer, subjects: Subjects) -> None:
    subjects.fail = SubjectTokenUnavailable(
        "Sign in to Bastion again through Keycloak: it is needed", sign_in=True, detail="no live sign-in"
    )
    creds = credentials(subjects)
    try:
        again = await refusal(creds, user("alice"))
        assert again.message == "upstream 'crm': Sign in to Bastion again through Keycloak: it is needed"
        assert "subject token for alice: no live sign-in" in again.detail
        itself = await refusal(creds, Principal(subject="robot", client_id="robot", authenticated=True))
        assert "a client acting for itself" in itself.message
        anonymous = await refusal(creds, Principal(subject="anonymous"))
        assert "a client acting for itself" in anonymous.message
    finally:
        await creds.aclose()
    assert server.forms == []
    assert [a[0] for a in subjects.asked] == ["alice"]
