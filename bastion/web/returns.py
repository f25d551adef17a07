"""Where the browser goes after signing in, when it came from a page of Bastion's own (``next``).

Only two kinds of place are accepted, and only in one exact shape each, so ``next`` can never
send anyone off this origin (no open redirect: ``//evil.com``, ``/\\evil``, ``https://evil``,
encoded slashes, control characters and anything else fail the pattern):

- ``/connections`` (the "My connections" page);
- ``/connect/<connection>`` with at most ``?intent=<id>`` (a connect link from an agent).

The value travels in the sign-in form and in the identity provider's state (server-side), and
is checked again every time it is used.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import quote

CONNECTIONS_PAGE: Final = "/connections"
_NEXT: Final = re.compile(
    r"/connections|/connect/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(\?intent=[A-Za-z0-9_-]{1,128})?", re.ASCII
)


def safe_next(value: str | None) -> str | None:
    """``value`` if it is a place on this site a sign-in may return to, else None."""
    if not value or len(value) > 256 or not _NEXT.fullmatch(value):
        return None
    if value.split("?", 1)[0] == "/connect/callback":  # the provider's redirect, never a start
        return None
    return value


def login_url(next_path: str) -> str:
    """The sign-in page, returning to ``next_path`` (already checked) afterwards."""
    return "/login?next=" + quote(next_path, safe="/")


__all__ = ["CONNECTIONS_PAGE", "login_url", "safe_next"]
