"""The ID-JAG bridge's configuration rules, and Bastion itself as the bridge's client (Role 3's
``IdJagSource``): the authority is built from real settings on the in-memory store."""

from __future__ import annotations

import secrets
import time
from typing import Any

import jwt
import pytest
import yaml

from bastion.authority import Authority, build_authority
from bastion.config import load_config_text
from bastion.core.credentials import IdJagRequest, IdJagUnavailable
from bastion.core.errors import ConfigError
from bastion.core.records import AuditRecord, UserRecord
from bastion.store import open_store

ISSUER = "http://127.0.0.1:8080"
TARGET = "https://as.example.test"
RESOURCE = "https://mcp.example.test/mcp"


class Audit:
    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def record(self, rec: AuditRecord) -> None:
        self.records.append(rec)


def settings(ema: dict[str, Any]) -> Any:
    config = {
        "public_url": ISSUER,
        "listen": "127.0.0.1:8080",
        "storage": "sqlite:///./unused-by-these-tests.db",  # the tests pass their own store
        "auth": {"enabled": True, "master_key": secrets.token_hex(32)},
        "upstreams": [{"name": "a", "http": {"url": "http://127.0.0.1:9/mcp"}}],
        "ema": ema,
    }
    return load_config_text(yaml.safe_dump(config), {})


def target(**changes: Any) -> dict[str, Any]:
    return {"audience": TARGET, "resources": [RESOURCE], "scopes": ["read", "write"], **changes}


@pytest.mark.parametrize(
    ("bridge", "message"),
    [
        ({"enabled": True}, "at least one target"),
        ({"enabled": True, "targets": [target(), target()]}, "listed twice"),
        ({"targets": [target(audience="http://as.example.test")]}, "https"),
        ({"targets": [target(resources=[])]}, "resources"),
        ({"targets": [target(resources=[RESOURCE, RESOURCE])]}, "listed twice"),
        ({"targets": [target(scopes=["a b"])]}, "scope tokens"),
        ({"targets": [target(subject="name")]}, "subject"),
        ({"lifetime": 10}, "lifetime"),
        ({"lifetime": 3600}, "lifetime"),
    ],
)
def test_bridge_configuration_is_checked(bridge: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings({"bridge": bridge})


async def test_bastions_own_issuer_is_never_trusted() -> None:
    own = {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks", "algorithms": ["ES256"]}
    store = await open_store("memory://")
    try:
        with pytest.raises(ConfigError, match="own issuer"):
            await build_authority(settings({"trusted_issuers": [own]}), store, Audit())
    finally:
        await store.close()


async def _authority(bridge: dict[str, Any]) -> tuple[Authority, Audit]:
    audit = Audit()
    store = await open_store("memory://")
    authority = await build_authority(settings({"bridge": bridge}), store, audit)
    for name, groups in (("alice", {"ops"}), ("bob", set()), ("dora", {"ops"})):
        await store.users.add(
            UserRecord(
                user_id=f"u_{name}",
                username=name,
                password_hash=None,
                email=f"{name}@example.test",
                groups=frozenset(groups),
                disabled=name == "dora",
                created_at=time.time(),
            )
        )
    return authority, audit


def request(user_id: str = "u_alice", **changes: Any) -> IdJagRequest:
    fields: dict[str, Any] = {
        "user_id": user_id,
        "audience": TARGET,
        "resource": RESOURCE,
        "scopes": ("write", "admin"),
        "client_id": "bastion-at-target",
        **changes,
    }
    return IdJagRequest(**fields)


async def test_bastion_mints_for_itself_under_the_same_policy() -> None:
    authority, audit = await _authority({"enabled": True, "targets": [target(groups=["ops"])]})
    try:
        source = authority.bridge_source
        assert source is not None
        before = time.time()
        minted = await source.id_jag(request())
        assert minted.scopes == ("write",)  # narrowed to the target's scopes, not refused
        assert before + 290 <= minted.expires_at <= time.time() + 300
        keys = jwt.PyJWKSet.from_dict(authority.ctx.keys.ring.jwks())
        header = jwt.get_unverified_header(minted.assertion)
        assert header["typ"] == "oauth-id-jag+jwt"
        key = next(k for k in keys.keys if k.key_id == header["kid"])
        claims = jwt.decode(minted.assertion, key, algorithms=[header["alg"]], audience=TARGET, issuer=ISSUER)
        assert claims["sub"] == "u_alice"
        assert claims["client_id"] == "bastion-at-target"  # no MCP-client allow-list: Bastion is the client
        assert claims["resource"] == RESOURCE
        assert claims["scope"] == "write"
        assert "email" not in claims
        assert [r.event for r in audit.records][-1] == "token.issued"
        assert minted.assertion not in repr(audit.records)

        everything = await source.id_jag(request(scopes=()))
        assert everything.scopes == ("read", "write")

        for refused, why in [
            (request(audience="https://elsewhere.example"), "not an authorization server"),
            (request(resource="https://mcp.example.test/other"), "pair is not allowed"),
            (request(user_id="u_bob"), "user may not"),
            (request(user_id="u_dora"), "disabled"),
            (request(user_id="u_nobody"), "no longer exists"),
        ]:
            with pytest.raises(IdJagUnavailable, match=why) as caught:
                await source.id_jag(refused)
            assert not caught.value.sign_in
    finally:
        await authority.ctx.store.close()
        await authority.aclose()


async def test_subject_modes_per_target() -> None:
    targets = [
        target(subject="pairwise", include_email=True),
        target(audience="https://other.example.test", subject="pairwise"),
        target(audience="https://mail.example.test", subject="email"),
    ]
    authority, _ = await _authority({"enabled": True, "targets": targets})
    try:
        source = authority.bridge_source
        assert source is not None

        async def claims(audience: str, user_id: str = "u_alice") -> dict[str, Any]:
            minted = await source.id_jag(request(user_id=user_id, audience=audience))
            return dict(jwt.decode(minted.assertion, options={"verify_signature": False}))

        first, again = await claims(TARGET), await claims(TARGET)
        assert first["sub"] == again["sub"] != "u_alice"  # stable per target
        assert first["email"] == "alice@example.test"
        assert (await claims(TARGET, "u_bob"))["sub"] != first["sub"]
        assert (await claims("https://other.example.test"))["sub"] != first["sub"]  # unlinkable
        assert (await claims("https://mail.example.test"))["sub"] == "alice@example.test"
    finally:
        await authority.ctx.store.close()
        await authority.aclose()


async def test_a_disabled_bridge_mints_nothing() -> None:
    authority, _ = await _authority({"targets": [target()]})
    try:
        assert authority.bridge_source is None
    finally:
        await authority.ctx.store.close()
        await authority.aclose()
