"""Envelope encryption of vault records (AES-256-GCM, NIST SP 800-38D, via ``cryptography``).

Each seal draws a fresh random 32-byte data key. The secret (JSON) is sealed under the data key;
the data key is wrapped under the vault key, ``derive_key(master, "vault")`` (HKDF-SHA256), of the
current master key. Both ciphertexts carry the record's (user_id, connection) as associated
data, encoded as a JSON array with a purpose label, so neither can be moved to another row, to
another user, or swapped for the other. A master key is named by its id: the first 16 hex digits
of SHA-256 over ``derive_key(master, "vault-key-id")``, which reveals nothing about the key.

Rotation re-wraps only the data key (:meth:`VaultCipher.rewrap`); the sealed secret is not
touched. Every failure to open (altered bytes, a moved row, an unknown key id, a malformed
value) is one exception, :class:`~bastion.vault.model.VaultTampered`, whose message never holds
a secret.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.core.crypto import derive_key
from bastion.core.records import VaultRecord
from bastion.vault.model import VaultTampered

DATA_KEY_BYTES = 32
_NONCE_BYTES = 12
_PREFIX = "v1."  # the format of wrapped_key and sealed, so a later one can be told apart


@dataclass(frozen=True, slots=True)
class MasterKeys:
    """The vault master keys: ``current`` seals and re-wraps; every key opens (a rotation)."""

    current: bytes = field(repr=False)
    previous: tuple[bytes, ...] = field(default=(), repr=False)

    @property
    def all(self) -> tuple[bytes, ...]:
        return (self.current, *self.previous)


def key_id(master: bytes) -> str:
    """The public name of a master key (never the key, nor anything that opens a record)."""
    return hashlib.sha256(derive_key(master, "vault-key-id")).hexdigest()[:16]


def _associated(purpose: str, user_id: str, connection: str) -> bytes:
    # a JSON array: unambiguous whatever the ids contain ("a|b", "c" ≠ "a", "b|c")
    return json.dumps(["bastion-vault", purpose, user_id, connection], ensure_ascii=True).encode("ascii")


def _seal(key: bytes, plaintext: bytes, associated: bytes) -> str:
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext, associated)
    return _PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def _open(key: bytes, sealed: str, associated: bytes) -> bytes:
    """The plaintext, or ``VaultTampered`` for anything altered or malformed."""
    if not sealed.startswith(_PREFIX):
        raise VaultTampered("vault record is not in a known format")
    try:
        raw = base64.urlsafe_b64decode(sealed[len(_PREFIX) :].encode("ascii"))
        return AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], associated)
    except (InvalidTag, ValueError, binascii.Error, UnicodeError):
        raise VaultTampered("vault record does not open: altered, or moved to another row") from None


class VaultCipher:
    """Seals, opens and re-wraps vault records under a set of :class:`MasterKeys`."""

    def __init__(self, keys: MasterKeys) -> None:
        self.current_key_id = key_id(keys.current)
        # the first key with an id wins: a previous key equal to the current one changes nothing
        self._wrapping: dict[str, bytes] = {}
        for master in keys.all:
            self._wrapping.setdefault(key_id(master), derive_key(master, "vault"))

    @property
    def key_ids(self) -> frozenset[str]:
        """The ids of every configured master key (the current one included)."""
        return frozenset(self._wrapping)

    def seal(self, user_id: str, connection: str, secret: dict[str, Any]) -> tuple[str, str, str]:
        """``(key_id, wrapped_key, sealed)`` for a new or changed record of (user_id, connection)."""
        try:
            text = json.dumps(secret, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
            plaintext = text.encode("utf-8")
        except UnicodeError:  # its message would quote the secret
            raise ValueError("a vault secret must be a JSON object of valid Unicode text") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"a vault secret must be a JSON object: {exc}") from None
        data_key = os.urandom(DATA_KEY_BYTES)
        sealed = _seal(data_key, plaintext, _associated("secret", user_id, connection))
        return self.current_key_id, self._wrap(data_key, user_id, connection), sealed

    def open(self, record: VaultRecord) -> dict[str, Any]:
        """The record's secret; ``VaultTampered`` if anything about it was altered or moved."""
        data_key = self._unwrap(record)
        plaintext = _open(data_key, record.sealed, _associated("secret", record.user_id, record.connection))
        try:
            secret = json.loads(plaintext.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise VaultTampered("vault record does not hold a JSON object") from None
        if not isinstance(secret, dict):
            raise VaultTampered("vault record does not hold a JSON object")
        return secret

    def rewrap(self, record: VaultRecord) -> VaultRecord:
        """The record with its data key wrapped under the current master key (the sealed secret,
        version and everything else unchanged: the caller writes it with a compare-and-set)."""
        data_key = self._unwrap(record)
        wrapped = self._wrap(data_key, record.user_id, record.connection)
        return dataclasses.replace(record, key_id=self.current_key_id, wrapped_key=wrapped)

    def _wrap(self, data_key: bytes, user_id: str, connection: str) -> str:
        vault_key = self._wrapping[self.current_key_id]
        return _seal(vault_key, data_key, _associated("data-key", user_id, connection))

    def _unwrap(self, record: VaultRecord) -> bytes:
        vault_key = self._wrapping.get(record.key_id)
        if vault_key is None:
            raise VaultTampered(
                f"vault record is wrapped under master key {record.key_id[:16]!r}, which is not configured"
            )
        data_key = _open(
            vault_key, record.wrapped_key, _associated("data-key", record.user_id, record.connection)
        )
        if len(data_key) != DATA_KEY_BYTES:
            raise VaultTampered("vault record's data key is malformed")
        return data_key


__all__ = ["MasterKeys", "VaultCipher", "key_id"]
