"""`bastion grants` and `bastion clients` over a real SQLite store: consents shown by username
and withdrawn (with the user's refresh tokens for that client), client registrations listed by
source and deleted, stored text printed inert."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli.main import app
from bastion.core.records import ClientRecord, ConsentRecord
from bastion.idp.users import LocalUsers
from bastion.store import open_store

runner = CliRunner()
RESOURCE = "https://mcp.example/time"


def client(cid: str, source: str, **kw: object) -> ClientRecord:
    fields: dict[str, object] = {
        "client_id": cid,
        "source": source,
        "client_name": f"App {cid}",
        "redirect_uris": ("http://127.0.0.1/cb",),
        "grant_types": ("authorization_code",),
        "token_endpoint_auth_method": "none",
        "created_at": 1_700_000_000.0,
    }
    fields.update(kw)
    return ClientRecord(**fields)  # type: ignore[arg-type]


async def _seed(url: str) -> None:
    store = await open_store(url)
    try:
        users = LocalUsers(store.users)
        alice = await users.add("Alice", None)
        bob = await users.add("bob", None)
        for user_id, client_id, scopes in [
            (alice.user_id, "c-config", {"mcp:read", "mcp:write"}),
            (alice.user_id, "d-dcr", {"mcp:read"}),
            (bob.user_id, "c-config", {"mcp:read"}),
            ("oidc|ext-42", "d-dcr", {"mcp:read"}),  # a user from an external IdP: no directory entry
        ]:
            await store.consents.grant(
                ConsentRecord(user_id, client_id, frozenset(scopes), frozenset({RESOURCE}), 1_700_000_000.0)
            )
        for family, user_id, client_id in [
            ("fa1", alice.user_id, "c-config"),
            ("fa2", alice.user_id, "c-config"),  # a second device
            ("fa3", alice.user_id, "d-dcr"),
            ("fb1", bob.user_id, "c-config"),
            ("fx1", "oidc|ext-42", "d-dcr"),
            ("ft1", alice.user_id, "t-trusted"),  # a trusted client: tokens without a consent
        ]:
            await store.refresh_tokens.issue(
                family, f"{family}-hash", {}, 2_000_000_000.0, user_id=user_id, client_id=client_id
            )
        await store.clients.put(
            client("c-config", "config", token_endpoint_auth_method="client_secret_basic")
        )
        await store.clients.put(client("d-dcr", "dcr", expires_at=1_800_000_000.0))
        await store.clients.put(client("d-evil", "dcr", client_name="\x1b[31mred\x1b[0m [bold]x[/bold]"))
    finally:
        await store.close()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    url = f"sqlite:///{tmp_path / 'bastion.db'}"
    asyncio.run(_seed(url))
    path = tmp_path / "bastion.yaml"
    path.write_text(f"storage: {url}\n")
    return path


def revoked(config: Path) -> set[str]:
    """The refresh-token families revoked so far."""
    url = config.read_text().removeprefix("storage: ").strip()

    async def families() -> set[str]:
        store = await open_store(url)
        try:
            tokens = [
                await store.refresh_tokens.get(f"{f}-hash")
                for f in ("fa1", "fa2", "fa3", "fb1", "fx1", "ft1")
            ]
            return {t.family_id for t in tokens if t is not None and t.revoked}
        finally:
            await store.close()

    return asyncio.run(families())


def cli(config: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "-c", str(config)])
    return result.exit_code, result.output


def test_grants_list_shows_usernames_scopes_and_resources(config: Path) -> None:
    code, output = cli(config, "grants", "list")
    assert code == 0, output
    lines = output.splitlines()
    assert [ln.split()[0] for ln in lines[1:]] == ["alice", "alice", "bob", "oidc|ext-42"]  # by username
    assert any("alice" in ln and "c-config" in ln and "mcp:read mcp:write" in ln for ln in lines)
    assert any("bob" in ln and "c-config" in ln for ln in lines)
    assert any("oidc|ext-42" in ln and "d-dcr" in ln for ln in lines)  # the id, for lack of a name
    assert RESOURCE in output
    assert "2023-11-14 22:13:20" in output  # granted_at in UTC


def test_grants_list_for_one_user(config: Path) -> None:
    code, output = cli(config, "grants", "list", "--user", "ALICE")  # usernames are case-insensitive
    assert code == 0, output
    assert "d-dcr" in output
    assert "bob" not in output
    code, output = cli(config, "grants", "list", "-u", "oidc|ext-42")
    assert code == 0, output
    assert "d-dcr" in output
    assert "c-config" not in output
    code, output = cli(config, "grants", "list", "--user", "nobody")
    assert code == 1
    assert "no user 'nobody'" in output


def test_grants_revoke(config: Path) -> None:
    code, output = cli(config, "grants", "revoke", "Alice", "c-config")
    assert code == 0, output
    assert "consent of Alice for c-config revoked" in output
    assert "refresh-token families revoked: 2" in output
    assert revoked(config) == {"fa1", "fa2"}  # not alice's other client, not bob's
    code, output = cli(config, "audit", "tail", "--json")
    assert '"event":"consent.revoked"' in output.replace(" ", "")
    assert '"client_id":"c-config"' in output.replace(" ", "")
    code, output = cli(config, "grants", "revoke", "alice", "c-config")
    assert code == 1
    assert "alice has no consent for client 'c-config'" in output
    code, output = cli(config, "grants", "list", "--user", "alice")
    assert "c-config" not in output
    assert "d-dcr" in output
    code, output = cli(config, "grants", "revoke", "oidc|ext-42", "d-dcr")
    assert code == 0, output
    assert "refresh-token families revoked: 1" in output
    assert cli(config, "grants", "revoke", "nobody", "d-dcr")[0] == 1
    code, output = cli(config, "grants", "list")
    assert "bob" in output
    assert "oidc|ext-42" not in output
    assert revoked(config) == {"fa1", "fa2", "fx1"}


def test_grants_revoke_without_a_consent_still_revokes_refresh_tokens(config: Path) -> None:
    code, output = cli(config, "grants", "revoke", "alice", "t-trusted")
    assert code == 0, output
    assert "no consent of alice for t-trusted" in output
    assert "refresh-token families revoked: 1" in output
    assert revoked(config) == {"ft1"}
    code, output = cli(config, "grants", "revoke", "alice", "t-trusted")  # nothing left to revoke
    assert code == 1
    assert "alice has no consent for client 't-trusted'" in output


def test_grants_list_when_there_are_none(config: Path) -> None:
    cli(config, "grants", "revoke", "bob", "c-config")
    code, output = cli(config, "grants", "list", "--user", "bob")  # a known user without consents
    assert (code, output.strip()) == (0, "no consents")


def test_clients_list_by_source(config: Path) -> None:
    code, output = cli(config, "clients", "list")
    assert code == 0, output
    for expected in ("c-config", "d-dcr", "d-evil", "client_secret_basic", "http://127.0.0.1/cb"):
        assert expected in output
    assert "2027-01-15 08:00:00" in output  # d-dcr's expiry
    code, output = cli(config, "clients", "list", "--source", "dcr")
    assert code == 0, output
    assert "d-dcr" in output
    assert "c-config" not in output
    code, output = cli(config, "clients", "list", "--source", "cimd")
    assert code == 0, output
    assert "not stored" in output
    assert cli(config, "clients", "list", "--source", "bogus")[0] == 2


def test_stored_text_cannot_drive_the_terminal(config: Path) -> None:
    code, output = cli(config, "clients", "list", "--source", "dcr")
    assert code == 0, output
    assert "\x1b" not in output
    assert "\\x1b[31mred" in output
    assert "[bold]x[/bold]" in output  # markup in data is printed, not applied


def test_clients_delete(config: Path) -> None:
    code, output = cli(config, "clients", "delete", "d-dcr")
    assert (code, output.strip()) == (0, "client d-dcr deleted")
    code, output = cli(config, "clients", "delete", "d-dcr")
    assert code == 1
    assert "no client 'd-dcr'" in output
    code, output = cli(config, "clients", "delete", "c-config")
    assert code == 0, output
    assert "registers it again at its next start" in output
    code, output = cli(config, "clients", "list")
    assert "d-dcr" not in output
    assert "c-config" not in output
