"""The built-in user directory and `bastion users` (real SQLite, real argon2)."""

from __future__ import annotations

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
        ["users", "add", "Alice", "--password-stdin", "-g", "sales", "-c", str(config)],
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
    assert "active" in listed.output
    assert runner.invoke(app, ["users", "disable", "alice", "-c", str(config)]).exit_code == 0
    assert "disabled" in runner.invoke(app, ["users", "list", "-c", str(config)]).output
    missing = runner.invoke(app, ["users", "disable", "nobody", "-c", str(config)])
    assert missing.exit_code == 1
    assert runner.invoke(app, ["users", "delete", "alice", "-c", str(config)]).exit_code == 0
    assert "alice" not in runner.invoke(app, ["users", "list", "-c", str(config)]).output


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
