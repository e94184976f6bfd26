"""Where the server itself may send a request: never into its own networks, unless allowed.

Rest-hook endpoints (fhir_server/notify) and `$import` file URLs (fhir_server/exchange/
imports) are URLs an outsider chose, fetched from inside the deployment; without this check
one could aim the server at the loopback interface, a private network or a cloud metadata
address (server-side request forgery). The networks refused come from each caller's table.
The host is checked on the addresses it resolves to at the time of the request, so a name
that later resolves inward (DNS rebinding) is refused then too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(raw: object, where: str) -> tuple[Network, ...]:
    """A table's CIDR list; a malformed entry stops start-up. `where` names the table key
    (e.g. "notifications.json: channel.denied_networks_in_production")."""
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ValueError(f"{where} must be a list of CIDR strings")
    try:
        return tuple(ipaddress.ip_network(x, strict=True) for x in raw)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def inside(addresses: Iterable[str], networks: tuple[Network, ...]) -> bool:
    for a in addresses:
        ip = ipaddress.ip_address(a.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip.version == n.version and ip in n for n in networks):
            return True
    return False


async def addresses_of(host: str) -> list[str] | None:
    """The host's addresses (an IP literal is its own); None when the name does not resolve."""
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    return [str(info[4][0]) for info in infos]


async def refused(
    url: str,
    networks: tuple[Network, ...],
    *,
    allowed: tuple[Network, ...] = (),
    unresolved: bool = False,
) -> bool:
    """True when the URL's host is, or resolves to, an address in `networks` and not in
    `allowed` (every address must be allowed: one inward address is enough to refuse).
    A name that does not resolve answers `unresolved`."""
    if not networks:
        return False
    addrs = await addresses_of(urlsplit(url).hostname or "")
    if addrs is None:
        return unresolved
    if allowed:
        addrs = [a for a in addrs if not inside([a], allowed)]
    return inside(addrs, networks)
