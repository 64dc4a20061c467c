"""SIP over TLS on the regional server (RFC 3261 sections 18.3 and 26, RFC 5626 keep-alives): framing on a
real TLS connection, bounded connections, idle timeout, oversize input, and the transports players may use."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from tls_kit import TlsUA, player_context, tls_region

from gamesdk.sip.message import Response
from gamesdk.sip.parser import parse_message_untrusted
from server.io import EmbeddedServer


def start(tmp_path: Path, **tls: object) -> EmbeddedServer:
    server = EmbeddedServer(tls_region("eu", tmp_path, **tls), port=0)
    server.add_user("alice", "alice-pw")
    server.start_in_thread()
    return server


@pytest.fixture
def eu(tmp_path: Path) -> Iterator[EmbeddedServer]:
    server = start(tmp_path)
    yield server
    server.stop_thread()


def ua(server: EmbeddedServer, tmp_path: Path, user: str = "alice") -> TlsUA:
    assert server.tls_address is not None
    return TlsUA(user, "eu.gamesdk.test", f"{user}-pw", server.tls_address, player_context(tmp_path))


def test_login_over_tls_with_sha256(eu: EmbeddedServer, tmp_path: Path) -> None:
    alice = ua(eu, tmp_path)
    try:
        request = alice.register(600)
        alice.send(request)
        challenge = alice.final()
        assert challenge.status == 401
        assert "SHA-256" in challenge.headers.get_all("WWW-Authenticate")[0]
        answer = alice.authorize(request, challenge)
        assert "algorithm=SHA-256" in (answer.headers.get("Authorization") or "")
        alice.send(answer)
        ok = alice.final()
        assert ok.status == 200 and "Require" not in ok.headers  # no reg-id: plain registration
        # RFC 5626: a REGISTER with +sip.instance and reg-id is bound to this flow, and the 200 says so
        contact = f'<sip:alice@{alice.addr[0]}:{alice.addr[1]};ob>;+sip.instance="<urn:uuid:00000000-0000-4000-8000-000000000001>";reg-id=1'
        again = alice.register(600, contact=contact)
        again.headers.add("Supported", "outbound")
        alice.send(again)
        challenge = alice.final()
        alice.send(alice.authorize(again, challenge) if challenge.status == 401 else again)
        ok = alice.final() if challenge.status == 401 else challenge
        assert ok.status == 200 and ok.headers.get("Require") == "outbound"
    finally:
        alice.close()


def test_framing_pipelined_split_and_keepalive(eu: EmbeddedServer, tmp_path: Path) -> None:
    alice = ua(eu, tmp_path)
    try:
        one, two = alice.register(600).to_bytes(), alice.register(600).to_bytes()
        # two messages in one write, then one cut in three pieces, with CRLFCRLF pings between them
        alice.send(one + b"\r\n\r\n" + two)
        statuses = [alice.final().status, alice.final().status]
        assert statuses == [401, 401]
        three = alice.register(600).to_bytes()
        for piece in (three[:10], three[10:200], three[200:]):
            alice.send(piece)
        assert alice.final().status == 401
        alice.send(b"\r\n\r\n")
        pong = alice.recv_bytes()
        assert pong.startswith(b"\r\n")  # RFC 5626 section 3.5.1: CRLFCRLF ping, CRLF pong
    finally:
        alice.close()


def test_oversize_and_unframeable_input_close_the_connection(eu: EmbeddedServer, tmp_path: Path) -> None:
    alice = ua(eu, tmp_path)
    try:
        alice.send(b"REGISTER sip:eu.gamesdk.test SIP/2.0\r\nX-Pad: " + b"x" * 20_000)
        assert alice.closed_by_server()
    finally:
        alice.close()
    bob = ua(eu, tmp_path)
    try:
        request = bob.register(600).to_bytes().replace(b"Content-Length: 0\r\n", b"")
        bob.send(request)
        assert bob.closed_by_server()
    finally:
        bob.close()
    # the server still serves
    carol = ua(eu, tmp_path)
    try:
        carol.send(carol.register(600))
        assert carol.final().status == 401
    finally:
        carol.close()
    assert eu.protocol is not None and eu.protocol.streams is not None
    assert eu.protocol.streams.stats["framing_errors"] == 2


def test_connection_cap_and_idle_timeout(tmp_path: Path) -> None:
    server = start(tmp_path, max_connections=2, idle_timeout_s=1.0)
    players: list[TlsUA] = []
    try:
        players = [ua(server, tmp_path) for _ in range(2)]
        for p in players:
            p.send(p.register(600))
            assert p.final().status == 401
        third = None
        try:  # the handshake itself may fail, or the connection close right after it
            third = ua(server, tmp_path)
            third.send(third.register(600))
            refused = third.closed_by_server(5.0)
        except (ConnectionError, ssl.SSLError, OSError):
            refused = True
        assert refused
        if third is not None:
            third.close()
        # the idle ones are closed by the server after idle_timeout_s
        assert all(p.closed_by_server(10.0) for p in players)
        assert server.protocol is not None and server.protocol.streams is not None
        assert server.protocol.streams.stats["refused_full"] >= 1
        assert server.protocol.streams.stats["idle_closed"] == 2
    finally:
        for p in players:
            p.close()
        server.stop_thread()


def test_untrusted_client_certificate_fails_the_handshake_and_plain_tcp_is_refused(eu: EmbeddedServer,
                                                                                  tmp_path: Path) -> None:
    from server.certs import make_test_pki

    other = tmp_path / "other"
    make_test_pki(other, ("na.gamesdk.test",))
    context = player_context(tmp_path)
    context.load_cert_chain(other / "na.gamesdk.test.crt", other / "na.gamesdk.test.key")
    assert eu.tls_address is not None
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        sock = context.wrap_socket(socket.create_connection(eu.tls_address, timeout=5),
                                   server_hostname="eu.gamesdk.test")
        sock.settimeout(5)
        sock.sendall(b"\r\n\r\n")
        if not sock.recv(10):  # TLS 1.3: the server's refusal arrives after the client's handshake ends
            raise ConnectionError("closed")
    plain = socket.create_connection(eu.tls_address, timeout=5)
    try:
        plain.sendall(b"REGISTER sip:eu.gamesdk.test SIP/2.0\r\nContent-Length: 0\r\n\r\n")
        plain.settimeout(5)
        try:
            data = plain.recv(100)
        except (ConnectionError, TimeoutError):
            data = b""
        assert not data.startswith(b"SIP/2.0")
    finally:
        plain.close()


def test_players_over_udp_refused_when_the_region_says_tls_only(tmp_path: Path) -> None:
    server = start(tmp_path, player_transports=("tls",))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        alice = ua(server, tmp_path)
        request = alice.register(600)
        udp.sendto(request.to_bytes().replace(b"SIP/2.0/TLS", b"SIP/2.0/UDP"), server.address)
        udp.settimeout(3)
        answer = parse_message_untrusted(udp.recv(65535))
        assert isinstance(answer, Response) and answer.status == 403 and "TLS" in answer.reason
        assert alice.login().status == 200  # the same player over TLS is served
        alice.close()
    finally:
        udp.close()
        server.stop_thread()
