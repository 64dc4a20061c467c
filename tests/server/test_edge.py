"""An edge proxy in front of the region (Kamailio's usual place): a registration through it carries a Path
(RFC 3327), and calls for the player then go through the edge, with the Path as Route."""

from __future__ import annotations

import socket
from pathlib import Path

from process_kit import RegionProcess, cli, write_region
from test_restart import invite_through
from test_udp import SocketUA

from gamesdk.sip.message import Request
from gamesdk.sip.parser import parse_message_untrusted


def test_calls_to_a_player_registered_through_an_edge_follow_its_path(tmp_path: Path) -> None:
    config = write_region(tmp_path)
    for user in ("alice", "bob"):
        assert cli("user", "add", user, "--password", f"{user}-pw", "--config", str(config))[0] == 0
    server = RegionProcess(config)
    # The edge forwards alice's REGISTER from its own socket, adding a Path to itself.
    edge = SocketUA("alice", "eu.gamesdk.test", "alice-pw")
    player = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    player.bind(("127.0.0.1", 0))
    bob = SocketUA("bob", "eu.gamesdk.test", "bob-pw")
    path = f"<sip:127.0.0.1:{edge.addr[1]};lr>"
    try:
        contact = f"<sip:alice@127.0.0.1:{player.getsockname()[1]}>"
        request = edge.register(600, contact=contact)
        request.headers.add("Path", path)
        request.headers.add("Supported", "path")
        edge.send(request, server.address)
        challenge = edge.final()
        assert challenge.status == 401
        again = edge.authorize(request, challenge)
        edge.send(again, server.address)
        ok = edge.final()
        assert ok.status == 200 and ok.headers.get("Path") == path  # RFC 3327 section 5.3

        assert bob.login(server.address).status == 200
        invite_through(bob, "sip:alice@eu.gamesdk.test", server.address)
        for _ in range(5):
            arrived = edge.recv()  # the INVITE reaches the edge, not the player's contact
            if isinstance(arrived, Request):
                break
        assert isinstance(arrived, Request) and arrived.method == "INVITE"
        assert arrived.headers.get_all("Route") == [path]
        assert arrived.uri == f"sip:alice@127.0.0.1:{player.getsockname()[1]}"
        player.settimeout(0.3)
        try:
            data = player.recv(65535)
        except TimeoutError:
            data = b""
        assert not data or not isinstance(parse_message_untrusted(data), Request)
    finally:
        player.close()
        edge.close()
        bob.close()
        server.stop()


def test_require_gruu_is_refused_as_unsupported(tmp_path: Path) -> None:
    config = write_region(tmp_path)
    assert cli("user", "add", "alice", "--password", "alice-pw", "--config", str(config))[0] == 0
    server = RegionProcess(config)
    alice = SocketUA("alice", "eu.gamesdk.test", "alice-pw")
    try:
        request = alice.register(600)
        request.headers.add("Require", "gruu")
        alice.send(request, server.address)
        answer = alice.final()
        assert answer.status == 420 and answer.headers.get("Unsupported") == "gruu"
    finally:
        alice.close()
        server.stop()
