"""Random mutations: thousands of damaged SIP datagrams at a running server, which must then still work.

The invariant (h11's fuzz rule, applied to a whole server): every datagram is answered with a well-formed
response or dropped, no internal error is logged, and a normal registration and call succeed afterwards.
Bounded in count and time; seeded so a failure can be replayed.
"""

from __future__ import annotations

import random
import socket
import time

from server_kit import ANSWER, OFFER
from test_udp import Regions, SocketUA, players, regions  # noqa: F401 - fixtures

from gamesdk.errors import RemoteProtocolError
from gamesdk.sip.message import Request, Response
from gamesdk.sip.parser import parse_message_untrusted

SEED = 20261128
DATAGRAMS = 3000
TIME_LIMIT_S = 20.0

_TOKENS = [b"\r\n", b"\r\n\r\n", b":", b";", b",", b"<", b">", b"\"", b"\x00", b"\xff", b" ", b"\t", b"SIP/2.0",
           b"Via", b"branch=z9hG4bK", b"Content-Length: 99999", b"CSeq: 1 ACK", b"Max-Forwards: 0", b"%", b"@",
           b"sip:", b"tag=", b"Contact: *", b"Expires: 0", b"9" * 40, "é".encode(), b"=" * 10]


def corpus(alice: SocketUA) -> list[bytes]:
    invite = alice.invite("sip:bob@na.gamesdk.test")
    ok = Response(200, "OK", invite.headers.copy(), ANSWER)
    bye = alice.bye(invite, Response(200, "OK", [("Contact", "<sip:bob@127.0.0.1:9>"), ("To", "<sip:b@x>;tag=1")]))
    options = Request("OPTIONS", "sip:eu.gamesdk.test", invite.headers.copy())
    options.headers.set("CSeq", "1 OPTIONS")
    return [alice.register(600).to_bytes(), invite.to_bytes(), ok.to_bytes(), bye.to_bytes(), options.to_bytes(),
            b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx\r\n\r\n"]


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(6)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:  # flip a byte
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 1:  # insert a SIP-ish token
            buf[pos:pos] = rng.choice(_TOKENS)
        elif op == 2:  # delete a run
            del buf[pos:pos + rng.randint(1, 40)]
        elif op == 3:  # truncate
            del buf[pos:]
        elif op == 4:  # duplicate a line
            start = buf.rfind(b"\n", 0, pos) + 1
            end = buf.find(b"\n", pos)
            if end > start:
                buf[end + 1:end + 1] = buf[start:end + 1]
        else:  # swap two header lines
            lines = bytes(buf).split(b"\r\n")
            if len(lines) > 3:
                i, j = rng.randrange(1, len(lines) - 1), rng.randrange(1, len(lines) - 1)
                lines[i], lines[j] = lines[j], lines[i]
                buf = bytearray(b"\r\n".join(lines))
    return bytes(buf[:9000])


def test_mutated_datagrams_then_normal_call(regions: Regions, players: tuple[SocketUA, SocketUA]) -> None:  # noqa: F811
    alice, bob = players
    eu = regions.eu.address
    rng = random.Random(SEED)
    seeds = corpus(alice)
    fuzzer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fuzzer.bind(("127.0.0.1", 0))
    fuzzer.setblocking(False)
    node = regions.eu.node
    assert node is not None
    answers = 0
    sent = 0
    deadline = time.monotonic() + TIME_LIMIT_S
    try:
        while sent < DATAGRAMS and time.monotonic() < deadline:
            fuzzer.sendto(mutate(rng, rng.choice(seeds)), eu)
            sent += 1
            if sent % 50 == 0:
                # Let the server thread catch up: past the socket buffer, UDP would drop the excess.
                while node.stats.datagrams_in < sent and time.monotonic() < deadline:
                    time.sleep(0.001)
            while True:
                try:
                    data = fuzzer.recv(65535)
                except BlockingIOError:
                    break
                answers += 1
                try:
                    parse_message_untrusted(data)  # whatever the server says is well-formed SIP
                except RemoteProtocolError as exc:
                    raise AssertionError(f"server sent a malformed datagram: {exc.message}\n{data[:300]!r}") from exc
    finally:
        fuzzer.close()
    assert sent >= 1000, f"only {sent} datagrams in {TIME_LIMIT_S} s"
    time.sleep(0.2)
    assert node.stats.internal_errors == 0
    assert node.stats.datagrams_in >= sent * 0.98
    assert node.stats.malformed > sent // 10 and answers > 0

    # The server still registers and routes a normal call.
    assert alice.login(eu, 900).status == 200
    invite = alice.invite("sip:bob@na.gamesdk.test")
    alice.send(invite, eu)
    challenge = alice.final()
    alice.send(alice.ack_non2xx(invite, challenge), eu)
    invite = alice.authorize(invite, challenge)
    alice.send(invite, eu)
    arrived = bob.recv()
    while not (isinstance(arrived, Request) and arrived.method == "INVITE"):
        arrived = bob.recv()
    assert arrived.body == OFFER
    bob.send(bob.answer(arrived, 200, ANSWER), regions.na.address)
    ok = alice.final()
    assert ok.status == 200 and ok.body == ANSWER
