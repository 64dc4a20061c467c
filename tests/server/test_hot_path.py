"""Work the message path skips (a cost, not a behaviour: each test counts calls the path must not make)."""

from __future__ import annotations

from pathlib import Path

import pytest
from server_kit import OFFER, TestUA, Wire, make_node

EU = ("127.0.0.1", 5060)


def test_the_ack_of_a_challenge_is_dropped_before_any_routing(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # The 407 went out statelessly, so its ACK belongs to no transaction and to no call set up here: the proxy
    # drops it (counted) without resolving its Request-URI in the location service first.
    wire = Wire()
    node = wire.add_node(make_node("eu", 5060, 5062, tmp_path, {"alice": "apw", "dave": "dpw"}))
    alice = wire.add_ua(TestUA("alice", "eu.gamesdk.test", "apw", ("127.0.0.1", 7001)))
    invite = alice.invite("sip:dave@eu.gamesdk.test", OFFER)
    wire.send(alice.addr, EU, invite)
    (challenge,) = alice.responses()
    assert challenge.status == 407
    lookups: list[str] = []
    real = node.location

    class Counting:  # the location service may be a compiled class (no attribute of its own can be patched)
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def lookup(self, aor: str, now: float) -> object:
            lookups.append(aor)
            return real.lookup(aor, now)

    monkeypatch.setattr(node.proxy, "location", Counting())
    dropped = node.proxy.stats.acks_dropped
    wire.send(alice.addr, EU, alice.ack_non2xx(invite, challenge))
    assert node.proxy.stats.acks_dropped == dropped + 1 and not alice.take()
    assert lookups == []


def test_a_call_through_the_proxy_relays_without_serialising(tmp_path: Path) -> None:
    # Every datagram eu relays on the call's path is cut from the bytes it received (server/splice.py): the
    # INVITE with its credentials taken out, the 180 and the 2xx with their Vias restored, the ACK, the BYE and
    # its 200. A header line the serialiser would normalise (the spaces after the colon) arrives as it was sent.
    # (No patched serialiser: the compiled build's classes take no patches.)
    wire = Wire()
    wire.add_node(make_node("eu", 5060, 5062, tmp_path, {"alice": "apw", "bob": "bpw"}))
    alice = wire.add_ua(TestUA("alice", "eu.gamesdk.test", "apw", ("127.0.0.1", 7001)))
    bob = wire.add_ua(TestUA("bob", "eu.gamesdk.test", "bpw", ("127.0.0.1", 7002)))
    for ua in (alice, bob):
        request = ua.register(600)
        wire.send(ua.addr, EU, request)
        (challenge,) = ua.responses()
        wire.send(ua.addr, EU, ua.authorize(request, challenge))
        assert ua.responses()[0].status == 200
    odd = b"\r\nSubject:   a  game\r\n"

    def send(src: tuple[str, int], message: object, to: tuple[str, int] | None = None) -> None:
        data = message.to_bytes()  # type: ignore[attr-defined]
        data = data.replace(b"\r\nContent-Length:", odd + b"Content-Length:", 1)
        before = len(wire.log)
        wire.send(src, EU, data)
        if to is not None:
            relayed = [sent for came, went, sent in wire.log[before:] if came == EU and went == to]
            assert len(relayed) == 1 and odd in relayed[0], relayed

    invite = alice.invite("sip:bob@eu.gamesdk.test", OFFER)
    send(alice.addr, invite)
    (challenge,) = alice.responses()
    assert challenge.status == 407
    send(alice.addr, alice.ack_non2xx(invite, challenge))
    signed = alice.authorize(invite, challenge)
    send(alice.addr, signed, bob.addr)
    (arrived,) = bob.requests()
    assert "Proxy-Authorization" not in arrived.headers and arrived.max_forwards == 69
    send(bob.addr, bob.answer(arrived, 180), alice.addr)
    send(bob.addr, bob.answer(arrived, 200), alice.addr)
    trying, ringing, ok = alice.responses()
    assert [trying.status, ringing.status, ok.status] == [100, 180, 200]
    send(alice.addr, alice.ack_2xx(signed, ok), bob.addr)
    send(alice.addr, alice.bye(signed, ok), bob.addr)
    _, bye = bob.requests()
    send(bob.addr, bob.answer(bye, 200), alice.addr)
    assert [r.status for r in alice.responses()] == [200]
