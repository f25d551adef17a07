"""Real HTTPS servers on loopback for tests: a ``trustme`` CA, uvicorn in a thread, and a raw
TLS socket server for responses no well-behaved framework would send."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import trustme
import uvicorn
from starlette.types import ASGIApp

# names the test certificate covers; ``*.test`` never resolves for real (RFC 6761), so tests
# map them to 127.0.0.1 with an injected resolver.
CERT_NAMES = ("localhost", "127.0.0.1", "::1", "cimd.test")


@dataclass(frozen=True)
class LoopbackPki:
    ca: trustme.CA
    cert_file: Path

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file)
        return ctx


def make_pki(tmp: Path) -> LoopbackPki:
    ca = trustme.CA()
    cert_file = tmp / "server.pem"
    ca.issue_cert(*CERT_NAMES).private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    return LoopbackPki(ca=ca, cert_file=cert_file)


@contextlib.contextmanager
def serve_asgi(app: ASGIApp, *, ssl_certfile: Path | None = None) -> Iterator[int]:
    """Run ``app`` under uvicorn on 127.0.0.1 (over TLS with ``ssl_certfile``) in a thread;
    yield the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app,
        lifespan="off",
        http="h11",
        log_level="warning",
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.contextmanager
def serve_tls(app: ASGIApp, pki: LoopbackPki) -> Iterator[int]:
    """Run ``app`` under uvicorn over TLS on 127.0.0.1 in a thread; yield the port."""
    with serve_asgi(app, ssl_certfile=pki.cert_file) as port:
        yield port


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serve_raw_tls(handler: RawHandler, pki: LoopbackPki) -> AsyncIterator[int]:
    """A TLS socket server on 127.0.0.1 that writes whatever bytes ``handler`` writes."""

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0, ssl=pki.server_context())
    port = int(server.sockets[0].getsockname()[1])
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()
