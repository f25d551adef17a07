"""Authentication switched off (``auth.enabled: false``): every caller is the anonymous principal.

For loopback development only; the app logs a loud warning at startup. Otherwise
``bastion.authn.access`` verifies Bastion's access tokens.
"""

from __future__ import annotations

from bastion.core.errors import BastionError, PolicyDenied
from bastion.core.records import ANONYMOUS, InboundCall, Principal


class AnonymousAuthenticator:
    def authenticate(self, call: InboundCall, authorization: str | None) -> Principal:
        return ANONYMOUS

    def insufficient_scope(self, call: InboundCall, scopes: tuple[str, ...], reason: str) -> BastionError:
        # without authentication there is no token to step up: the rule simply refuses
        return PolicyDenied(f"Denied by policy: {reason} (needs scopes {' '.join(scopes)})")
