"""Reliable-ordered reassembly and sequenced filtering, including 16-bit sequence wrap-around."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gamesdk.channel.reliability import FragmentAssembler, ReliableReceiver, ReliableSender, SequencedReceiver
from gamesdk.errors import RemoteProtocolError


def _fragments(messages: list[bytes], size: int, start: int = 0) -> list[tuple[int, int, int, bytes]]:
    sender = ReliableSender(size, 1024)
    sender._next_seq = start
    for m in messages:
        sender.push(m)
    out = []
    for frag in sender.due(0.0, 1.0):
        out.append((frag.seq & 0xFFFF, frag.index, frag.count, frag.data))
    return out


@given(
    st.lists(st.binary(max_size=50), min_size=1, max_size=20),
    st.randoms(use_true_random=False),
    st.sampled_from([0, 65530]),
)
def test_any_arrival_order_with_duplicates_delivers_each_message_once_in_order(
    messages: list[bytes], rnd: object, start: int
) -> None:
    frags = _fragments(messages, 16, start)
    arrivals = frags + frags[: len(frags) // 2]  # some duplicates
    rnd.shuffle(arrivals)  # type: ignore[attr-defined]
    receiver = ReliableReceiver(max_fragments=64)
    receiver.next_seq = start
    got: list[bytes] = []
    for frag in arrivals:
        got.extend(receiver.receive_untrusted(*frag))
    assert got == messages
    # retransmissions after delivery are recognised as old
    for frag in frags:
        assert receiver.receive_untrusted(*frag) == []


def test_sender_tracks_pending_bytes_and_window() -> None:
    sender = ReliableSender(fragment_bytes=10, max_inflight=4)
    sender.push(b"x" * 35)  # 4 fragments
    sender.push(b"y")
    assert sender.pending_bytes == 36 and sender.pending_messages == 2
    first = list(sender.due(0.0, 0.1))
    assert [f.index for f in first] == [0, 1, 2, 3]  # max_inflight caps the burst
    for f in first:
        sender.sent(f, 0.0)
    assert list(sender.due(0.05, 0.1)) == []
    assert [f.seq for f in sender.due(0.1, 0.1)] == [0, 1, 2, 3]  # resend timer
    for f in first:
        sender.acked(f)
    assert sender.pending_messages == 1 and sender.pending_bytes == 1
    assert [f.data for f in sender.due(0.1, 0.1)] == [b"y"]


def test_contradicting_fragments_are_a_protocol_error() -> None:
    receiver = ReliableReceiver(max_fragments=8)
    receiver.receive_untrusted(1, 1, 2, b"b")
    receiver.receive_untrusted(2, 2, 3, b"c")
    with pytest.raises(RemoteProtocolError, match="disagree"):
        receiver.receive_untrusted(0, 0, 3, b"a")  # says 3 fragments, seq 1 said 2
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        ReliableReceiver(max_fragments=8).receive_untrusted(0, 0, 9, b"a")
    with pytest.raises(RemoteProtocolError, match="starts with"):
        ReliableReceiver(max_fragments=8).receive_untrusted(0, 1, 2, b"a")


def test_sequenced_receiver_drops_stale_across_wrap() -> None:
    r = SequencedReceiver()
    assert [r.accept(s) for s in (65534, 65535, 0, 65535, 1, 1, 3, 2)] == [
        True, True, True, False, True, False, True, False,
    ]  # fmt: skip
    assert r.stale == 3


def test_fragment_assembler_all_or_nothing_with_bounded_memory() -> None:
    asm = FragmentAssembler(max_partial=2)
    assert asm.receive_untrusted(0, 1, 1, 2, b"b") is None
    assert asm.receive_untrusted(0, 1, 0, 2, b"a") == b"ab"
    assert asm.receive_untrusted(1, 1, 0, 3, b"x") is None  # same seq, other lane: separate
    assert asm.receive_untrusted(0, 2, 0, 2, b"y") is None
    assert asm.receive_untrusted(0, 3, 0, 2, b"z") is None  # a third partial evicts the oldest
    assert asm.dropped == 1
    assert asm.receive_untrusted(1, 1, 1, 3, b"x") is None  # lane 1 seq 1 was evicted: starts over
    with pytest.raises(RemoteProtocolError, match="disagree"):
        asm.receive_untrusted(0, 3, 1, 4, b"z")
