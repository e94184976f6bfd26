"""Where a rest-hook may point: in production never into the server's own networks.

A Subscription's endpoint is a URL a patient or clinician chose, and the worker POSTs to
it from inside the deployment; without this, a subscriber could aim the worker at the
loopback interface, a private network or a cloud metadata address (server-side request
forgery). The networks refused are a table (profiles/portal/notifications.json,
`channel.denied_networks_in_production`). The check runs when the Subscription is created
and again before each delivery, on the addresses the name resolves to then, so a name that
later resolves inward (DNS rebinding) is refused too. Development (loopback receivers in
tests, a developer's own machine) is not checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(raw: object, where: str) -> tuple[Network, ...]:
    """The table's CIDR list; a malformed entry stops start-up."""
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ValueError(f"notifications.json: {where} must be a list of CIDR strings")
    try:
        return tuple(ipaddress.ip_network(x, strict=True) for x in raw)
    except ValueError as exc:
        raise ValueError(f"notifications.json: {where}: {exc}") from None


def _inside(addresses: Iterable[str], networks: tuple[Network, ...]) -> bool:
    for a in addresses:
        ip = ipaddress.ip_address(a.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip.version == n.version and ip in n for n in networks):
            return True
    return False


async def refused(url: str, networks: tuple[Network, ...]) -> bool:
    """True when the endpoint's host is, or resolves to, an address in `networks`. A name
    that does not resolve is not refused here (the delivery then fails and is retried)."""
    if not networks:
        return False
    host = urlsplit(url).hostname or ""
    try:
        return _inside([str(ipaddress.ip_address(host))], networks)
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    return _inside([str(info[4][0]) for info in infos], networks)
