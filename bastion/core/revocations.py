"""Revoked access tokens, by ``jti``, as an in-memory set every replica keeps in sync with the
store (a JWT cannot be recalled, so the resource server must know which ones were revoked).

Lookups are a set membership test on the hot path; entries leave the set when the token would
have expired anyway.
"""

from __future__ import annotations


class RevokedTokens:
    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}
        self.synced_until = 0.0  # revoked_at of the newest row read from the store

    def add(self, jti: str, expires_at: float) -> None:
        self._expiry[jti] = expires_at

    def __contains__(self, jti: object) -> bool:
        return jti in self._expiry

    def __len__(self) -> int:
        return len(self._expiry)

    def prune(self, now: float) -> None:
        for jti in [j for j, exp in self._expiry.items() if exp <= now]:
            del self._expiry[jti]
