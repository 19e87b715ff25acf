"""Who the client is behind a TLS proxy (streams/forwarded.py): the headers believed from a trusted
proxy only, the nearest untrusted hop taken as the client; a bad setting named clearly. The admin
screen's use of it (Secure cookies, lockout by address) is in tests/test_admin_routes.py."""
from __future__ import annotations

import pytest

from streams import forwarded

PROXIES = forwarded.trusted("127.0.0.1, 10.0.0.0/8")


def test_the_headers_of_an_untrusted_peer_are_ignored():
    assert forwarded.client("198.51.100.1", "203.0.113.5", PROXIES) == "198.51.100.1"
    assert forwarded.client("198.51.100.1", "203.0.113.5", ()) == "198.51.100.1"


def test_from_a_trusted_proxy_the_client_is_the_nearest_untrusted_hop():
    assert forwarded.client("127.0.0.1", "203.0.113.5", PROXIES) == "203.0.113.5"
    # a client that writes its own X-Forwarded-For cannot pick its address: the proxies append theirs
    assert forwarded.client("127.0.0.1", "1.2.3.4, 203.0.113.5, 10.1.2.3", PROXIES) == "203.0.113.5"
    assert forwarded.client("127.0.0.1", "10.0.0.9", PROXIES) == "10.0.0.9"   # only proxies: the first
    assert forwarded.client("127.0.0.1", None, PROXIES) == "127.0.0.1"
    assert forwarded.client("127.0.0.1", "garbage, 203.0.113.7", PROXIES) == "203.0.113.7"


def test_a_setting_that_is_not_an_address_is_refused_with_its_name():
    with pytest.raises(ValueError, match="ANPI_TRUSTED_PROXIES: 'proxy.example' is not an IP address"):
        forwarded.trusted("127.0.0.1,proxy.example")
    assert forwarded.trusted("") == () and len(forwarded.trusted("::1, 192.168.0.0/16")) == 2
