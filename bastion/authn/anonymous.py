"""Authentication switched off (``auth.enabled: false``): every caller is the anonymous principal.

For loopback development only; the app logs a loud warning at startup. Bastion's own token
verification replaces this when the authorization server lands.
"""

from __future__ import annotations

from bastion.core.records import ANONYMOUS, InboundCall, Principal


class AnonymousAuthenticator:
    def authenticate(self, call: InboundCall) -> Principal:
        return ANONYMOUS
