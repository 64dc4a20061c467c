"""The message path leaves no reference cycles behind: what it drops is freed by reference counting at once.

Garbage in cycles waits for the cyclic collector, and every object that waits makes its collections come sooner
and last longer (a full collection walks every live object of the server: at a few hundred calls per second that
was a tenth of the CPU). A challenged INVITE used to leave its whole stack behind: the proxy kept the refusal (an
exception) in a local variable, the exception's traceback holds the frames, one of which is that frame.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_kit import OFFER, TestUA, Wire, make_node

EU = ("127.0.0.1", 5060)


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def test_a_challenged_invite_leaves_no_cycles(tmp_path: Path, no_collector: None) -> None:
    wire = Wire()
    wire.add_node(make_node("eu", 5060, 5062, tmp_path, {"alice": "apw", "dave": "dpw"}))
    alice = wire.add_ua(TestUA("alice", "eu.gamesdk.test", "apw", ("127.0.0.1", 7001)))
    for _ in range(3):
        invite = alice.invite("sip:dave@eu.gamesdk.test", OFFER)
        wire.send(alice.addr, EU, invite)
        (challenge,) = alice.responses()
        assert challenge.status == 407
        wire.send(alice.addr, EU, alice.ack_non2xx(invite, challenge))
        del invite, challenge
        assert gc.collect() == 0
