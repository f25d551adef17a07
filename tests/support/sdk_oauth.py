"""The official Python SDK's OAuth client (``OAuthClientProvider``), driven headlessly: the
"browser" is :func:`tests.support.oauth.sign_in_and_consent` filling Bastion's real pages."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx2
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from tests.support.oauth import REDIRECT_URI, sign_in_and_consent


class MemoryTokenStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class HeadlessUser:
    """Plays the user in the browser the SDK would open; counts the sign-ins it did."""

    def __init__(self, username: str, password: str, *, decision: str = "allow") -> None:
        self.username, self.password, self.decision = username, password, decision
        self.sign_ins = 0
        self.redirects: list[str] = []
        self._result: AuthorizationCodeResult | None = None

    async def redirect_handler(self, url: str) -> None:
        async with httpx2.AsyncClient(follow_redirects=False, timeout=30) as http:
            final = await sign_in_and_consent(
                http, url, username=self.username, password=self.password, decision=self.decision
            )
        location = final.headers["location"]
        self.redirects.append(location)
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        self.sign_ins += 1
        self._result = AuthorizationCodeResult(
            code=query.get("code", ""), state=query.get("state"), iss=query.get("iss")
        )

    async def callback_handler(self) -> AuthorizationCodeResult:
        assert self._result is not None, "no authorization response captured"
        result, self._result = self._result, None
        return result


def sdk_auth(
    url: str,
    user: HeadlessUser,
    *,
    client_metadata_url: str | None = None,
    storage: MemoryTokenStorage | None = None,
    client_name: str = "Python SDK test client",
) -> OAuthClientProvider:
    return OAuthClientProvider(
        server_url=url,
        storage=storage or MemoryTokenStorage(),
        redirect_handler=user.redirect_handler,
        callback_handler=user.callback_handler,
        client_metadata=OAuthClientMetadata(
            client_name=client_name,
            redirect_uris=[REDIRECT_URI],  # type: ignore[list-item]
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        ),
        client_metadata_url=client_metadata_url,
    )
