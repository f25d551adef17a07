"""Password hashing for local users: Argon2id through argon2-cffi, with its default
parameters (RFC 9106 §4's second recommended option: 64 MiB memory, 3 passes, 4 lanes).

The hashes are PHC strings (``$argon2id$v=19$m=65536,t=3,p=4$salt$hash``): they carry
their own parameters, so :func:`needs_rehash` can tell when a login should upgrade one
after the defaults change.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# One hasher, argon2-cffi's defaults: they follow the RFC's recommendation as it evolves.
_HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    """A fresh salted Argon2id hash of ``password`` (a PHC string)."""
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True if ``password`` matches. False for a wrong password or a malformed hash; never raises.

    The comparison inside argon2 is constant-time; a malformed hash fails before any
    hashing, which reveals nothing about the password (only that the stored hash is broken).
    """
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        # VerificationError covers VerifyMismatchError (wrong password) and other
        # verification failures; InvalidHashError covers a hash that is not a PHC string.
        return False


def needs_rehash(password_hash: str) -> bool:
    """True if the hash was made with other parameters than today's defaults (or is malformed)."""
    try:
        return _HASHER.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True
