"""Rest-hook endpoints never reach the server's own networks in production
(fhir_server/notify/endpoints.py, profiles/portal/notifications.json)."""

from __future__ import annotations

import pytest

from fhir_server.notify.endpoints import parse_networks, refused
from fhir_server.notify.table import load_table

DENIED = load_table().channel.denied_networks


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://127.8.9.10:8443/hook",
        "https://localhost/hook",  # a name that resolves to loopback
        "https://[::1]/hook",
        "https://[::ffff:10.1.2.3]/hook",  # IPv4-mapped IPv6
        "https://169.254.169.254/latest/meta-data/",  # cloud metadata
        "https://10.0.0.5/hook",
        "https://172.20.1.1/hook",
        "https://192.168.1.20/hook",
        "https://100.64.3.4/hook",
        "https://[fd00::1]/hook",
        "https://[fe80::1]/hook",
        "https://0.0.0.0/hook",
    ],
)
async def test_inward_addresses_are_refused(url: str) -> None:
    assert await refused(url, DENIED), url


@pytest.mark.parametrize(
    "url",
    [
        "https://93.184.216.34/hook",
        "https://[2606:2800:220:1::]/hook",
        "https://172.32.0.1/hook",  # just outside 172.16.0.0/12
        "https://no-such-host.invalid/hook",  # unresolvable: delivery fails and retries
    ],
)
async def test_outward_or_unresolvable_addresses_pass(url: str) -> None:
    assert not await refused(url, DENIED), url


async def test_no_table_refuses_nothing() -> None:
    assert not await refused("https://127.0.0.1/hook", ())


@pytest.mark.parametrize("raw", ["10.0.0.0/8", ["10.0.0.1/8"], ["not-a-network"], [7]])
def test_a_malformed_network_list_stops_start_up(raw: object) -> None:
    with pytest.raises(ValueError, match="denied_networks_in_production"):
        parse_networks(raw, "channel.denied_networks_in_production")
