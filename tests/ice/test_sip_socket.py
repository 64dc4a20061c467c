"""The player's SIP socket over UDP with ICE (RFC 5626 outbound): what it sends to its region, seen by a plain
UDP socket playing the region on loopback."""

from __future__ import annotations

import socket
import time

from gamesdk import ClientConfig, PollingClient
from gamesdk.sip.parser import parse_message_untrusted as parse_message


def _fake_region() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    return sock


def test_register_over_udp_with_ice_says_udp_in_its_via() -> None:
    region = _fake_region()
    client = PollingClient(ClientConfig(username="alice", password="pw", domain="eu.gamesdk.test",
                                        server=region.getsockname()[:2]), bind=("127.0.0.1", 0))
    try:
        client.login(time.monotonic())
        client.poll(time.monotonic())
        data, _ = region.recvfrom(65535)
        register = parse_message(data)
        assert ";ob>" in (register.headers.get("Contact") or "")  # outbound, as over TLS ...
        assert register.top_via.transport == "UDP", register.headers.get("Via")  # ... but sent over UDP
    finally:
        client.close()
        region.close()
