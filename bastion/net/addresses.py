"""Which IP addresses an outbound fetch may reach.

RFC 6890 (special-purpose address registries) and the SSRF sections of
draft-ietf-oauth-client-id-metadata-document ("the authorization server MUST NOT fetch
URLs that resolve to special-use IPs") and of the OAuth 2.0 Security BCP (RFC 9700 §4.15).

An address is *public* only when ``ipaddress`` calls it global AND it falls in none of the
explicit ranges below. The explicit list exists because ``is_global`` has changed between
Python patch releases and says nothing about addresses embedded in IPv6 transition formats
(IPv4-mapped, NAT64, 6to4, Teredo), which a resolver can hand back to reach an internal IPv4
host.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_EXTRA_FORBIDDEN: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",  # RFC 1918
        "100.64.0.0/10",  # CGNAT, RFC 6598
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local (cloud metadata lives at 169.254.169.254)
        "172.16.0.0/12",  # RFC 1918
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",  # RFC 1918
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, includes 255.255.255.255
        "::/128",  # unspecified
        "::1/128",  # loopback
        "64:ff9b:1::/48",  # local-use NAT64, RFC 8215
        "100::/64",  # discard-only
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local (ULA)
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated, still routable inside some networks)
        "ff00::/8",  # multicast
    )
)

_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 transition format carries (mapped, NAT64, 6to4, Teredo), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address
    return None


def is_forbidden(address: IPAddress) -> bool:
    """True for any special-use address: private, loopback, link-local, multicast, reserved,
    unspecified, CGNAT, site-local, ULA, documentation, or an IPv4 one of those wrapped in IPv6."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None and is_forbidden(inner):
            return True
        if address.ipv4_mapped is not None:
            return False  # a mapped public IPv4 address is that public address
    if (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    ):
        return True
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return True
    return any(address in network for network in _EXTRA_FORBIDDEN if network.version == address.version)


def in_networks(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    """True when ``address`` is inside one of ``networks``. Deliberately literal: an IPv4
    entry does not match the IPv4-mapped IPv6 form of the same address."""
    return any(address in network for network in networks if network.version == address.version)
