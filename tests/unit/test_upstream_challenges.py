"""Reading an upstream's ``WWW-Authenticate`` (RFC 6750 §3, RFC 9110 §11.2): the parameters of
its Bearer challenge, the scopes a 403 ``insufficient_scope`` asks for (a step-up), and nothing
from hostile or malformed headers."""

from __future__ import annotations

import pytest

from bastion.core.challenge import MAX_CHALLENGE_CHARS, bearer_challenge, bearer_params, challenge_scopes
from bastion.core.errors import ConnectionRequired, UpstreamRejectedCredentials
from bastion.vault.discovery import covers

STEP_UP = 'Bearer error="insufficient_scope", scope="mcp:basic mcp:write", resource_metadata="http://h/x"'


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            [STEP_UP],
            {
                "error": "insufficient_scope",
                "scope": "mcp:basic mcp:write",
                "resource_metadata": "http://h/x",
            },
        ),
        (["Bearer"], {}),
        (["bearer scope=a"], {"scope": "a"}),  # the scheme is case-insensitive, a token value is fine
        (['Bearer realm="a\\"b", scope="x"'], {"realm": 'a"b', "scope": "x"}),  # quoted-pair
        (['Basic realm="r", Bearer scope="s"'], {"scope": "s"}),  # another scheme first
        (['Bearer scope="s", DPoP algs="ES256"'], {"scope": "s"}),  # another scheme after
        (['DPoP algs="ES256", error="x"'], {}),  # no Bearer challenge at all
        (['Bearer scope="first", scope="second"'], {"scope": "first"}),  # the first one wins
        (["Basic realm=x", 'Bearer error="invalid_token"'], {"error": "invalid_token"}),  # two headers
        (['Bearer SCOPE="a"'], {"scope": "a"}),  # parameter names are case-insensitive
        (['Bearer scope="unterminated'], {}),
        (["Bearer " + "x" * MAX_CHALLENGE_CHARS], {}),  # over-long: not read at all
        (["NotBearer scope=a"], {}),
    ],
)
def test_bearer_params(headers: list[str], expected: dict[str, str]) -> None:
    assert bearer_params(headers) == expected


def test_our_own_challenges_read_back() -> None:
    header = bearer_challenge(resource_metadata="https://b/x", scopes=("a", "b"), error="insufficient_scope")
    params = bearer_params([header])
    assert params["error"] == "insufficient_scope"
    assert challenge_scopes(params) == ("a", "b")


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("a b", ("a", "b")),
        ("  a   b  ", ("a", "b")),
        ("a a b", ("a", "b")),  # no repeats
        ('a "b', ("a",)),  # a quote is not a scope character
        ("a\\b c", ("c",)),  # a backslash is not one either
        ("", ()),
    ],
)
def test_challenge_scopes_keeps_valid_scope_tokens(scope: str, expected: tuple[str, ...]) -> None:
    assert challenge_scopes({"scope": scope}) == expected


@pytest.mark.parametrize(
    ("status", "headers", "wanted"),
    [
        (403, [STEP_UP], ("mcp:basic", "mcp:write")),
        (401, [STEP_UP], ()),  # a 401 is never a step-up, whatever it says
        (403, ['Bearer error="invalid_token", scope="a"'], ()),  # not insufficient_scope
        (403, [], ()),
        (403, ["garbage\x00\xff"], ()),
    ],
)
def test_a_rejection_carries_the_wanted_scopes_only_for_insufficient_scope(
    status: int, headers: list[str], wanted: tuple[str, ...]
) -> None:
    err = UpstreamRejectedCredentials.from_response("crm", status, headers)
    assert err.upstream_status == status
    assert err.wanted_scopes == wanted
    assert "resource_metadata" not in err.message
    assert "scope" not in err.message


def test_a_step_up_request_names_the_missing_permissions() -> None:
    err = ConnectionRequired(
        "crm",
        connection="crm",
        label="Acme",
        url="https://b/connect/crm?intent=x",
        elicitation_id="e",
        scopes=("w",),
    )
    assert err.reconnect
    assert "more permissions" in err.prompt
    assert "(w)" in err.prompt


@pytest.mark.parametrize(
    ("resource", "url", "expected"),
    [
        ("http://h:1", "http://h:1/mcp", True),
        ("http://h:1/", "http://h:1/mcp", True),
        ("http://h:1/mcp", "http://h:1/mcp", True),
        ("http://H:1/a", "http://h:1/a/b", True),
        ("http://h:1/mc", "http://h:1/mcp", False),  # not on a segment boundary
        ("http://h:1/mcp/a", "http://h:1/mcp", False),  # a child does not cover its parent
        ("https://h:1/", "http://h:1/mcp", False),  # another scheme
        ("http://h:2/", "http://h:1/mcp", False),  # another port
        ("https://evil.example.com/mcp", "http://h:1/mcp", False),
        ("http://h:1/?x=1", "http://h:1/mcp", False),
        (None, "http://h:1/mcp", False),
        (7, "http://h:1/mcp", False),
    ],
)
def test_covers(resource: object, url: str, expected: bool) -> None:
    assert covers(resource, url) is expected
