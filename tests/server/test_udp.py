"""Two regional servers from the example configs on real loopback UDP, with a socket test UA on the gamesdk SIP core."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_kit import ANSWER, EXAMPLES, OFFER, SocketUA

from gamesdk.sip.message import Request, Response
from gamesdk.sip.parser import parse_message_untrusted
from server.config import load_config
from server.io import EmbeddedServer


@dataclasses.dataclass
class Regions:
    eu: EmbeddedServer
    na: EmbeddedServer


@pytest.fixture
def regions(tmp_path: Path) -> Iterator[Regions]:
    servers = []
    for name, user, password in (("eu", "alice", "alice-pw"), ("na", "bob", "bob-pw")):
        config = dataclasses.replace(load_config(EXAMPLES / f"{name}.toml"), database=tmp_path / f"{name}.sqlite3")
        server = EmbeddedServer(config, port=0)
        server.add_user(user, password)
        if name == "na":
            server.add_user("carol", "carol-pw")
        server.start_in_thread()
        servers.append(server)
    eu, na = servers
    eu.set_peer("na.gamesdk.test", na.address)
    na.set_peer("eu.gamesdk.test", eu.address)
    yield Regions(eu, na)
    for server in servers:
        server.stop_thread()


@pytest.fixture
def players(regions: Regions) -> Iterator[tuple[SocketUA, SocketUA]]:
    alice = SocketUA("alice", "eu.gamesdk.test", "alice-pw")
    bob = SocketUA("bob", "na.gamesdk.test", "bob-pw")
    assert alice.login(regions.eu.address).status == 200
    assert bob.login(regions.na.address).status == 200
    yield alice, bob
    alice.close()
    bob.close()


def test_call_through_both_servers(regions: Regions, players: tuple[SocketUA, SocketUA]) -> None:
    alice, bob = players
    eu = regions.eu.address
    invite = alice.invite("sip:bob@na.gamesdk.test")
    alice.send(invite, eu)
    challenge = alice.final()
    assert challenge.status == 407
    alice.send(alice.ack_non2xx(invite, challenge), eu)
    invite = alice.authorize(invite, challenge)
    alice.send(invite, eu)
    trying = alice.recv()
    assert isinstance(trying, Response) and trying.status == 100

    arrived = bob.recv()
    assert isinstance(arrived, Request) and arrived.method == "INVITE"
    assert arrived.body == OFFER and "Record-Route" not in arrived.headers
    na = regions.na.address
    bob.send(bob.answer(arrived, 180), na)
    bob.send(bob.answer(arrived, 200, ANSWER), na)
    ringing = alice.recv()
    ok = alice.final()
    assert isinstance(ringing, Response) and ringing.status == 180
    assert ok.status == 200 and ok.body == ANSWER and "Record-Route" not in ok.headers
    # The policy reserved in both access networks (callee's server first): one token from each server.
    tokens = ok.headers.values("P-Media-Authorization")
    assert len(tokens) == 2 and all(t and all(c in "0123456789abcdefABCDEF" for c in t) for t in tokens), tokens

    # The SDK's ACK goes straight to bob's Contact: no server sees it.
    acks_before = [s.node.stats.by_method.get("ACK", 0) for s in (regions.eu, regions.na)]  # type: ignore[union-attr]
    alice.send(alice.ack_2xx(invite, ok), (bob.addr[0], bob.addr[1]))
    ack = bob.recv()
    assert isinstance(ack, Request) and ack.method == "ACK"
    time.sleep(0.05)
    assert [s.node.stats.by_method.get("ACK", 0) for s in (regions.eu, regions.na)] == acks_before  # type: ignore[union-attr]


def test_failure_cases(regions: Regions, players: tuple[SocketUA, SocketUA]) -> None:
    alice, _ = players
    eu = regions.eu.address
    mallory = SocketUA("alice", "eu.gamesdk.test", "wrong-password")
    try:
        assert mallory.login(eu).status == 403
    finally:
        mallory.close()

    def call(target: str, **kw: object) -> int:
        invite = alice.invite(target, **kw)  # type: ignore[arg-type]
        alice.send(invite, eu)
        first = alice.final()
        if first.status != 407:
            return first.status
        alice.send(alice.ack_non2xx(invite, first), eu)
        alice.send(alice.authorize(invite, first), eu)
        final = alice.final()
        alice.send(alice.ack_non2xx(invite, final), eu)
        return final.status

    assert call("sip:nobody@na.gamesdk.test") == 404
    assert call("sip:carol@na.gamesdk.test") == 480
    assert call("sip:bob@na.gamesdk.test", max_forwards=0) == 483

    good = alice.invite("sip:bob@na.gamesdk.test").to_bytes()
    alice.send(good.replace(b"Max-Forwards: 70", b"Max-Forwards: lots"), eu)
    bad = alice.final()
    assert bad.status == 400 and "Max-Forwards" in bad.reason
    huge = alice.invite("sip:bob@na.gamesdk.test", body=b"a=gsdk-pad:" + b"x" * 20_000 + b"\r\n")
    alice.send(huge, eu)
    assert alice.final().status == 513
    alice.send(b"hello, are you a SIP server?\r\n\r\n", eu)
    assert alice.silent()


def test_peers_measure_round_trip_time(regions: Regions) -> None:
    deadline = time.monotonic() + 5
    rtt = None
    while time.monotonic() < deadline and rtt is None:
        rtt = regions.eu.node.federation.rtt_ms("na.gamesdk.test")  # type: ignore[union-attr]
        time.sleep(0.05)
    assert rtt is not None and 0.0 <= rtt < 1000.0


def test_unknown_domain_and_options_to_the_servers_address(regions: Regions,
                                                           players: tuple[SocketUA, SocketUA]) -> None:
    """An INVITE for a domain no region serves gets 604 with a reason after authentication; OPTIONS to the
    server's own IP:port (how sipsak and SIPp ping a server) gets 200 with Allow and Accept, unchallenged."""
    alice, _ = players
    eu = regions.eu.address
    invite = alice.invite("sip:someone@elsewhere.example.test")
    alice.send(invite, eu)
    challenge = alice.final()
    assert challenge.status == 407
    alice.send(alice.ack_non2xx(invite, challenge), eu)
    invite = alice.authorize(invite, challenge)
    alice.send(invite, eu)
    final = alice.final()
    assert final.status == 604 and "unknown domain" in final.reason
    alice.send(alice.ack_non2xx(invite, final), eu)

    uri = f"sip:{eu[0]}:{eu[1]}"
    options = Request("OPTIONS", uri, alice.invite(uri).headers)
    options.headers.set("CSeq", "5 OPTIONS")
    options.headers.remove("Content-Type")
    options.body = b""
    alice.send(options, eu)
    answer = alice.final()
    assert answer.status == 200 and answer.cseq.method == "OPTIONS"
    assert "INVITE" in (answer.headers.get("Allow") or "")
    assert "application/sdp" in (answer.headers.get("Accept") or "")


