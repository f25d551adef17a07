"""A streaming reverse proxy that adds ``Authorization: Bearer <token>`` to every request.

The conformance harness's server mode cannot send a token; put this in front of an
authenticated Bastion and point the harness here. Host and Origin pass through unchanged (so
the DNS-rebinding scenario still tests Bastion), responses stream chunk by chunk (SSE).

    python -m tests.support.bearer_proxy --upstream http://127.0.0.1:8080 --port 8100 --token-file t
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import httpx2
import uvicorn

HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"content-length"}


def make_app(upstream: str, token_file: Path) -> Any:
    client = httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=None))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        token = token_file.read_text().strip()
        # RFC 9110 §5.5: surrounding whitespace is not part of a value (httpx2 refuses to send it)
        headers = [
            (k, v.strip(b" \t")) for k, v in scope["headers"] if k.lower() not in HOP | {b"authorization"}
        ]
        headers.append((b"authorization", f"Bearer {token}".encode()))
        query = scope["query_string"].decode()
        url = upstream + scope["raw_path"].decode() + (f"?{query}" if query else "")
        response = await client.send(
            client.build_request(scope["method"], url, headers=headers, content=body), stream=True
        )
        try:
            out = [(k, v) for k, v in response.headers.raw if k.lower() not in HOP]
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the harness closed a stream
        finally:
            await response.aclose()

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-file", type=Path, required=True)
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.upstream.rstrip("/"), args.token_file),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
