"""RFC 9449 DPoP proofs at the token endpoint (§4.3), as far as Enterprise-Managed Authorization
needs them: an ID-JAG with ``cnf.jkt`` may only be redeemed by the holder of that key, shown by a
DPoP proof signed with it. Checks: ``typ: dpop+jwt``, an asymmetric ``alg``, a public ``jwk`` in
the header (never a private member), the signature by that jwk, ``htm`` = POST, ``htu`` = the
token endpoint, ``iat`` within the skew, a ``jti`` never seen before (replay store shared by all
replicas), and the jwk's RFC 7638 thumbprint equal to the ``jkt`` asked for.
"""

from __future__ import annotations

import json
import time
from typing import Any

import jwt

from bastion.core.errors import Conflict
from bastion.oauth.context import OAuthContext
from bastion.oauth.errors import InvalidGrant
from bastion.oauth.keys import jwk_thumbprint
from bastion.oauth.opaque import digest

PROOF_ALGS = ("ES256", "ES384", "RS256", "PS256", "EdDSA")
SKEW_S = 60
REPLAY_KIND = "dpop_jti"
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k"})


async def verify_proof(ctx: OAuthContext, proof: str | None, *, htu: str, expected_jkt: str) -> None:
    if not proof:
        raise InvalidGrant("this assertion is bound to a key: a DPoP proof is required")
    try:
        header = jwt.get_unverified_header(proof)
    except jwt.PyJWTError:
        raise InvalidGrant("the DPoP proof is malformed") from None
    jwk = header.get("jwk")
    if header.get("typ") != "dpop+jwt" or header.get("alg") not in PROOF_ALGS or not isinstance(jwk, dict):
        raise InvalidGrant("the DPoP proof header is not acceptable")
    if _PRIVATE_MEMBERS & jwk.keys():
        raise InvalidGrant("the DPoP proof carries a private key")
    try:
        key = jwt.PyJWK.from_json(json.dumps(jwk))
        claims: dict[str, Any] = jwt.decode(
            proof, key, algorithms=[str(header["alg"])], options={"require": ["jti", "htm", "htu", "iat"]}
        )
        thumbprint = jwk_thumbprint({k: str(v) for k, v in jwk.items()})
    except (jwt.PyJWTError, KeyError, ValueError):
        raise InvalidGrant("the DPoP proof does not verify") from None
    if claims["htm"] != "POST" or claims["htu"] != htu:
        raise InvalidGrant("the DPoP proof is for another request")
    iat = claims["iat"]
    now = time.time()
    if not isinstance(iat, int | float) or abs(now - iat) > SKEW_S:
        raise InvalidGrant("the DPoP proof is too old or from the future")
    if thumbprint != expected_jkt:
        raise InvalidGrant("the DPoP proof is signed with another key than the assertion is bound to")
    try:
        await ctx.store.grants.put(
            REPLAY_KIND, digest(thumbprint + "\x00" + str(claims["jti"])), {}, now + 2 * SKEW_S
        )
    except Conflict:
        raise InvalidGrant("the DPoP proof was used before") from None
