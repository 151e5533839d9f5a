"""The SSRF guard for every user-supplied URL the server calls: vet the addresses, then dial only those.

A URL passes when its scheme is allowed and *every* address its host resolves to is public. Numeric tricks
(`2852039166`, `0xa9fea9fe`, `0251.0376.0251.0376`) are read the way the C resolver reads them, and IPv6 forms
that carry an IPv4 address (mapped, 6to4, NAT64, Teredo, compatible) are judged by that address. The connection
then goes to a vetted address with no second lookup (so DNS rebinding cannot swap the target), while the Host
header, TLS SNI and certificate checks keep the original hostname (`PinnedTransport`).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..errors import WebhookUrlError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: `(host, port) -> addresses`; the system resolver by default, injectable for tests.
Resolver = Callable[[str, int], Sequence[str]]

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPAT = ipaddress.ip_network("::/96")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
# What inet_aton accepts: 1–4 parts, each decimal, 0x-hex or 0-octal. Anything of this shape is an address.
_NUMERIC_V4 = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?", re.IGNORECASE)


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver returns for `host` (TCP)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise WebhookUrlError(f"host {host!r} does not resolve: {exc.strerror}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class UrlPolicy:
    """Which URLs the server may call. The allow-list (hosts and CIDRs) is for development only."""

    https_only: bool = True
    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_entries(cls, entries: Iterable[str], *, https_only: bool = True) -> UrlPolicy:
        """A policy from allow-list entries: each a hostname or a CIDR (`127.0.0.1/32`, `fd00::/8`)."""
        hosts, networks = set(), []
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(https_only=https_only, allow_hosts=frozenset(hosts), allow_networks=tuple(networks))

    def allows(self, host: str, address: IPAddress) -> bool:
        """Whether the allow-list admits this host or address (private ones included)."""
        return host in self.allow_hosts or any(address in network for network in self.allow_networks)


@dataclass(frozen=True)
class Target:
    """A vetted URL: where to send the request (`addresses`) and the name to present (`host`)."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...] = field(default=())


def forbidden_reason(address: IPAddress) -> str | None:
    """Why the server must not call `address` (None when it is a public unicast address)."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        reason = forbidden_reason(embedded)
        return f"{reason} (inside the IPv6 address {address})" if reason else None
    checks = (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local (cloud metadata lives here)"),
        (address.version == 4 and address in _CGNAT, "carrier-grade NAT (100.64/10)"),
        (address.is_multicast, "multicast"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (not address.is_global, "not globally routable"),
    )
    return next((reason for hit, reason in checks if hit), None)


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if address.version != 6:
        return None
    assert isinstance(address, ipaddress.IPv6Address)
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in net for net in _NAT64) or (address in _IPV4_COMPAT and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def literal_address(host: str) -> IPAddress | None:
    """`host` read as an IP address the way resolvers read it (dotted, integer, hex and octal forms), or None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_V4.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host.rstrip(".")))
        except OSError:
            raise WebhookUrlError(f"host {host!r} looks numeric but is no valid IPv4 address") from None
    return None


def _literal_or_localhost(host: str) -> IPAddress | None:
    if host == "localhost" or host.endswith(".localhost"):
        return ipaddress.ip_address("127.0.0.1")  # RFC 6761: always loopback, whatever a resolver says
    return literal_address(host)


def _split(url: str) -> tuple[str, str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlError(f"not a valid URL: {exc}") from exc
    scheme, host = parts.scheme.lower(), (parts.hostname or "").rstrip(".")
    if scheme not in ("http", "https") or not host:
        raise WebhookUrlError("must be an http(s) URL with a host")
    return scheme, host, port or (443 if scheme == "https" else 80)


def _vet(scheme: str, host: str, addresses: Sequence[IPAddress], policy: UrlPolicy) -> None:
    if not addresses:
        raise WebhookUrlError(f"host {host!r} has no addresses")
    allowed = all(policy.allows(host, a) for a in addresses)
    if policy.https_only and scheme != "https" and not allowed:
        raise WebhookUrlError("must use https (plain http is allowed only for allow-listed development hosts)")
    for address in addresses:
        reason = None if policy.allows(host, address) else forbidden_reason(address)
        if reason:
            raise WebhookUrlError(f"host {host!r} resolves to {address}, which is {reason}")


def check_url(url: str, policy: UrlPolicy, resolver: Resolver = system_resolver) -> Target:
    """Vet `url` under `policy`; returns the `Target` to dial or raises `WebhookUrlError` saying why not."""
    scheme, host, port = _split(url)
    literal = _literal_or_localhost(host)
    names = [str(literal)] if literal is not None else list(resolver(host, port))
    try:
        addresses = [ipaddress.ip_address(name.split("%")[0]) for name in names]
    except ValueError as exc:
        raise WebhookUrlError(f"host {host!r} resolved to something that is no address: {exc}") from exc
    _vet(scheme, host, addresses, policy)
    return Target(url=url, scheme=scheme, host=host, port=port, addresses=tuple(str(a) for a in addresses))


def check_url_shape(url: str, policy: UrlPolicy) -> None:
    """The checks that need no DNS (scheme, literal and loopback names), for refusing a URL at submission.

    The full check, with resolution, runs again before every delivery: DNS may change in between.
    """
    scheme, host, _ = _split(url)
    literal = _literal_or_localhost(host)
    if literal is not None:
        _vet(scheme, host, [literal], policy)
    elif policy.https_only and scheme != "https" and host not in policy.allow_hosts:
        raise WebhookUrlError("must use https (plain http is allowed only for allow-listed development hosts)")
