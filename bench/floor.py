"""The Python floor: a minimal hand-written pure-ASGI MCP forwarder.

Per request it verifies the bearer JWT once with pyjwt (HS256: signature, ``aud``, ``iss``, ``exp``),
forwards the body and the MCP headers to the upstream over one pooled aiohttp session, and streams
the upstream's response back chunk by chunk. No policy, no audit, no parsing: what any Python
gateway costs at least.

    python -m bench.floor --port 9200 --upstream http://127.0.0.1:9100/mcp --secret S --audience A
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import jwt
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

FORWARDED_REQUEST_HEADERS = frozenset(
    {
        b"content-type",
        b"accept",
        b"mcp-protocol-version",
        b"mcp-session-id",
        b"mcp-method",
        b"mcp-name",
        b"last-event-id",
    }
)
FORWARDED_RESPONSE_HEADERS = frozenset({"content-type", "mcp-session-id", "cache-control"})
ISSUER = "https://bench.invalid/issuer"


class Floor:
    def __init__(self, upstream: str, secret: str, audience: str) -> None:
        self.upstream = upstream
        self.secret = secret
        self.audience = audience
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers: dict[bytes, bytes] = dict(scope["headers"])
        if not self._authorized(headers.get(b"authorization", b"")):
            await _reply(
                send,
                401,
                b'{"error":"invalid_token"}',
                [(b"www-authenticate", b'Bearer error="invalid_token"')],
            )
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        out = {k.decode(): v.decode() for k, v in headers.items() if k in FORWARDED_REQUEST_HEADERS}
        assert self.session is not None
        async with self.session.request(
            scope["method"], self.upstream, data=bytes(body), headers=out
        ) as resp:
            response_headers = [
                (k.lower().encode(), v.encode())
                for k, v in resp.headers.items()
                if k.lower() in FORWARDED_RESPONSE_HEADERS
            ]
            await send({"type": "http.response.start", "status": resp.status, "headers": response_headers})
            async for chunk in resp.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _authorized(self, authorization: bytes) -> bool:
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        try:
            jwt.decode(token, self.secret, algorithms=["HS256"], audience=self.audience, issuer=ISSUER)
        except jwt.PyJWTError:
            return False
        return True

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=60)
                self.session = aiohttp.ClientSession(
                    connector=connector, timeout=aiohttp.ClientTimeout(total=60)
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _reply(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", b"application/json"), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="upstream MCP endpoint URL")
    parser.add_argument("--secret", required=True, help="HS256 key the bearer tokens are signed with")
    parser.add_argument("--audience", required=True, help="expected aud claim")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    uvicorn.run(
        Floor(args.upstream, args.secret, args.audience),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
