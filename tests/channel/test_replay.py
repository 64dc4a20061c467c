"""The 1024-packet replay window against a model (a set of accepted numbers)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gamesdk.channel.replay import REPLAY_WINDOW, ReplayWindow


def test_window_basics() -> None:
    w = ReplayWindow()
    assert w.check(0)
    w.update(0)
    assert not w.check(0)
    w.update(5000)
    assert not w.check(5000 - REPLAY_WINDOW)  # just outside the window: too old
    assert w.check(5000 - REPLAY_WINDOW + 1)
    assert w.check(4999) and w.check(6000)
    w.update(4999)
    assert not w.check(4999)
    assert w.ack_bits() & 1  # 4999 = highest - 1 is bit 0 of the ACK bitfield


@given(st.lists(st.integers(min_value=0, max_value=3000), max_size=300))
def test_window_matches_model(pns: list[int]) -> None:
    w = ReplayWindow()
    accepted: set[int] = set()
    for pn in pns:
        highest = max(accepted, default=-1)
        expect = pn not in accepted and (pn > highest or highest - pn < REPLAY_WINDOW)
        assert w.check(pn) == expect
        if expect:
            w.update(pn)
            accepted.add(pn)
    highest = max(accepted, default=-1)
    if highest >= 0:
        bits = w.ack_bits()
        for i in range(64):
            assert bool(bits >> i & 1) == ((highest - 1 - i) in accepted)
