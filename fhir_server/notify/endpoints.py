"""Where a rest-hook may point: in production never into the server's own networks.

A Subscription's endpoint is a URL a patient or clinician chose, and the worker POSTs to
it from inside the deployment; without this, a subscriber could aim the worker at the
loopback interface, a private network or a cloud metadata address (server-side request
forgery). The check itself is shared with `$import` (fhir_server/netguard.py). The networks refused are a table (profiles/portal/notifications.json,
`channel.denied_networks_in_production`). The check runs when the Subscription is created
and again before each delivery, on the addresses the name resolves to then, so a name that
later resolves inward (DNS rebinding) is refused too. Development (loopback receivers in
tests, a developer's own machine) is not checked.
"""

from __future__ import annotations

import fhir_server.netguard as netguard
from fhir_server.netguard import Network

__all__ = ["Network", "parse_networks", "refused"]


def parse_networks(raw: object, where: str) -> tuple[Network, ...]:
    """The table's CIDR list; a malformed entry stops start-up."""
    return netguard.parse_networks(raw, f"notifications.json: {where}")


async def refused(url: str, networks: tuple[Network, ...]) -> bool:
    """True when the endpoint's host is, or resolves to, an address in `networks`. A name
    that does not resolve is not refused here (the delivery then fails and is retried)."""
    return await netguard.refused(url, networks)
