"""PKCE (RFC 7636, S256 only) and resource indicators (RFC 8707): exact errors for bad input."""

from __future__ import annotations

import pytest

from bastion.oauth import rfc7636, rfc8707
from bastion.oauth.errors import InvalidGrant, InvalidRequest, InvalidTarget

VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636 Appendix B
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_rfc7636_appendix_b_vector() -> None:
    assert rfc7636.s256(VERIFIER) == CHALLENGE
    assert rfc7636.check_challenge(CHALLENGE, "S256") == CHALLENGE
    rfc7636.verify(VERIFIER, CHALLENGE)


@pytest.mark.parametrize(
    ("challenge", "method"),
    [
        (None, "S256"),
        ("", "S256"),
        (CHALLENGE, "plain"),
        (CHALLENGE, None),
        ("short", "S256"),
        (CHALLENGE + "=", "S256"),
    ],
)
def test_bad_challenges(challenge: str | None, method: str | None) -> None:
    with pytest.raises(InvalidRequest):
        rfc7636.check_challenge(challenge, method)


@pytest.mark.parametrize("verifier", [None, "", "a" * 42, "a" * 129, VERIFIER[:-1] + "!", VERIFIER[::-1]])
def test_bad_verifiers(verifier: str | None) -> None:
    with pytest.raises(InvalidGrant):
        rfc7636.verify(verifier, CHALLENGE)


KNOWN = {"https://gw.example.com/mcp", "https://gw.example.com/mcp/github"}


def test_resource_must_be_one_of_ours_exactly() -> None:
    assert (
        rfc8707.requested_resource(["https://gw.example.com/mcp/github"], KNOWN)
        == "https://gw.example.com/mcp/github"
    )
    for bad in (
        [],
        ["https://gw.example.com/mcp/github/"],
        ["https://gw.example.com/mcp/other"],
        ["https://gw.example.com/mcp#x"],
        ["/mcp/github"],
        ["https://gw.example.com/mcp", "https://gw.example.com/mcp/github"],
    ):
        with pytest.raises(InvalidTarget):
            rfc8707.requested_resource(bad, KNOWN)


def test_token_request_resource_must_match_the_code() -> None:
    rfc8707.same_resource("https://gw.example.com/mcp", [])
    rfc8707.same_resource("https://gw.example.com/mcp", ["https://gw.example.com/mcp"])
    with pytest.raises(InvalidTarget):
        rfc8707.same_resource("https://gw.example.com/mcp", ["https://gw.example.com/mcp/github"])


def test_repeated_parameters_are_refused() -> None:
    assert rfc8707.require_single(["x"], "state") == "x"
    assert rfc8707.require_single([], "state") is None
    with pytest.raises(InvalidRequest):
        rfc8707.require_single(["a", "b"], "state")
