"""``vault:`` in bastion.yaml: the master keys that keep users' downstream credentials at rest."""

from __future__ import annotations

from pydantic import Field, model_validator

from bastion.config.base import ConfigModel


class VaultSettings(ConfigModel):
    master_key: str | None = Field(
        None,
        repr=False,
        description=(
            "32-byte key (base64 or hex) that wraps the per-record data keys of the credential vault; "
            "use ${BASTION_VAULT_KEY}. Default: a key derived from Bastion's master key (auth.master_key), "
            "so the embedded setup needs no configuration. Changing it is a rotation: list the old key "
            "in previous_master_keys, then run `bastion vault rotate-key`."
        ),
    )
    master_key_file: str | None = Field(
        None,
        description="File holding the vault master key (instead of master_key); never created by Bastion.",
    )
    previous_master_keys: list[str] = Field(
        default_factory=list,
        repr=False,
        description=(
            "Older vault master keys (base64 or hex), still accepted to open records during a rotation "
            "and removed once `bastion vault status` shows none under them. While master_key or "
            "master_key_file is set, the key derived from auth.master_key is accepted as well, so leaving "
            "the default is a rotation like any other."
        ),
    )
    previous_master_key_files: list[str] = Field(
        default_factory=list, description="Files holding older vault master keys (see previous_master_keys)."
    )

    @model_validator(mode="after")
    def _one_current_key(self) -> VaultSettings:
        if self.master_key and self.master_key_file:
            raise ValueError("set vault.master_key or vault.master_key_file, not both")
        return self
