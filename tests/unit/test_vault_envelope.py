"""Envelope encryption of vault records (issue #7): a secret opens only in the row it was sealed
for, under a configured master key; every alteration is ``VaultTampered``; a rotation re-wraps
the data key without touching the sealed secret; key ids reveal nothing about the keys."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.crypto import derive_key
from bastion.core.records import VaultRecord
from bastion.vault.envelope import MasterKeys, VaultCipher, key_id
from bastion.vault.model import VaultTampered

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
SECRET = {"access_token": "at-Ü-1", "refresh_token": "rt-1", "extra": {"n": [1, 2.5, None, True]}}


def sealed_record(
    cipher: VaultCipher, user_id: str = "u1", connection: str = "github", **kw: Any
) -> VaultRecord:
    kid, wrapped, sealed = cipher.seal(user_id, connection, kw.pop("secret", SECRET))
    return VaultRecord(
        user_id=user_id,
        connection=connection,
        kind="oauth",
        key_id=kid,
        wrapped_key=wrapped,
        sealed=sealed,
        **kw,
    )


def flip(text: str, index: int) -> str:
    """``text`` ("v1." + base64url) with one bit of its decoded bytes flipped."""
    raw = bytearray(base64.urlsafe_b64decode(text[3:]))
    raw[index] ^= 0x01
    return "v1." + base64.urlsafe_b64encode(bytes(raw)).decode()


def test_roundtrip_and_fresh_data_key_per_seal() -> None:
    cipher = VaultCipher(MasterKeys(KEY_A))
    first, second = sealed_record(cipher), sealed_record(cipher)
    assert cipher.open(first) == SECRET
    assert first.key_id == cipher.current_key_id
    assert first.wrapped_key != second.wrapped_key
    assert first.sealed != second.sealed
    assert "at-" not in first.sealed
    assert "rt-1" not in repr(first)


def test_key_id_is_a_hash_of_a_derived_key_and_reveals_nothing() -> None:
    expected = hashlib.sha256(derive_key(KEY_A, "vault-key-id")).hexdigest()[:16]
    assert key_id(KEY_A) == expected
    assert len(key_id(KEY_A)) == 16
    assert key_id(KEY_A) != key_id(KEY_B)
    assert key_id(KEY_A) not in (KEY_A.hex(), hashlib.sha256(KEY_A).hexdigest()[:16])
    assert repr(MasterKeys(KEY_A, (KEY_B,))) == "MasterKeys()"


@pytest.mark.parametrize("index", [0, 11, 12, 30, -1])  # nonce, first/last ciphertext byte, tag
def test_a_flipped_bit_in_the_sealed_secret_does_not_open(index: int) -> None:
    cipher = VaultCipher(MasterKeys(KEY_A))
    record = sealed_record(cipher)
    with pytest.raises(VaultTampered):
        cipher.open(dataclasses.replace(record, sealed=flip(record.sealed, index)))


@pytest.mark.parametrize("index", [0, 12, 43, -1])
def test_a_flipped_bit_in_the_wrapped_key_does_not_open(index: int) -> None:
    cipher = VaultCipher(MasterKeys(KEY_A))
    record = sealed_record(cipher)
    with pytest.raises(VaultTampered):
        cipher.open(dataclasses.replace(record, wrapped_key=flip(record.wrapped_key, index)))


@pytest.mark.parametrize(
    "change",
    [
        {"sealed": ""},
        {"sealed": "g1.abc"},
        {"sealed": "v1.!!!"},
        {"sealed": "v1."},
        {"wrapped_key": "v1.AAAA"},
        {"wrapped_key": "plain"},
    ],
)
def test_malformed_values_do_not_open(change: dict[str, str]) -> None:
    cipher = VaultCipher(MasterKeys(KEY_A))
    with pytest.raises(VaultTampered):
        cipher.open(dataclasses.replace(sealed_record(cipher), **change))


def test_a_sealed_secret_moved_to_another_users_record_does_not_open() -> None:
    cipher = VaultCipher(MasterKeys(KEY_A))
    alice = sealed_record(cipher, "alice", secret={"access_token": "alice's"})
    mallory = sealed_record(cipher, "mallory", secret={"access_token": "mallory's"})
    # the attacker swaps ciphertexts between the rows, one part or both
    for moved in [
        dataclasses.replace(mallory, sealed=alice.sealed),
        dataclasses.replace(mallory, wrapped_key=alice.wrapped_key, sealed=alice.sealed),
        dataclasses.replace(alice, user_id="mallory"),
    ]:
        with pytest.raises(VaultTampered):
            cipher.open(moved)
    # the wrapped key and the sealed secret cannot stand in for each other
    with pytest.raises(VaultTampered):
        cipher.open(dataclasses.replace(alice, wrapped_key=alice.sealed, sealed=alice.wrapped_key))


@pytest.mark.parametrize(
    ("user_id", "connection"),
    [("u1", "salesforce"), ("u1|github", ""), ("u", "1github"), ('u1", "github', "x")],
)
def test_a_record_moved_to_another_connection_does_not_open(user_id: str, connection: str) -> None:
    cipher = VaultCipher(MasterKeys(KEY_A))
    record = sealed_record(cipher, "u1", "github")
    with pytest.raises(VaultTampered):
        cipher.open(dataclasses.replace(record, user_id=user_id, connection=connection))


def test_an_unknown_key_id_does_not_open_and_is_named() -> None:
    record = sealed_record(VaultCipher(MasterKeys(KEY_A)))
    with pytest.raises(VaultTampered, match=key_id(KEY_A)):
        VaultCipher(MasterKeys(KEY_B)).open(record)
    # a key id changed in the database: the real key does not get tried
    both = VaultCipher(MasterKeys(KEY_B, (KEY_A,)))
    with pytest.raises(VaultTampered):
        both.open(dataclasses.replace(record, key_id=key_id(KEY_B)))


def test_rewrap_moves_only_the_data_key_to_the_current_key() -> None:
    old = sealed_record(VaultCipher(MasterKeys(KEY_A)), version=4)
    rotating = VaultCipher(MasterKeys(KEY_B, (KEY_A,)))
    assert rotating.open(old) == SECRET  # the previous key still opens
    new = rotating.rewrap(old)
    assert new.key_id == key_id(KEY_B) != old.key_id
    assert new.sealed == old.sealed
    assert new.wrapped_key != old.wrapped_key
    assert dataclasses.replace(new, key_id=old.key_id, wrapped_key=old.wrapped_key) == old
    only_new = VaultCipher(MasterKeys(KEY_B))
    assert only_new.open(new) == SECRET
    with pytest.raises(VaultTampered):
        only_new.open(old)
    # fresh records are sealed under the current key
    assert sealed_record(rotating).key_id == key_id(KEY_B)


def test_cipher_lists_its_key_ids() -> None:
    cipher = VaultCipher(MasterKeys(KEY_B, (KEY_A, KEY_B)))
    assert cipher.current_key_id == key_id(KEY_B)
    assert cipher.key_ids == {key_id(KEY_A), key_id(KEY_B)}


def test_only_json_objects_are_sealed_and_opened() -> None:
    cipher = VaultCipher(MasterKeys(KEY_A))
    with pytest.raises(ValueError, match="JSON"):
        cipher.seal("u1", "github", {"n": float("nan")})
    with pytest.raises(ValueError, match="JSON"):
        cipher.seal("u1", "github", {"b": b"bytes"})
    with pytest.raises(ValueError, match="JSON"):
        cipher.seal("u1", "github", {"s": "\ud800"})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    secret=st.dictionaries(st.text(), json_values, max_size=6),
    user_id=st.text(min_size=1),
    connection=st.text(min_size=1),
)
def test_any_json_object_roundtrips(secret: dict[str, Any], user_id: str, connection: str) -> None:
    cipher = VaultCipher(MasterKeys(KEY_A, (KEY_B,)))
    record = sealed_record(cipher, user_id, connection, secret=secret)
    opened = cipher.open(record)
    assert json.dumps(opened, sort_keys=True) == json.dumps(secret, sort_keys=True)
    assert opened == secret
