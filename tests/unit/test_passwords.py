"""bastion.idp.passwords: Argon2id hashing, verification that never raises, rehash checks."""

from __future__ import annotations

import argon2
import pytest

from bastion.idp.passwords import hash_password, needs_rehash, verify_password


def test_hash_is_a_salted_argon2id_phc_string() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first.startswith("$argon2id$v=19$")
    assert "correct horse" not in first
    assert first != second  # a fresh salt each time


def test_verify_accepts_the_password_and_rejects_others() -> None:
    stored = hash_password("correct horse")
    assert verify_password(stored, "correct horse") is True
    assert verify_password(stored, "correct horse ") is False
    assert verify_password(stored, "") is False


def test_non_ascii_passwords_round_trip() -> None:
    stored = hash_password("pässwörd-☃")
    assert verify_password(stored, "pässwörd-☃") is True
    assert verify_password(stored, "passwörd-☃") is False


@pytest.mark.parametrize(
    "malformed",
    [
        "",
        "not a hash",
        "$argon2id$v=19$m=65536,t=3,p=4$!!!$???",
        "$2b$12$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234",  # bcrypt
        hash_password("x")[:-10],  # truncated
    ],
    ids=["empty", "text", "bad-base64", "bcrypt", "truncated"],
)
def test_verify_returns_false_on_a_malformed_hash(malformed: str) -> None:
    assert verify_password(malformed, "x") is False


def test_a_tampered_hash_does_not_verify() -> None:
    stored = hash_password("secret")
    digest = stored.rsplit("$", 1)[1]
    flipped = ("A" if digest[0] != "A" else "B") + digest[1:]
    assert verify_password(stored.rsplit("$", 1)[0] + "$" + flipped, "secret") is False


def test_needs_rehash_only_for_other_parameters() -> None:
    assert needs_rehash(hash_password("x")) is False
    weaker = argon2.PasswordHasher(time_cost=1, memory_cost=8192).hash("x")
    assert verify_password(weaker, "x") is True  # old hashes still log in...
    assert needs_rehash(weaker) is True  # ...and get upgraded
    assert needs_rehash("not a hash") is True
