"""``TokenExchangeCredentials`` (bastion/vault/exchange.py) against a real token endpoint on
loopback (``tests.support.ema.fake_authorization_server``: it keeps every form and Authorization
header), with a recording ``SubjectTokenSource`` for the user's sign-in (``tests.support.exchange``;
the seam to bastion/idp, exercised end to end in test_token_exchange.py).

Checked here: the RFC 8693 and Entra on-behalf-of forms; the three client authentication
methods (with the RFC 6749 §2.3.1 encoding, and Entra's certificate thumbprint); the per-user
cache, its refresh margin, one exchange for concurrent calls, ``forget``; stdio presentation.
The server's answers and refusals: test_token_exchange_answers.py."""

from __future__ import annotations

import asyncio
import base64
import datetime
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from bastion.config.upstream_auth import TokenExchangeAuth
from bastion.core.credentials import ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE
from bastion.vault.client_auth import CLIENT_ASSERTION_TYPE, ClientAuth
from tests.support.ema import FakeAuthorizationServer, fake_authorization_server
from tests.support.exchange import (
    ISSUED,
    SECRET,
    SUBJECT,
    Clock,
    Subjects,
    bearer,
    config,
    credentials,
    refusal,
    user,
)

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAuthorizationServer]:
    with fake_authorization_server() as fake:
        yield fake


@pytest.fixture
def subjects(server: FakeAuthorizationServer) -> Subjects:
    server.reset()
    server.token_response = (200, ISSUED)
    return Subjects(f"{server.base}/token")


# -- what is sent ----------------------------------------------------------------------------------


async def test_rfc8693_with_client_secret_basic(server: FakeAuthorizationServer, subjects: Subjects) -> None:
    auth = config(resource="https://crm.example.com/api", scopes=["crm:read", "crm:write"])
    creds = credentials(subjects, auth, ClientAuth("bastion app", secret=SECRET))
    try:
        credential = await creds.credential(user("alice"))
    finally:
        await creds.aclose()
    assert bearer(credential) == f"upstream-token-{ID_TOKEN_TYPE}"
    assert credential.mode == "token_exchange"
    assert credential.process_scope == "alice"
    assert subjects.asked == [("alice", "id_token", ())]
    assert server.forms == [
        {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": SUBJECT,
            "subject_token_type": ID_TOKEN_TYPE,
            "requested_token_type": ACCESS_TOKEN_TYPE,
            "audience": "crm",
            "resource": "https://crm.example.com/api",
            "scope": "crm:read crm:write",
        }
    ]
    # RFC 6749 §2.3.1: each part form-encoded, then joined
    basic = base64.b64decode((server.authorizations[0] or "").removeprefix("Basic ")).decode()
    assert basic == "bastion+app:p%40ss%3Aw%2Frd%2B%26%3D"


async def test_entra_on_behalf_of_with_client_secret_post(
    server: FakeAuthorizationServer, subjects: Subjects
) -> None:
    auth = TokenExchangeAuth.model_validate(
        {
            "type": "token_exchange",
            "identity_provider": "entra",
            "style": "entra_obo",
            "subject_scopes": ["api://bastion/.default"],
            "scopes": ["api://crm/.default"],
            "header": "x-crm",
            "template": "{token}",
        }
    )
    creds = credentials(subjects, auth, ClientAuth("bastion", "client_secret_post", secret=SECRET))
    try:
        credential = await creds.credential(user("alice"))
    finally:
        await creds.aclose()
    assert credential.headers == (("x-crm", "upstream-token-{subject_token_type}"),)
    assert subjects.asked == [("alice", "access_token", ("api://bastion/.default",))]
    assert server.forms == [
        {
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": SUBJECT,
            "requested_token_use": "on_behalf_of",
            "scope": "api://crm/.default",
            "client_id": "bastion",
            "client_secret": SECRET,
        }
    ]
    assert server.authorizations == [None]


def _key_and_certificate(tmp: Path) -> tuple[rsa.RSAPrivateKey, Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file, cert_file = tmp / "key.pem", tmp / "cert.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bastion")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, key_file, cert_file


async def test_private_key_jwt_with_an_entra_certificate(
    server: FakeAuthorizationServer, subjects: Subjects, tmp_path: Path
) -> None:
    key, key_file, cert_file = _key_and_certificate(tmp_path)
    client = ClientAuth(
        "bastion", "private_key_jwt", private_key_file=str(key_file), certificate_file=str(cert_file)
    )
    creds = credentials(subjects, client=client)
    try:
        await creds.credential(user("alice"))
    finally:
        await creds.aclose()
    form = server.forms[0]
    assert form["client_id"] == "bastion"
    assert form["client_assertion_type"] == CLIENT_ASSERTION_TYPE
    assertion = form["client_assertion"]
    claims = jwt.decode(assertion, key.public_key(), algorithms=["RS256"], audience=f"{server.base}/token")
    assert claims["iss"] == claims["sub"] == "bastion"
    assert claims["exp"] - claims["iat"] == 60
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    thumbprint = base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA1())).rstrip(b"=").decode()
    assert jwt.get_unverified_header(assertion)["x5t"] == thumbprint

    unusable = credentials(
        subjects, client=ClientAuth("bastion", "private_key_jwt", private_key_file="/nonexistent")
    )
    try:
        broken = await refusal(unusable, user("bob"))
    finally:
        await unusable.aclose()
    assert "an administrator must fix it" in broken.message


# -- the cache -----------------------------------------------------------------------------------


async def test_cached_per_user_until_the_refresh_margin(
    server: FakeAuthorizationServer, subjects: Subjects
) -> None:
    clock = Clock()
    server.token_response = (200, {**ISSUED, "expires_in": 100})
    creds = credentials(subjects, config(refresh_margin=60), clock=clock)
    try:
        first = await creds.credential(user("alice"))
        clock.now += 39
        assert await creds.credential(user("alice")) is first
        assert len(server.forms) == 1
        await creds.credential(user("bob"))  # another user: another exchange
        assert len(server.forms) == 2
        clock.now += 2  # 41 s: within the margin of alice's token
        await creds.credential(user("alice"))
        assert len(server.forms) == 3
        creds.forget(user("alice"))  # the upstream refused it
        await creds.credential(user("alice"))
        assert len(server.forms) == 4
        await creds.credential(user("bob"))
        assert len(server.forms) == 4
    finally:
        await creds.aclose()


async def test_concurrent_calls_of_one_user_share_one_exchange(
    server: FakeAuthorizationServer, subjects: Subjects
) -> None:
    creds = credentials(subjects)
    gate = subjects.gates["alice"] = asyncio.Event()
    try:
        waiting = [asyncio.ensure_future(creds.credential(user("alice"))) for _ in range(5)]
        await asyncio.sleep(0.05)
        await creds.credential(user("bob"))  # bob does not wait for alice
        gate.set()
        results = await asyncio.gather(*waiting)
    finally:
        await creds.aclose()
    assert len({id(r) for r in results}) == 1
    assert [f["subject_token"] for f in server.forms].count(SUBJECT) == 2  # alice once, bob once


async def test_stdio_upstreams_get_it_in_the_environment(subjects: Subjects) -> None:
    creds = credentials(subjects, config(env="CRM_TOKEN"), stdio=True)
    try:
        credential = await creds.credential(user("alice"))
    finally:
        await creds.aclose()
    assert credential.env == (("CRM_TOKEN", f"upstream-token-{ID_TOKEN_TYPE}"),)
    assert credential.headers == ()
    assert (credential.process_scope or "").startswith("alice:")  # a process per user and token
