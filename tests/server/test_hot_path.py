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
