"""Where the signing key ring lives: sealed in the store under the master key.

The master key comes from ``auth.master_key`` (normally ``${BASTION_MASTER_KEY}``) or from
``auth.master_key_file``. With the embedded SQLite store a missing file is created (0600) on
first start, so ``make run`` needs no setup; with Postgres the key must be given, because every
replica has to open the same sealed ring and a key generated on one machine would lock the
others out.

Every replica reloads the ring from the store periodically (:meth:`KeyRingHolder.refresh`), so
``bastion keys rotate`` reaches all of them without a restart; the old key keeps verifying until
every token it signed has expired.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

import jwt

from bastion.config.model import Settings
from bastion.oauth.keys import KeyRing, KeyRingSealError, SigningKey, master_key_from_text
from bastion.store import Store

log = logging.getLogger("bastion.oauth.keys")


class MasterKeyError(Exception):
    """The master key is missing or unusable; the message says how to fix it."""


def load_master_key(settings: Settings, *, create: bool | None = None) -> bytes:
    """The 32-byte master key from config or its file (creating the file for SQLite deployments)."""
    auth = settings.auth
    if auth.master_key:
        try:
            return master_key_from_text(auth.master_key)
        except ValueError as exc:
            raise MasterKeyError(f"auth.master_key: {exc}") from None
    path = Path(auth.master_key_file)
    if path.exists():
        try:
            return master_key_from_text(path.read_text(encoding="ascii"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise MasterKeyError(f"auth.master_key_file {path}: {exc}") from None
    if create is None:
        create = settings.storage.startswith("sqlite")
    if not create:
        raise MasterKeyError(
            f"no master key: set auth.master_key (e.g. ${{BASTION_MASTER_KEY}}) or create {path} with "
            "`openssl rand -base64 32`; every replica must use the same key"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(key.hex() + "\n")
    log.warning("created a new master key in %s (back it up: it opens the signing keys)", path)
    return key


class KeyRingHolder:
    """The current key ring of this replica, loaded from (and saved to) the store."""

    def __init__(self, store: Store, master_key: bytes, *, alg: str, max_token_lifetime_s: int) -> None:
        self._store = store
        self._master = master_key
        self._alg = alg
        self._lifetime = max_token_lifetime_s
        self._ring: KeyRing | None = None

    @property
    def ring(self) -> KeyRing:
        assert self._ring is not None, "KeyRingHolder.load() was not awaited"
        return self._ring

    def _open(self, blob: bytes) -> KeyRing:
        try:
            return KeyRing.load(blob, self._master, clock=time.time, max_token_lifetime_s=self._lifetime)
        except KeyRingSealError as exc:
            raise MasterKeyError(
                f"{exc}. The signing keys were sealed with another master key: give Bastion the key it "
                "was first started with (auth.master_key / auth.master_key_file)"
            ) from None

    async def load(self) -> KeyRing:
        """Open the stored ring, or create and store a new one on first start."""
        blob = await self._store.signing_keys.load()
        if blob is None:
            ring = KeyRing.generate(
                time.time(), clock=time.time, alg=self._alg, max_token_lifetime_s=self._lifetime
            )
            await self._store.signing_keys.save(ring.export(self._master))
            log.info("generated signing key %s (%s)", ring.active.kid, ring.active.alg)
        else:
            ring = self._open(blob)
        self._ring = ring
        return ring

    async def refresh(self) -> None:
        """Pick up a rotation made by another replica or the CLI."""
        blob = await self._store.signing_keys.load()
        if blob is not None:
            self._ring = self._open(blob)

    async def rotate(self, alg: str | None = None) -> SigningKey:
        """Make a new active key (the old one keeps verifying) and store the ring."""
        ring = await self.load()
        new = ring.rotate(time.time(), alg=alg)
        await self._store.signing_keys.save(ring.export(self._master))
        return new

    def verification_key(self, kid: str) -> jwt.PyJWK | None:
        """The bearer verifier's key source: always the ring this replica loaded last."""
        return self.ring.verification_key(kid)
