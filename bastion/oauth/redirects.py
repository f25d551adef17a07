"""Redirect URI rules (RFC 6749 §3.1.2, RFC 8252 §7.3, OAuth 2.1 §4.1.3).

The pure functions live in :mod:`bastion.core.redirects` so that the configuration layer
(below ``bastion.oauth``) can validate pre-registered clients with the very same rules;
this module re-exports them for the OAuth code.
"""

from __future__ import annotations

from bastion.core.redirects import (
    LOOPBACK_REDIRECT,
    is_loopback,
    redirect_uri_matches,
    redirect_uri_problem,
)

__all__ = ["LOOPBACK_REDIRECT", "is_loopback", "redirect_uri_matches", "redirect_uri_problem"]
