"""Where the vault's master keys come from, and the startup check that they open what is stored.

- ``vault.master_key`` / ``vault.master_key_file``: the current key, which seals and re-wraps;
- ``vault.previous_master_keys`` / ``vault.previous_master_key_files``: older keys, still opened
  while ``bastion vault rotate-key`` moves the records off them;
- neither: the key is derived from Bastion's main master key (``auth.master_key``), so the
  embedded default needs no configuration. With an explicit key the derived one stays accepted
  as a previous key, so leaving the default is a rotation like any other.

Errors name the setting that is wrong or missing, never a key.
"""

from __future__ import annotations

from pathlib import Path

from bastion.config.model import Settings
from bastion.core.crypto import KEY_HINT, derive_key, key_from_text
from bastion.store import VaultStore
from bastion.vault.envelope import MasterKeys, key_id


class VaultKeyError(Exception):
    """A vault master key is missing, malformed, or not the one the records were sealed with;
    the message names the setting (or the key id) and says how to fix it."""


def _key_from_text(text: str, where: str) -> bytes:
    try:
        return key_from_text(text)
    except ValueError as exc:
        raise VaultKeyError(f"{where}: {exc}") from None


def _key_from_file(path: str, where: str) -> bytes:
    try:
        text = Path(path).read_text(encoding="ascii")
    except OSError as exc:
        raise VaultKeyError(f"{where} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise VaultKeyError(
            f"{where} {path}: the key is neither base64, base64url nor hex; {KEY_HINT}"
        ) from None
    return _key_from_text(text, f"{where} {path}")


def load_vault_keys(settings: Settings, main_master: bytes) -> MasterKeys:
    """The vault's master keys from ``settings.vault`` (``main_master``: ``auth``'s master key)."""
    vault = settings.vault
    derived = derive_key(main_master, "vault-master")
    previous: list[bytes] = []
    if vault.master_key:
        current = _key_from_text(vault.master_key, "vault.master_key")
    elif vault.master_key_file:
        current = _key_from_file(vault.master_key_file, "vault.master_key_file")
    else:
        current = derived
    previous += [
        _key_from_text(text, f"vault.previous_master_keys[{i}]")
        for i, text in enumerate(vault.previous_master_keys)
    ]
    previous += [
        _key_from_file(path, f"vault.previous_master_key_files[{i}]")
        for i, path in enumerate(vault.previous_master_key_files)
    ]
    previous.append(derived)  # leaving the default for an explicit key is a rotation too
    unique = [key for i, key in enumerate(previous) if key != current and key not in previous[:i]]
    return MasterKeys(current, tuple(unique))


async def check_vault_keys(store: VaultStore, keys: MasterKeys) -> None:
    """Refuse to start when some record is wrapped under a master key that is not configured:
    every connection of those users would fail later, one call at a time."""
    configured = {key_id(key) for key in keys.all}
    missing = sorted((await store.key_ids()) - configured)
    if not missing:
        return
    named = ", ".join(missing)
    which = f"master key {named}, which is" if len(missing) == 1 else f"master keys {named}, which are"
    raise VaultKeyError(
        f"vault records are wrapped under {which} not configured: set vault.master_key to the key they "
        "were sealed with, or list it in vault.previous_master_keys "
        f"(the current vault key is {key_id(keys.current)})"
    )


__all__ = ["VaultKeyError", "check_vault_keys", "load_vault_keys"]