def test_an_in_dialog_request_and_its_answer_are_relayed_byte_for_byte(regions: Regions,
                                                                      players: tuple[SocketUA, SocketUA]) -> None:
    """A BYE sent to the caller's server (as SIPp sends it) and its 200 are forwarded by splicing: every byte
    the proxy does not edit (here a header with odd spacing the parser would have normalised) arrives as sent."""
    alice, bob = players
    eu = regions.eu.address
    invite = alice.invite("sip:bob@na.gamesdk.test")
    alice.send(invite, eu)
    challenge = alice.final()
    alice.send(alice.ack_non2xx(invite, challenge), eu)
    invite = alice.authorize(invite, challenge)
    alice.send(invite, eu)
    arrived = bob.recv()
    while not (isinstance(arrived, Request) and arrived.method == "INVITE"):
        arrived = bob.recv()
    bob.send(bob.answer(arrived, 200, ANSWER), regions.na.address)
    ok = alice.final()
    assert ok.status == 200

    odd = b"X-Note:   kept   as sent  "
    bye = alice.bye(invite, ok).to_bytes().replace(b"\r\nContent-Length", b"\r\n" + odd + b"\r\nContent-Length")
    alice.send(bye, eu)
    bob.sock.settimeout(3.0)
    relayed, _ = bob.sock.recvfrom(65535)
    request = parse_message_untrusted(relayed)
    assert isinstance(request, Request) and request.method == "BYE"
    assert b"\r\n" + odd + b"\r\n" in relayed
    assert request.max_forwards == 69 and len(request.vias) == 1  # eu's Via alone (alice's stays at eu)
    answer = bob.answer(request, 200).to_bytes().replace(b"\r\nContent-Length", b"\r\n" + odd + b"\r\nContent-Length")
    bob.send(answer, eu)
    alice.sock.settimeout(3.0)
    back, _ = alice.sock.recvfrom(65535)
    response = parse_message_untrusted(back)
    assert isinstance(response, Response) and response.status == 200 and response.cseq.method == "BYE"
    assert b"\r\n" + odd + b"\r\n" in back and len(response.vias) == 1
