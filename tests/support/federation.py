"""Bastion in front of an Entra-like IdP (``tests/support/idp.py``): start both, and walk a
browser through Bastion's pages, the consent for the MCP client, the IdP's sign-in and back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx2

from tests.support.gateway import Gateway, run_gateway
from tests.support.idp import IdpServer, idp_sign_in, run_idp, secret_client
from tests.support.oauth import hidden_fields
from tests.support.procs import free_port

ALICE = {
    "sub": "alice-pairwise",
    "oid": "00000000-0000-0000-0000-0000000000a1",
    "email": "alice@contoso.com",
    "name": "Alice Contoso",
    "roles": ["Sales.Write"],
    "groups": ["g-sales"],
    "tid": "tenant-a",
}


@dataclass
class Federation:
    gateway: Gateway
    idp: IdpServer
    client_secret: str

    @property
    def callback(self) -> str:
        return f"{self.gateway.base}/login/idp/entra/callback"


@contextlib.contextmanager
def bastion_with_entra(
    tmp: Path,
    upstreams: list[dict[str, Any]],
    *,
    users: dict[str, dict[str, Any]] | None = None,
    provider: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    idp_extra: dict[str, Any] | None = None,
) -> Iterator[Federation]:
    port = free_port()
    callback = f"http://127.0.0.1:{port}/login/idp/entra/callback"
    client = secret_client("bastion-gateway", [callback])
    with run_idp(tmp, clients=[client], users=users or {"alice": ALICE}, extra=idp_extra) as idp:
        entra = {
            "name": "entra",
            "preset": "entra",
            "issuer": idp.issuer,
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
            "grants": [{"role": "Sales.Write", "groups": ["sales"]}],
            **(provider or {}),
        }
        config = {"auth": {"enabled": True}, "identity_providers": [entra], **(extra or {})}
        if "auth" in (extra or {}):
            config["auth"] = {"enabled": True, **extra["auth"]}  # type: ignore[index]
        with run_gateway(tmp, upstreams, extra=config, port=port) as gateway:
            yield Federation(gateway, idp, client["client_secret"])


async def through_bastion_to_idp(
    http: httpx2.AsyncClient, authorize_url: str, *, provider: str = "entra", decision: str = "allow"
) -> httpx2.Response:
    """From the MCP client's authorize URL to the first response that leaves Bastion (the IdP
    redirect, or the redirect back to the MCP client); pressing ``decision`` on the consent page."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(authorize_url))
    response = await http.get(authorize_url)
    for _ in range(10):
        if response.status_code in (302, 303):
            target = urljoin(str(response.url), response.headers["location"])
            if not target.startswith(origin):
                return response
            response = await http.get(target)
            continue
        body = response.text
        if 'name="decision"' in body:
            form_action = body.split('<form method="post" action="', 1)[1].split('"', 1)[0]
            response = await http.post(
                urljoin(origin, form_action.replace("&amp;", "&")),
                data={**hidden_fields(body), "decision": decision},
            )
        elif f"/login/idp/{provider}?" in body:
            link = body.split(f'href="/login/idp/{provider}?', 1)[1].split('"', 1)[0].replace("&amp;", "&")
            response = await http.get(f"{origin}/login/idp/{provider}?{link}")
        else:
            return response
    raise AssertionError("Bastion's pages did not lead anywhere")


async def sign_in_via_idp(
    http: httpx2.AsyncClient,
    fed: Federation,
    authorize_url: str,
    *,
    login: str = "alice",
    cancel: bool = False,
) -> httpx2.Response:
    """The whole browser journey; returns Bastion's final redirect to the MCP client (unfetched)."""
    to_idp = await through_bastion_to_idp(http, authorize_url)
    assert to_idp.headers["location"].startswith(fed.idp.base), to_idp.text[:500]
    back = await idp_sign_in(
        http, to_idp.headers["location"], login=login, stop_prefix=fed.callback, cancel=cancel
    )
    return await http.get(back.headers["location"])
