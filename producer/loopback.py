"""Whether a listen address is loopback, judged by the address itself: `127.evil.example` is a name, not 127/8."""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str) -> bool:
    """True for a loopback IP literal (127.0.0.0/8, ::1, their IPv4-mapped forms, `[::1]`) and the name
    `localhost` (RFC 6761: loopback whatever a resolver says); False for every other name and address."""
    name = host.strip().lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
