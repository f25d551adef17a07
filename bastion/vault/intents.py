"""Connect intents: a call needed a connection the user does not have, so the user is sent to
``/connect/<connection>?intent=<id>`` (a URL elicitation).

The intent id is 256 random bits and only a handle: the URL carries no personal data and
authenticates nobody. The connect page accepts it only from a browser signed in to Bastion as
the very user the intent was made for, so a forwarded link cannot attach someone else's account
(MCP elicitation §"URL mode": the server verifies the person who opens the URL is the user who
triggered it). Intents live in the grant store (hashed key, 15 minutes, any replica).

When the connect flow finishes, the intent is marked done under its elicitation id, so the
gateway can tell a waiting legacy client (``notifications/elicitation/complete``) and answer a
modern client's retry.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from urllib.parse import quote

from bastion.core.records import JsonObject
from bastion.store import GrantStore

INTENT_KIND = "connect_intent"
DONE_KIND = "connect_done"
INTENT_TTL_S = 15 * 60


def _key(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class ConnectIntent:
    intent_id: str
    user_id: str
    connection: str
    client_id: str | None
    elicitation_id: str
    reconnect: bool
    expires_at: float
    scopes: tuple[str, ...] = ()  # a step-up: ask the provider for these (else the connection's)


class ConnectIntents:
    def __init__(self, grants: GrantStore, public_url: str) -> None:
        self._grants = grants
        self._base = public_url.rstrip("/")

    def url(self, intent: ConnectIntent) -> str:
        return f"{self._base}/connect/{quote(intent.connection, safe='')}?intent={intent.intent_id}"

    async def create(
        self,
        user_id: str,
        connection: str,
        client_id: str | None,
        *,
        reconnect: bool = False,
        scopes: tuple[str, ...] = (),
    ) -> ConnectIntent:
        now = time.time()
        intent = ConnectIntent(
            intent_id=secrets.token_urlsafe(32),
            user_id=user_id,
            connection=connection,
            client_id=client_id,
            elicitation_id=secrets.token_urlsafe(18),
            reconnect=reconnect,
            expires_at=now + INTENT_TTL_S,
            scopes=scopes,
        )
        payload: JsonObject = {
            "user_id": user_id,
            "connection": connection,
            "client_id": client_id,
            "elicitation_id": intent.elicitation_id,
            "reconnect": reconnect,
            "scopes": list(scopes),
        }
        await self._grants.put(INTENT_KIND, _key(intent.intent_id), payload, intent.expires_at)
        return intent

    async def find(self, intent_id: str) -> ConnectIntent | None:
        """The intent, left in place (the connect page may be opened twice before it finishes)."""
        if not intent_id or len(intent_id) > 128:
            return None
        data = await self._grants.peek(INTENT_KIND, _key(intent_id), time.time())
        return _intent(intent_id, data)

    async def finish(self, intent_id: str) -> ConnectIntent | None:
        """Consume the intent (single use) and remember its elicitation as complete."""
        now = time.time()
        data = await self._grants.consume(INTENT_KIND, _key(intent_id), now)
        intent = _intent(intent_id, data)
        if intent is not None:
            done: JsonObject = {"user_id": intent.user_id, "connection": intent.connection}
            await self._grants.put(DONE_KIND, _key(intent.elicitation_id), done, now + INTENT_TTL_S)
        return intent

    async def completed(self, elicitation_id: str) -> bool:
        return await self._grants.peek(DONE_KIND, _key(elicitation_id), time.time()) is not None


def _intent(intent_id: str, data: JsonObject | None) -> ConnectIntent | None:
    if data is None:
        return None
    user_id, connection = data.get("user_id"), data.get("connection")
    elicitation_id, client_id = data.get("elicitation_id"), data.get("client_id")
    scopes = data.get("scopes")
    if not (isinstance(user_id, str) and isinstance(connection, str) and isinstance(elicitation_id, str)):
        return None
    return ConnectIntent(
        intent_id=intent_id,
        user_id=user_id,
        connection=connection,
        client_id=client_id if isinstance(client_id, str) else None,
        elicitation_id=elicitation_id,
        reconnect=bool(data.get("reconnect")),
        expires_at=0.0,
        scopes=tuple(s for s in scopes if isinstance(s, str)) if isinstance(scopes, list) else (),
    )


__all__ = ["DONE_KIND", "INTENT_KIND", "INTENT_TTL_S", "ConnectIntent", "ConnectIntents"]
