"""The built-in user directory and `bastion users` (real SQLite, real argon2)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.cli.main import app
from bastion.idp.users import LocalUsers, UserError, normalize_username
from bastion.store import open_store

PASSWORD = "correct horse battery staple"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "bastion.yaml"
    path.write_text(f"storage: sqlite:///{tmp_path / 'bastion.db'}\n")
    return path


def test_usernames_are_normalised() -> None:
    assert normalize_username("  Alice ") == "alice"
    assert normalize_username("\uff21\uff2c\uff29\uff23\uff25") == "alice"  # full-width letters (NFKC)
    for bad in ("", "a b", "x" * 65, "eve;drop", "<script>"):
        with pytest.raises(UserError):
            normalize_username(bad)


def test_cli_lifecycle(config: Path) -> None:
    runner = CliRunner()
    added = runner.invoke(
        app,
        [
            "users",
            "add",
            "Alice",
            "--password-stdin",
            "-g",
            "sales",
            "--attr",
            "region=emea",
            "-c",
            str(config),
        ],
        input=PASSWORD + "\n",
    )
    assert added.exit_code == 0, added.output
    assert "added alice" in added.output
    again = runner.invoke(
        app, ["users", "add", "ALICE", "--password-stdin", "-c", str(config)], input=PASSWORD + "\n"
    )
    assert again.exit_code == 1
    assert "already exists" in again.output
    short = runner.invoke(
        app, ["users", "add", "bob", "--password-stdin", "-c", str(config)], input="short\n"
    )
    assert short.exit_code == 1
    assert "at least 12" in short.output
    listed = runner.invoke(app, ["users", "list", "-c", str(config)])
    assert "alice" in listed.output
    assert "sales" in listed.output
    assert "region=emea" in listed.output
    assert "active" in listed.output
    bad_attr = runner.invoke(
        app,
        ["users", "add", "carol", "--attr", "novalue", "--password-stdin", "-c", str(config)],
        input=PASSWORD + "\n",
    )
    assert bad_attr.exit_code == 2
    assert "is not KEY=VALUE" in bad_attr.output
    assert runner.invoke(app, ["users", "disable", "alice", "-c", str(config)]).exit_code == 0
    assert "disabled" in runner.invoke(app, ["users", "list", "-c", str(config)]).output
    missing = runner.invoke(app, ["users", "disable", "nobody", "-c", str(config)])
    assert missing.exit_code == 1
    assert runner.invoke(app, ["users", "delete", "alice", "-c", str(config)]).exit_code == 0
    assert "alice" not in runner.invoke(app, ["users", "list", "-c", str(config)]).output


async def _refresh_families(url: str, *, issue: dict[str, tuple[str, str]] | None = None) -> set[str]:
    """Issue ``{family: (username, client_id)}`` (if given); returns the revoked families."""
    store = await open_store(url)
    try:
        users = LocalUsers(store.users)
        for family, (username, client_id) in (issue or {}).items():
            user = await users.find(username)
            assert user is not None
            await store.refresh_tokens.issue(
                family, f"{family}-hash", {}, 2_000_000_000.0, user_id=user.user_id, client_id=client_id
            )
        tokens = [await store.refresh_tokens.get(f"{f}-hash") for f in ("a1", "a2", "b1")]
        return {t.family_id for t in tokens if t is not None and t.revoked}
    finally:
        await store.close()


def test_disable_and_delete_revoke_refresh_tokens(config: Path) -> None:
    runner = CliRunner()
    url = config.read_text().removeprefix("storage: ").strip()
    for name in ("alice", "bob"):
        added = runner.invoke(
            app, ["users", "add", name, "--password-stdin", "-c", str(config)], input=PASSWORD + "\n"
        )
        assert added.exit_code == 0, added.output
    issue = {"a1": ("alice", "c1"), "a2": ("alice", "c2"), "b1": ("bob", "c1")}
    assert asyncio.run(_refresh_families(url, issue=issue)) == set()

    disabled = runner.invoke(app, ["users", "disable", "Alice", "-c", str(config)])
    assert disabled.exit_code == 0, disabled.output
    assert "refresh-token families revoked: 2" in disabled.output  # every client of hers
    assert asyncio.run(_refresh_families(url)) == {"a1", "a2"}
    again = runner.invoke(app, ["users", "disable", "alice", "-c", str(config)])
    assert "refresh-token families revoked: 0" in again.output

    deleted = runner.invoke(app, ["users", "delete", "bob", "-c", str(config)])
    assert deleted.exit_code == 0, deleted.output
    assert "bob deleted" in deleted.output
    assert "refresh-token families revoked: 1" in deleted.output
    assert asyncio.run(_refresh_families(url)) == {"a1", "a2", "b1"}
    missing = runner.invoke(app, ["users", "delete", "bob", "-c", str(config)])
    assert missing.exit_code == 1
    assert "no user 'bob'" in missing.output


async def test_authentication(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'users.db'}")
    try:
        users = LocalUsers(store.users)
        alice = await users.add("alice", PASSWORD, groups=["sales"])
        assert alice.password_hash is not None
        assert PASSWORD not in alice.password_hash
        assert (await users.authenticate("Alice", PASSWORD)) == alice
        assert await users.authenticate("alice", PASSWORD + "!") is None
        assert await users.authenticate("nobody", PASSWORD) is None
        await users.set_disabled("alice", True)
        assert await users.authenticate("alice", PASSWORD) is None
        await users.set_disabled("alice", False)
        await users.set_password("alice", "another long passphrase")
        assert await users.authenticate("alice", PASSWORD) is None
        assert await users.authenticate("alice", "another long passphrase") is not None
    finally:
        await store.close()
