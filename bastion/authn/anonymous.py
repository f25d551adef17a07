"""Authentication switched off (``auth.enabled: false``): every caller is the anonymous principal.

For loopback development only; the app logs a loud warning at startup. Otherwise
``bastion.authn.access`` verifies Bastion's access tokens.
"""

from __future__ import annotations

from bastion.core.records import ANONYMOUS, InboundCall, Principal


class AnonymousAuthenticator:
    def authenticate(self, call: InboundCall, authorization: str | None) -> Principal:
        return ANONYMOUS
