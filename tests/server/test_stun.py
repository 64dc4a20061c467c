"""The SIP UDP port of a regional server answers STUN Binding requests (RFC 8489), demultiplexed by first byte.

Driven over real loopback UDP: coturn's own STUN client (``turnutils_stunclient``) and raw requests built with the
STUN codec; SIP on the same port keeps working.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_kit import EXAMPLES

from gamesdk.ice import stun
from server.config import load_config
from server.io import EmbeddedServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    config = dataclasses.replace(load_config(EXAMPLES / "eu.toml"), database=tmp_path / "eu.sqlite3")
    embedded = EmbeddedServer(config, port=0, policy=False)
    embedded.start_in_thread()
    yield embedded
    embedded.stop_thread()


def _exchange(sock: socket.socket, data: bytes, dest: tuple[str, int], timeout_s: float = 3.0) -> bytes:
    sock.settimeout(timeout_s)
    sock.sendto(data, dest)
    reply, source = sock.recvfrom(2048)
    assert source == dest
    return reply


def test_binding_request_gets_the_reflexive_address(server: EmbeddedServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, transaction_id=os.urandom(12))
        request.add_fingerprint()
        reply = stun.parse_untrusted(_exchange(sock, bytes(request), server.address))
        assert reply is not None
        assert reply.message_class == stun.Class.RESPONSE
        assert reply.transaction_id == request.transaction_id
        assert reply.attributes["XOR-MAPPED-ADDRESS"] == sock.getsockname()
        assert "FINGERPRINT" in reply.attributes  # checked by the parser

        # SIP on the same socket and port still gets SIP answers.
        options = (f"OPTIONS sip:eu.gamesdk.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{sock.getsockname()[1]}"
                   ";branch=z9hG4bKstun1\r\nFrom: <sip:probe@eu.gamesdk.test>;tag=1\r\nTo: <sip:eu.gamesdk.test>\r\n"
                   "Call-ID: stun-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
        assert _exchange(sock, options, server.address).startswith(b"SIP/2.0 200")
    assert server.node is not None and server.node.stats.stun_answered == 1


def test_unknown_required_attribute_gets_420_and_garbage_nothing(server: EmbeddedServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        request = bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST, transaction_id=os.urandom(12)))
        # append a comprehension-required attribute 0x7777 of 4 bytes and fix the length
        body = request[20:] + b"\x77\x77\x00\x04abcd"
        tampered = request[:2] + len(body).to_bytes(2, "big") + request[4:20] + body
        reply = stun.parse_untrusted(_exchange(sock, tampered, server.address))
        assert reply is not None and reply.message_class == stun.Class.ERROR and reply.error_code == 420

        indication = stun.Message(stun.Method.BINDING, stun.Class.INDICATION, transaction_id=os.urandom(12))
        for junk in (bytes(indication), b"\x00\x01\x00\x08" + b"\x21\x12\xa4\x42" + b"x" * 12, b"\x01" * 40):
            sock.sendto(junk, server.address)
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recvfrom(2048)
    assert server.node is not None and server.node.stats.stun_dropped == 2
    assert server.node.stats.malformed == 1  # the one that is not even STUN


def test_coturn_stun_client_learns_its_address(server: EmbeddedServer) -> None:
    client = shutil.which("turnutils_stunclient")
    if client is None:
        pytest.skip("needs coturn's turnutils_stunclient (Debian package coturn)")
    host, port = server.address
    done = subprocess.run([client, "-p", str(port), "-L", "127.0.0.1", host], capture_output=True, text=True,
                          timeout=20, check=False)
    assert done.returncode == 0, done.stderr
    assert "UDP reflexive addr: 127.0.0.1:" in done.stdout, done.stdout
