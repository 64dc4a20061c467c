"""Regions over mutual TLS: a peer is a certificate, not a source address.

- A call crosses two regions whose federation runs over TLS, each side authenticating the other's certificate.
- A UDP datagram from the very address a TLS peer is configured at is an ordinary unauthenticated request: an
  INVITE gets 407, it is not relayed to the player.
- A "peer" whose certificate comes from an untrusted CA is refused at the handshake; one with a trusted
  certificate for another name is connected but not taken for the peer (407).
"""

from __future__ import annotations

import dataclasses
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_kit import ANSWER
from tls_kit import TlsUA, player_context, tls_region

from gamesdk.sip.message import Request, Response
from gamesdk.sip.parser import parse_message_untrusted
from server.certs import CertFiles, make_region_certificate, make_test_pki
from server.config import ListenAddress
from server.io import EmbeddedServer


@dataclasses.dataclass
class Pair:
    eu: EmbeddedServer
    na: EmbeddedServer


def tls_peered(name: str, tmp: Path) -> EmbeddedServer:
    config = tls_region(name, tmp)
    peers = tuple(dataclasses.replace(p, address=ListenAddress("tls", "127.0.0.1", 0)) for p in config.peers)
    server = EmbeddedServer(dataclasses.replace(config, peers=peers), port=0)
    return server


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    eu, na = tls_peered("eu", tmp_path), tls_peered("na", tmp_path)
    eu.add_user("alice", "alice-pw")
    na.add_user("bob", "bob-pw")
    eu.start_in_thread()
    na.start_in_thread()
    assert eu.tls_address is not None and na.tls_address is not None
    eu.set_peer("na.gamesdk.test", na.tls_address)
    na.set_peer("eu.gamesdk.test", eu.tls_address)
    yield Pair(eu, na)
    eu.stop_thread()
    na.stop_thread()


def login(server: EmbeddedServer, tmp: Path, user: str, domain: str) -> TlsUA:
    assert server.tls_address is not None
    ua = TlsUA(user, domain, f"{user}-pw", server.tls_address, player_context(tmp))
    assert ua.login().status == 200
    return ua


def test_call_across_regions_over_mutual_tls(pair: Pair, tmp_path: Path) -> None:
    alice = login(pair.eu, tmp_path, "alice", "eu.gamesdk.test")
    bob = login(pair.na, tmp_path, "bob", "na.gamesdk.test")
    try:
        invite = alice.invite("sip:bob@na.gamesdk.test")
        alice.send(invite)
        challenge = alice.final()
        assert challenge.status == 407
        alice.send(alice.ack_non2xx(invite, challenge))
        invite = alice.authorize(invite, challenge)
        alice.send(invite)
        arrived = bob.recv(10)  # the first one waits for eu's TLS connection to na
        while not isinstance(arrived, Request):
            arrived = bob.recv(10)
        assert arrived.method == "INVITE"
        # na took it from a flow that authenticated as eu's certificate
        streams = pair.na.protocol.streams  # type: ignore[union-attr]
        assert streams is not None
        peers = {streams.peer_of(a).domain for a in streams.flows if streams.peer_of(a) is not None}  # type: ignore[union-attr]
        assert "eu.gamesdk.test" in peers
        bob.send(bob.answer(arrived, 200, ANSWER))
        ok = alice.final(10)
        assert ok.status == 200 and ok.body == ANSWER
    finally:
        alice.close()
        bob.close()


def test_forged_udp_datagram_from_a_peers_address_is_challenged(pair: Pair, tmp_path: Path) -> None:
    bob = login(pair.na, tmp_path, "bob", "na.gamesdk.test")
    assert pair.eu.tls_address is not None
    # the same IP and port eu's TLS listener has: exactly the address na has for its peer (UDP and TCP ports differ)
    forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    forger.bind(pair.eu.tls_address)
    try:
        addr = forger.getsockname()
        invite = bob.invite("sip:bob@na.gamesdk.test").to_bytes()
        invite = invite.replace(b"sip:bob@na.gamesdk.test>;tag", b"sip:alice@eu.gamesdk.test>;tag", 1)
        invite = invite.replace(f"SIP/2.0/TLS {bob.addr[0]}:{bob.addr[1]}".encode(),
                                f"SIP/2.0/UDP {addr[0]}:{addr[1]}".encode())
        forger.sendto(invite, pair.na.address)
        forger.settimeout(3)
        answer = parse_message_untrusted(forger.recv(65535))
        while isinstance(answer, Response) and answer.status < 200:
            answer = parse_message_untrusted(forger.recv(65535))
        assert isinstance(answer, Response) and answer.status == 407
        bob.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            bob.recv(0.3)  # nothing was relayed to bob
    finally:
        forger.close()
        bob.close()


def _raw_peer(server: EmbeddedServer, files: CertFiles, ca: Path) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(files.certificate, files.key)
    assert server.tls_address is not None
    sock = context.wrap_socket(socket.create_connection(server.tls_address, timeout=5),
                               server_hostname="na.gamesdk.test")
    sock.settimeout(5)
    return sock


def test_peer_with_untrusted_certificate_is_refused(pair: Pair, tmp_path: Path) -> None:
    other = tmp_path / "other"
    files = make_test_pki(other, ("eu.gamesdk.test",))["eu.gamesdk.test"]
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        sock = _raw_peer(pair.na, files, tmp_path / "pki" / "ca.crt")
        sock.sendall(b"\r\n\r\n")
        if not sock.recv(10):  # TLS 1.3: the refusal arrives after the client finished its side
            raise ConnectionError("closed")


def test_peer_certificate_for_another_name_is_not_the_peer(pair: Pair, tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    mallory = make_region_certificate(CertFiles(pki / "ca.crt", pki / "ca.key"), tmp_path / "mallory",
                                      "mallory.gamesdk.test")
    bob = login(pair.na, tmp_path, "bob", "na.gamesdk.test")
    sock = _raw_peer(pair.na, mallory, pki / "ca.crt")
    try:
        addr = sock.getsockname()
        invite = bob.invite("sip:bob@na.gamesdk.test").to_bytes()
        invite = invite.replace(b"sip:bob@na.gamesdk.test>;tag", b"sip:alice@eu.gamesdk.test>;tag", 1)
        invite = invite.replace(f"{bob.addr[0]}:{bob.addr[1]}".encode(), f"{addr[0]}:{addr[1]}".encode())
        sock.sendall(invite)
        data = b""
        while b"SIP/2.0 407" not in data and b"SIP/2.0 2" not in data and len(data) < 65536:
            chunk = sock.recv(65535)
            if not chunk:
                break
            data += chunk
        assert b"SIP/2.0 407" in data
        with pytest.raises(TimeoutError):
            bob.recv(0.3)
    finally:
        sock.close()
        bob.close()
