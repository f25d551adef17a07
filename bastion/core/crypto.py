"""Small symmetric-crypto helpers shared by the layers that keep secrets at rest.

- ``derive_key``: one 32-byte key per purpose from the master key (HKDF-SHA256, RFC 5869), so a
  key for cookies can never be turned against refresh tokens or sealed IdP tokens.
- ``seal_text`` / ``open_text``: AES-256-GCM (NIST SP 800-38D) with a random 96-bit nonce and
  caller-chosen associated data (e.g. the record id it belongs to, so a sealed value cannot be
  moved to another record). ``open_text`` returns None for anything altered or malformed.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_PREFIX = "g1."


def derive_key(master_key: bytes, purpose: str) -> bytes:
    hkdf = HKDF(algorithm=SHA256(), length=32, salt=None, info=b"bastion:" + purpose.encode("ascii"))
    return hkdf.derive(master_key)


def seal_text(key: bytes, plaintext: str, associated: str) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), associated.encode("utf-8"))
    return _PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def open_text(key: bytes, sealed: str, associated: str) -> str | None:
    if not sealed.startswith(_PREFIX):
        return None
    try:
        raw = base64.urlsafe_b64decode(sealed[len(_PREFIX) :].encode("ascii"))
        plain = AESGCM(key).decrypt(raw[:12], raw[12:], associated.encode("utf-8"))
        return plain.decode("utf-8")
    except (InvalidTag, ValueError, binascii.Error, UnicodeError):
        return None


MASTER_KEY_BYTES = 32
KEY_HINT = "write 32 random bytes as base64 or hex, e.g. `openssl rand -base64 32`"


def key_from_text(text: str) -> bytes:
    """32 bytes written as hex (64 digits), base64 or base64url (padded or not); ValueError
    with a message that says what is wrong (never the key itself) otherwise."""
    value = text.strip()
    if len(value) == 2 * MASTER_KEY_BYTES and all(c in "0123456789abcdefABCDEF" for c in value):
        return bytes.fromhex(value)
    try:
        normal = value.replace("-", "+").replace("_", "/")
        raw = base64.b64decode(normal + "=" * (-len(normal) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the key is neither base64, base64url nor hex; {KEY_HINT}") from None
    if len(raw) != MASTER_KEY_BYTES:
        raise ValueError(f"the key decodes to {len(raw)} bytes, not {MASTER_KEY_BYTES}; {KEY_HINT}")
    return raw
