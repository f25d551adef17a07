"""No policy configured: every call is allowed (tool-level policy arrives with the Cedar engine)."""

from __future__ import annotations

from bastion.core.records import ALLOW_ALL, Decision, InboundCall, Principal


class AllowAll:
    def decide(self, principal: Principal, call: InboundCall) -> Decision:
        return ALLOW_ALL
