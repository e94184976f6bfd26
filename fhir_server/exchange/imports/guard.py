"""Which file URLs an import may pull: the partner's registered prefixes, then no SSRF.

A URL must be absolute http(s) with no user info, start with one of the URLs the partner
client registered (`fhir-server clients add --import-url`), use a storage type the table
allows (https only in production), and its host must not be, or resolve to, an address in
the table's denied networks (fhir_server/netguard.py), bar loopback outside production.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import fhir_server.netguard as netguard
from fhir_server.exchange.imports.table import ImportTable


def registered(url: str, prefixes: list[str]) -> bool:
    """The URL lies under one of the registered prefixes (a prefix names a folder when it
    ends in "/", else one file or that folder)."""
    return any(url == p or url.startswith(p if p.endswith("/") else p + "/") for p in prefixes)


def shape_error(url: str, production: bool, table: ImportTable) -> str | None:
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return f"{url!r} is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an absolute http(s) URL"
    if parts.username or parts.password:
        return "a file URL may not carry credentials"
    if parts.scheme == "http" and production and table.https_only_in_production:
        return "file URLs must be https"
    return None


async def why_refused(table: ImportTable, url: str, production: bool) -> str | None:
    """None when the server may fetch the URL now; else why not (never which address)."""
    shape = shape_error(url, production, table)
    if shape is not None:
        return shape
    if await netguard.refused(
        url,
        table.denied_networks,
        allowed=table.allowed_networks(production),
        unresolved=False,
    ):
        return f"{url} points into a network the server does not fetch from"
    return None
