"""`bastion vault status` / `rotate-key` over a real SQLite store, and the startup check: records
sealed under key A, B made current with A as previous, rotated in batches (twice: the second run
has nothing to do), then opened with B alone; a wrong key is refused by name (key id) in
`status`, `rotate-key` and at server startup; leaving the derived default key is a rotation too;
a rotation waits for a refresh holding a record and retries a record reconnected meanwhile;
`bastion users delete` deletes the user's credentials."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from bastion.app import create_app
from bastion.cli.main import app
from bastion.config import Settings, load_config
from bastion.core.records import VaultRecord
from bastion.idp.users import LocalUsers
from bastion.store import open_store
from bastion.store.memory_vault import MemoryVaultStore
from bastion.vault.envelope import MasterKeys, VaultCipher, key_id
from bastion.vault.keys import load_vault_keys
from bastion.vault.rotation import rewrap_all

runner = CliRunner()
MAIN = bytes(range(32))
KEY_A, KEY_B, KEY_C = bytes([1] * 32), bytes([2] * 32), bytes([3] * 32)
PAIRS = [(f"u{i}", c) for i in range(3) for c in ("github", "salesforce")]


def secret(user_id: str, connection: str) -> dict[str, Any]:
    return {"access_token": f"at-{user_id}-{connection}", "refresh_token": "rt"}


def write_config(tmp_path: Path, name: str, vault: str = "") -> Path:
    path = tmp_path / f"{name}.yaml"
    text = f"storage: sqlite:///{tmp_path / 'bastion.db'}\nauth:\n  master_key: '{MAIN.hex()}'\n"
    path.write_text(text + (f"vault:\n{vault}" if vault else ""))
    return path


def settings(config: Path) -> Settings:
    return load_config(config, {})


def seal_all(config: Path, pairs: list[tuple[str, str]] = PAIRS) -> None:
    cipher = VaultCipher(load_vault_keys(settings(config), MAIN))

    async def main() -> None:
        store = await open_store(settings(config).storage)
        try:
            for user_id, connection in pairs:
                kid, wrapped, sealed = cipher.seal(user_id, connection, secret(user_id, connection))
                await store.vault.put(VaultRecord(user_id, connection, "oauth", kid, wrapped, sealed))
        finally:
            await store.close()

    asyncio.run(main())


def stored(config: Path) -> list[VaultRecord]:
    async def main() -> list[VaultRecord]:
        store = await open_store(settings(config).storage)
        try:
            return [r for u in ("u0", "u1", "u2") for r in await store.vault.list_for_user(u)]
        finally:
            await store.close()

    return asyncio.run(main())


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["vault", *args])
    return result.exit_code, " ".join(result.output.split())  # rich wraps long errors


def test_rotation_from_a_to_b_then_b_alone_opens_everything(tmp_path: Path) -> None:
    only_a = write_config(tmp_path, "a", f"  master_key: '{KEY_A.hex()}'\n")
    seal_all(only_a)
    code, out = cli("status", "-c", str(only_a))
    assert code == 0, out
    assert f"current vault master key: {key_id(KEY_A)}" in out
    assert "all 6 records are under the current key" in out
    before = stored(only_a)

    rotating = write_config(
        tmp_path, "ab", f"  master_key: '{KEY_B.hex()}'\n  previous_master_keys: ['{KEY_A.hex()}']\n"
    )
    code, out = cli("status", "-c", str(rotating))
    assert code == 0, out
    assert key_id(KEY_A) in out
    assert "previous" in out
    assert "6 records are under a previous key: run `bastion vault rotate-key`" in out

    code, out = cli("rotate-key", "--batch", "4", "-c", str(rotating))
    assert code == 0, out
    assert f"re-wrapped 6 records under vault master key {key_id(KEY_B)}" in out
    code, out = cli("rotate-key", "-c", str(rotating))  # idempotent
    assert code == 0, out
    assert "re-wrapped 0 records" in out
    assert "records under it now: 6" in out

    only_b = write_config(tmp_path, "b", f"  master_key: '{KEY_B.hex()}'\n")
    code, out = cli("status", "-c", str(only_b))
    assert code == 0, out
    assert "all 6 records are under the current key" in out
    cipher = VaultCipher(load_vault_keys(settings(only_b), MAIN))
    after = stored(only_b)
    assert [(r.user_id, r.connection) for r in after] == PAIRS
    for old, new in zip(before, after, strict=True):
        assert cipher.open(new) == secret(new.user_id, new.connection)
        assert new.key_id == key_id(KEY_B)
        assert new.sealed == old.sealed
        assert new.version == old.version + 1
        assert new.lease_owner is None
        assert new.lease_until == 0.0


def test_a_wrong_key_is_named_by_status_and_rotate_key(tmp_path: Path) -> None:
    seal_all(write_config(tmp_path, "a", f"  master_key: '{KEY_A.hex()}'\n"))
    wrong = write_config(tmp_path, "c", f"  master_key: '{KEY_C.hex()}'\n")
    code, out = cli("status", "-c", str(wrong))
    assert code == 1
    assert f"vault records are wrapped under master key {key_id(KEY_A)}, which is not configured" in out
    assert "NOT CONFIGURED" in out
    assert KEY_A.hex() not in out
    assert KEY_C.hex() not in out
    code, out = cli("rotate-key", "-c", str(wrong))
    assert code == 1
    assert f"master key {key_id(KEY_A)}, which is not configured" in out
    assert all(r.key_id == key_id(KEY_A) for r in stored(wrong))  # nothing was touched


def test_a_malformed_or_missing_key_is_named_without_printing_it(tmp_path: Path) -> None:
    bad = write_config(tmp_path, "bad", "  previous_master_keys: ['c2hvcnQ=', 'not a key!']\n")
    code, out = cli("status", "-c", str(bad))
    assert code == 1
    assert "vault.previous_master_keys[0]: the key decodes to 5 bytes, not 32" in out
    assert "c2hvcnQ" not in out
    missing = write_config(tmp_path, "missing", f"  master_key_file: '{tmp_path / 'nope.key'}'\n")
    code, out = cli("rotate-key", "-c", str(missing))
    assert code == 1
    assert f"vault.master_key_file{tmp_path / 'nope.key'}" in "".join(out.split())  # rich folds long paths


async def test_server_startup_refuses_a_wrong_vault_key(tmp_path: Path) -> None:
    await asyncio.to_thread(seal_all, write_config(tmp_path, "a", f"  master_key: '{KEY_A.hex()}'\n"))
    gateway = create_app(settings(write_config(tmp_path, "c", f"  master_key: '{KEY_C.hex()}'\n")))
    inbox: list[dict[str, Any]] = [{"type": "lifespan.startup"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        await gateway({"type": "lifespan"}, receive, send)  # type: ignore[arg-type]
    finally:
        await gateway.shutdown()
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    assert f"master key {key_id(KEY_A)}, which is not configured" in sent[0]["message"]


async def test_server_startup_exposes_the_cipher_it_checked(tmp_path: Path) -> None:
    config = write_config(tmp_path, "b", f"  master_key: '{KEY_B.hex()}'\n")
    gateway = create_app(settings(config))
    await gateway.startup()
    try:
        assert gateway.authority is not None
        assert gateway.authority.vault_cipher.current_key_id == key_id(KEY_B)
    finally:
        await gateway.shutdown()


def test_leaving_the_derived_default_for_an_explicit_key_is_a_rotation(tmp_path: Path) -> None:
    default = write_config(tmp_path, "default")
    seal_all(default)
    derived = key_id(load_vault_keys(settings(default), MAIN).current)
    explicit = write_config(tmp_path, "b", f"  master_key: '{KEY_B.hex()}'\n")
    code, out = cli("status", "-c", str(explicit))
    assert code == 0, out
    assert derived in out
    assert "previous" in out
    code, out = cli("rotate-key", "-c", str(explicit))
    assert code == 0
    assert "re-wrapped 6 records" in out
    cipher = VaultCipher(MasterKeys(KEY_B))
    assert all(cipher.open(r) == secret(r.user_id, r.connection) for r in stored(explicit))


async def test_rotation_waits_for_a_refresh_and_retries_a_reconnect() -> None:
    old, new = VaultCipher(MasterKeys(KEY_A)), VaultCipher(MasterKeys(KEY_B, (KEY_A,)))

    class Reconnecting(MemoryVaultStore):
        """A user reconnects (a put, sealed under the old key by a replica not yet restarted)
        just after the rotation took the lease: its compare-and-set must fail, then retry."""

        armed = False

        async def take_lease(self, *args: Any, **kw: Any) -> VaultRecord | None:
            leased = await super().take_lease(*args, **kw)
            if leased is not None and self.armed:
                self.armed = False
                kid, wrapped, sealed = old.seal(leased.user_id, leased.connection, {"access_token": "new"})
                await self.put(dataclasses.replace(leased, key_id=kid, wrapped_key=wrapped, sealed=sealed))
            return leased

    store = Reconnecting()
    for user_id, connection in PAIRS[:3]:
        kid, wrapped, sealed = old.seal(user_id, connection, secret(user_id, connection))
        await store.put(VaultRecord(user_id, connection, "oauth", kid, wrapped, sealed))
    assert await store.take_lease("u1", "github", "refresher", until=1e12, now=0.0) is not None
    store.armed = True
    result = await rewrap_all(store, new, batch=1, wait_s=0.0)
    assert (result.rewrapped, result.busy, result.tampered) == (2, 1, 0)  # u1/github is held
    first = await store.get("u0", "github")
    assert first is not None
    assert new.open(first) == {"access_token": "new"}
    assert first.key_id == new.current_key_id  # ... and was re-wrapped on the next pass
    # a refresh holding a record (until 130): the rotation pauses, then takes it once it is free
    assert await store.take_lease("u1", "github", "refresher", until=130.0, now=100.0)
    now = [100.0]

    async def sleep(seconds: float) -> None:
        now[0] += 20.0

    result = await rewrap_all(store, new, wait_s=60.0, clock=lambda: now[0], sleep=sleep)
    assert (result.rewrapped, result.busy, result.tampered) == (1, 0, 0)
    assert now[0] == 140.0  # two pauses
    assert await store.key_ids() == {new.current_key_id}


def test_deleting_a_user_deletes_their_credentials(tmp_path: Path) -> None:
    config = write_config(tmp_path, "a")

    async def add_user() -> str:
        store = await open_store(settings(config).storage)
        try:
            return (await LocalUsers(store.users).add("alice", None)).user_id
        finally:
            await store.close()

    alice = asyncio.run(add_user())
    seal_all(config, [(alice, "github"), (alice, "salesforce"), ("u1", "github")])
    result = runner.invoke(app, ["users", "delete", "alice", "-c", str(config)])
    assert result.exit_code == 0, result.output

    async def remaining() -> set[tuple[str, str]]:
        store = await open_store(settings(config).storage)
        try:
            return {
                (r.user_id, r.connection) for u in (alice, "u1") for r in await store.vault.list_for_user(u)
            }
        finally:
            await store.close()

    assert asyncio.run(remaining()) == {("u1", "github")}


async def test_rotation_leaves_a_tampered_record_and_says_so() -> None:
    old, new = VaultCipher(MasterKeys(KEY_A)), VaultCipher(MasterKeys(KEY_B, (KEY_A,)))
    store = MemoryVaultStore()
    for user_id, connection in PAIRS[:2]:
        kid, wrapped, sealed = old.seal(user_id, connection, secret(user_id, connection))
        await store.put(VaultRecord(user_id, connection, "oauth", kid, wrapped, sealed))
    moved = await store.get("u0", "salesforce")
    assert moved is not None
    await store.put(dataclasses.replace(moved, connection="github", version=5))  # a row moved in the database
    result = await rewrap_all(store, new, batch=1)
    assert (result.rewrapped, result.busy, result.tampered) == (1, 0, 1)
    assert await store.count_by_key() == {old.current_key_id: 1, new.current_key_id: 1}
    assert await store.take_lease("u0", "github", "someone", until=1.0, now=0.0)  # not left leased
