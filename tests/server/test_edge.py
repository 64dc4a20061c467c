"""An edge proxy in front of the region (Kamailio's usual place): a registration through it carries a Path
(RFC 3327), and calls for the player then go through the edge, with the Path as Route."""

from __future__ import annotations

import socket
from pathlib import Path

from process_kit import RegionProcess, cli, write_region
from server_kit import SocketUA
from test_restart import invite_through

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


def _login_behind_edge(ua: SocketUA, server: tuple[str, int], client_ip: str) -> int:
    """A login relayed by an edge (the UA's own socket plays the edge): the client's Via below the edge's."""
    client_via = f"SIP/2.0/UDP {client_ip}:5060;branch=z9hG4bK-{client_ip}-{ua.cseq};received={client_ip}"
    request = ua.register(600)
    request.headers.add("Via", client_via)
    ua.send(request, server)
    first = ua.final()
    if first.status != 401:
        return first.status
    again = ua.authorize(request, first)
    again.headers.add("Via", client_via)
    ua.send(again, server)
    return ua.final().status


def test_an_abuser_behind_a_trusted_edge_does_not_lock_out_the_others(tmp_path: Path) -> None:
    config = write_region(tmp_path)
    config.write_text(config.read_text().replace(
        'digest_algorithms = ["MD5", "SHA-256"]',
        'digest_algorithms = ["MD5", "SHA-256"]\ntrusted_proxies = ["127.0.0.1"]\nslow_after_failures = 1\n'
        'block_after_failures = 1\ndelay_step_s = 0'))
    users = ["bob", "u1", "u2", "u3", "u4", "u5"]
    (tmp_path / "users.csv").write_text("".join(f"{u},{u}-pw\n" for u in users))
    assert cli("user", "import", str(tmp_path / "users.csv"), "--config", str(config))[0] == 0
    server = RegionProcess(config)
    try:
        for user in users[1:]:  # guessing across accounts from one client: the address gets blocked
            mallory = SocketUA(user, "eu.gamesdk.test", "guess")
            try:
                assert _login_behind_edge(mallory, server.address, "198.51.100.66") == 403
            finally:
                mallory.close()
        code, out, _ = cli("ctl", "--config", str(config), "--json", "blocked")
        assert code == 0 and "addr:198.51.100.66" in out and "addr:127.0.0.1" not in out
        bob = SocketUA("bob", "eu.gamesdk.test", "bob-pw")
        try:
            assert _login_behind_edge(bob, server.address, "198.51.100.7") == 200
        finally:
            bob.close()
    finally:
        server.stop()
