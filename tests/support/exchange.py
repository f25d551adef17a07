"""Test helpers for ``TokenExchangeCredentials`` (bastion/vault/exchange.py): a recording
``SubjectTokenSource`` standing for the user's sign-in (the seam to bastion/idp), principals, a
settable clock, and the credentials under test against a token endpoint."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bastion.config.upstream_auth import TokenExchangeAuth
from bastion.core.credentials import (
    ACCESS_TOKEN_TYPE,
    ID_TOKEN_TYPE,
    SubjectToken,
    SubjectTokenKind,
    SubjectTokenUnavailable,
)
from bastion.core.errors import UpstreamCredentialsUnavailable
from bastion.core.records import Principal, UpstreamCredential
from bastion.vault.client_auth import ClientAuth
from bastion.vault.exchange import TokenExchangeCredentials

SUBJECT = "subject-token-of-the-sign-in"  # what the recording source hands out (a secret)
SECRET = "p@ss:w/rd+&="
ISSUED = {"access_token": "upstream-token-{subject_token_type}", "token_type": "Bearer", "expires_in": 600}


class Subjects:
    """A recording SubjectTokenSource: ``fail`` makes it refuse; a user with an unset gate waits."""

    label = "Keycloak"

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.asked: list[tuple[str, SubjectTokenKind, tuple[str, ...]]] = []
        self.fail: SubjectTokenUnavailable | None = None
        self.gates: dict[str, asyncio.Event] = {}

    async def token_endpoint(self) -> str:
        return self.endpoint

    async def subject_token(
        self, user_id: str, *, kind: SubjectTokenKind, scopes: tuple[str, ...] = ()
    ) -> SubjectToken:
        self.asked.append((user_id, kind, scopes))
        if self.fail is not None:
            raise self.fail
        gate = self.gates.get(user_id)
        if gate is not None:
            await gate.wait()
        token_type = ID_TOKEN_TYPE if kind == "id_token" else ACCESS_TOKEN_TYPE
        return SubjectToken(token=SUBJECT, token_type=token_type, expires_at=time.time() + 600)


def user(name: str) -> Principal:
    return Principal(subject=name, client_id="mcp-client", authenticated=True)


def config(**fields: Any) -> TokenExchangeAuth:
    return TokenExchangeAuth.model_validate(
        {"type": "token_exchange", "identity_provider": "kc", "audience": "crm", **fields}
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def credentials(
    subjects: Subjects, auth: TokenExchangeAuth | None = None, client: ClientAuth | None = None, **kw: Any
) -> TokenExchangeCredentials:
    return TokenExchangeCredentials(
        "crm", auth or config(), subjects, client or ClientAuth("bastion", secret=SECRET), **kw
    )


def bearer(credential: UpstreamCredential) -> str:
    ((name, value),) = credential.headers
    assert name == "authorization"
    return value.removeprefix("Bearer ")


async def refusal(creds: TokenExchangeCredentials, who: Principal) -> UpstreamCredentialsUnavailable:
    with pytest.raises(UpstreamCredentialsUnavailable) as caught:
        await creds.credential(who)
    assert caught.value.code == -32015
    assert SUBJECT not in caught.value.message + caught.value.detail
    assert SECRET not in caught.value.message + caught.value.detail
    return caught.value
