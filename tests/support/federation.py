"""Bastion in front of an Entra-like IdP (``tests/support/idp.py``): start both, and walk a
browser through Bastion's pages, the consent for the MCP client, the IdP's sign-in and back.

What reached an upstream is in ``federation_upstream.py``; the audit trail, the IdP sessions Bastion
keeps, Bastion's message pages and the real MCP clients' "browser" are in ``federation_checks.py``."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from bastion.core.records import UserRecord
from tests.support.gateway import Gateway, run_gateway
from tests.support.idp import IdpServer, idp_sign_in, run_idp, secret_client
from tests.support.oauth import gateway_store, hidden_fields
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


def idp_provider(
    name: str, idp: IdpServer, client: Mapping[str, Any], *, key_dir: Path | None = None, **overrides: Any
) -> dict[str, Any]:
    """An ``identity_providers`` entry (preset entra) for ``client`` at ``idp``: its secret, or for
    a private_key_jwt client (``private_key_jwt_client``) its private key written to
    ``key_dir/<name>.pem`` with a self-signed certificate for it in ``key_dir/<name>.crt`` (Entra
    certificate credentials: the assertion names the certificate by thumbprint)."""
    entry: dict[str, Any] = {
        "name": name,
        "preset": "entra",
        "issuer": idp.issuer,
        "client_id": client["client_id"],
        "token_endpoint_auth_method": client.get("token_endpoint_auth_method", "client_secret_basic"),
    }
    if "private_key_pem" in client:
        assert key_dir is not None, "a private_key_jwt client needs key_dir"
        key_file = key_dir / f"{name}.pem"
        key_file.write_text(client["private_key_pem"])
        key_file.chmod(0o600)
        cert_file = key_dir / f"{name}.crt"
        cert_file.write_bytes(_self_signed_pem(client["private_key_pem"], str(client["client_id"])))
        entry["private_key_file"] = str(key_file)
        entry["certificate_file"] = str(cert_file)
    else:
        entry["client_secret"] = client["client_secret"]
    return {**entry, **overrides}


def _self_signed_pem(private_key_pem: str, common_name: str) -> bytes:
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
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
    return cert.public_bytes(serialization.Encoding.PEM)


def callback_url(gateway_base: str, provider: str) -> str:
    """Bastion's redirect URI at the IdP for ``provider``."""
    return f"{gateway_base}/login/idp/{provider}/callback"


async def idp_callback(
    http: httpx2.AsyncClient, idp_location: str, *, callback: str, login: str = "alice", cancel: bool = False
) -> str:
    """Sign in (or cancel) at the IdP from Bastion's redirect ``idp_location``; the absolute URL of
    the IdP's redirect back to Bastion's ``callback``, not yet fetched."""
    back = await idp_sign_in(http, idp_location, login=login, stop_prefix=callback, cancel=cancel)
    return urljoin(str(back.url), back.headers["location"])


async def register_public_client(
    http: httpx2.AsyncClient, gateway_base: str, redirect_uri: str, name: str = "Federated MCP client"
) -> str:
    """Register a public native client with Bastion (RFC 7591, as MCP clients do); its id."""
    response = await http.post(
        f"{gateway_base}/register",
        json={
            "redirect_uris": [redirect_uri],
            "application_type": "native",
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "client_name": name,
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["client_id"])


async def federated_user(gateway: Gateway, username: str) -> UserRecord | None:
    """The user ``username`` (``<idp>:<email>``) in the running gateway's store, if there is one."""
    async with gateway_store(gateway) as store:
        return await store.users.get_by_username(username)
