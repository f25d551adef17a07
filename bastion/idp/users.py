"""The built-in user directory (the embedded default identity source): local users with
argon2id password hashes, groups and attributes, stored through ``UserStore``.

Usernames are normalised here, once (NFKC, case-folded, trimmed), so ``Alice`` and ``alice``
are the same person whatever the database's collation. Password hashing runs off the event
loop (argon2 takes ~0.3-0.4 s on purpose).
"""

from __future__ import annotations

import asyncio
import functools
import re
import secrets
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping

from bastion.core.errors import Conflict
from bastion.core.records import UserRecord
from bastion.idp.passwords import hash_password, verify_password
from bastion.store.base import UserStore

_USERNAME = re.compile(r"^[\w.@+-]{1,64}$")
MIN_PASSWORD = 12
# verified when the username does not exist, so a miss costs the same time as a wrong password


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when there is no user, so a miss costs what a hit costs; made
    on first use (hashing is deliberately slow: ~0.25 s of every start-up and CLI command)."""
    return hash_password(secrets.token_urlsafe(16))


class UserError(ValueError):
    """A username or password that cannot be used; the message says why."""


def normalize_username(raw: str) -> str:
    name = unicodedata.normalize("NFKC", raw).strip().casefold()
    if not _USERNAME.match(name):
        raise UserError("usernames are 1-64 letters, digits or . _ @ + -")
    return name


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"passwords need at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise UserError("passwords are at most 1024 characters")


class LocalUsers:
    def __init__(self, store: UserStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    async def add(
        self,
        username: str,
        password: str | None,
        *,
        display_name: str = "",
        email: str | None = None,
        groups: Iterable[str] = (),
        attributes: Mapping[str, str] | None = None,
    ) -> UserRecord:
        name = normalize_username(username)
        password_hash = None
        if password is not None:
            check_password(password)
            password_hash = await asyncio.to_thread(hash_password, password)
        record = UserRecord(
            user_id="u_" + secrets.token_urlsafe(12),
            username=name,
            password_hash=password_hash,
            display_name=display_name or name,
            email=email,
            groups=frozenset(groups),
            attributes=dict(attributes or {}),
            created_at=self._clock(),
        )
        try:
            await self._store.add(record)
        except Conflict:
            raise UserError(f"user {name!r} already exists") from None
        return record

    async def list(self) -> list[UserRecord]:
        return await self._store.list()

    async def find(self, username: str) -> UserRecord | None:
        """A user by name: built-in names case-insensitively; users from an identity provider by
        their ``<idp>:<email or subject>`` name (never a password sign-in: they have no password)."""
        if ":" in username:
            return await self._store.get_by_username(username.strip().lower()[:256])
        try:
            return await self._store.get_by_username(normalize_username(username))
        except UserError:
            return None

    name = "local"  # as a PasswordSource (bastion.idp.sources)

    async def verify(self, username: str, password: str) -> UserRecord | None:
        return await self.authenticate(username, password)

    async def authenticate(self, username: str, password: str) -> UserRecord | None:
        """The user, when the password is right and the account enabled; None otherwise (one
        answer for every failure, in about the same time, so usernames cannot be probed)."""
        user = await self.find(username)
        stored = user.password_hash if user is not None and user.password_hash else None
        ok = await asyncio.to_thread(verify_password, stored or _dummy_hash(), password)
        if user is None or not ok or user.disabled or user.password_hash is None or user.source != "local":
            return None
        return user

    async def set_password(self, username: str, password: str) -> None:
        user = await self._require(username)
        if user.source != "local":
            raise UserError(
                f"{user.username!r} signs in with the identity provider {user.source!r}, not a password"
            )
        check_password(password)
        await self._store.set_password_hash(user.user_id, await asyncio.to_thread(hash_password, password))

    async def set_disabled(self, username: str, disabled: bool) -> None:
        user = await self._require(username)
        await self._store.set_disabled(user.user_id, disabled)

    async def remove(self, username: str) -> None:
        user = await self._require(username)
        await self._store.delete(user.user_id)

    async def _require(self, username: str) -> UserRecord:
        user = await self.find(username)
        if user is None:
            raise UserError(f"no user {username!r}")
        return user
