"""Outbound fetches of untrusted URLs (CIMD documents, JWKS, metadata): SSRF rules, size and time caps.

``bastion.net.fetch.SafeFetcher`` is the only way Bastion fetches a URL chosen by someone else.
"""
