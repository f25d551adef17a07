"""``auth: {type: client_supplied}``: the #234 compatibility mode. The MCP client supplies the
user's token for the downstream service with each ``tools/call``; Bastion (which still required
its own token from the client) presents it to the upstream in the configured header, and nowhere
else. Calls other than ``tools/call`` carry no token and get none.

Safer alternatives exist and should be preferred when they fit (docs/policy.md): with the vault
(issue #7) or EMA the agent never holds the users' downstream tokens at all.
"""

from __future__ import annotations

from bastion.config.upstream_auth import ClientSuppliedAuth
from bastion.core.credentials import CLIENT_SUPPLIED, SuppliedToken
from bastion.core.errors import SuppliedTokenMissing
from bastion.core.records import NO_CREDENTIAL, Principal, UpstreamCredential


class SuppliedCredentials:
    def __init__(self, upstream: str, auth: ClientSuppliedAuth) -> None:
        self._upstream = upstream
        self._header = auth.header
        self._before, _, self._after = auth.template.partition("{token}")

    def credential(
        self, principal: Principal, supplied: SuppliedToken | None, tool: str | None
    ) -> UpstreamCredential:
        if tool is None:
            return NO_CREDENTIAL
        if supplied is None:
            raise SuppliedTokenMissing(
                tool,
                f"upstream '{self._upstream}' needs the user's token for this tool in "
                'params._meta.authorization ({"method": "oauth2", "token": "..."})',
            )
        value = f"{self._before}{supplied.token}{self._after}"
        return UpstreamCredential(
            headers=((self._header, value),), mode=CLIENT_SUPPLIED, process_scope=principal.subject
        )
