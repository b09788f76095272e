"""A shared LINE link's clicker mark (`visitor_network`): what a stranger can and cannot vary."""

from __future__ import annotations

from typing import Any

import pytest
from cems.engagement.engage import visitor_network


def test_an_ipv4_address_is_its_own_mark() -> None:
    assert visitor_network("198.51.100.7") == "198.51.100.7"
    assert visitor_network("198.51.100.7") != visitor_network("198.51.100.8")


def test_one_ipv6_host_rotating_its_privacy_addresses_is_one_clicker() -> None:
    one = visitor_network("2001:db8:1:2:a::1")
    assert one == visitor_network("2001:db8:1:2:ffff:ffff:ffff:fffe") == "2001:db8:1:2::/64"
    assert one != visitor_network("2001:db8:1:3::1")


@pytest.mark.parametrize("address", [None, "", "not-an-ip", "1.2.3.4.5", "::g", 12, "x" * 10_000])
def test_anything_else_gives_no_mark(address: Any) -> None:
    assert visitor_network(address) is None
