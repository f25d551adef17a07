"""The #234 compatibility wire format (discussion #234, "multi-user authorization"): an agent that
serves many users puts the end user's token for a downstream service in
``params._meta.authorization = {"method": "oauth2", "token": "…"}`` of ``tools/call``.

Edge takes it out of the message at once, whatever the upstream, so it reaches no log line, no
audit record and no upstream body; the vault alone decides where it goes (the header of an
upstream declared ``auth: {type: client_supplied}``). Any other upstream never sees it.
"""

from __future__ import annotations

import re

import orjson

from bastion.core.credentials import SuppliedToken
from bastion.core.errors import InvalidParams
from bastion.core.records import InboundCall

MAX_TOKEN_CHARS = 8192
_TOKEN = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII: it becomes an HTTP header value


def take_supplied_token(call: InboundCall) -> tuple[InboundCall, SuppliedToken | None]:
    """The call without ``_meta.authorization``, and the token it carried (if any)."""
    if call.method != "tools/call":
        return call, None
    params = call.params
    meta = params.get("_meta")
    if not isinstance(meta, dict) or "authorization" not in meta:
        return call, None
    presented = meta["authorization"]
    rest = {k: v for k, v in meta.items() if k != "authorization"}
    new_params = {k: v for k, v in params.items() if k != "_meta"}
    if rest:
        new_params["_meta"] = rest
    message = {**call.message, "params": new_params}
    call = call._replace(message=message, body=orjson.dumps(message))
    if not isinstance(presented, dict) or presented.get("method") not in ("oauth2", "none"):
        raise InvalidParams(
            'Invalid params: _meta.authorization must be {"method": "oauth2", "token": "..."}'
        )
    if presented["method"] == "none":
        return call, None
    token = presented.get("token")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS or not _TOKEN.match(token):
        raise InvalidParams("Invalid params: _meta.authorization.token must be a non-empty token string")
    return call, SuppliedToken("oauth2", token)
