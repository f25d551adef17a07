"""Credentials from configuration only: the upstream's static headers/env already live in its
config, so nothing is added per principal. Per-user credentials arrive with the vault proper.
"""

from __future__ import annotations

from bastion.core.records import NO_CREDENTIAL, Decision, Principal, UpstreamCredential


class StaticVault:
    def resolve(self, principal: Principal, decision: Decision, endpoint: str | None) -> UpstreamCredential:
        return NO_CREDENTIAL
