"""Whatever arrives from the network, the channel never raises: it drops, counts, or closes cleanly."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gamesdk.channel import ChannelClosed, ChannelState, Lane, MessageReceived
from gamesdk.channel import packet as wire
from gamesdk.channel.testing import MemoryWire, channel_pair


def _established() -> MemoryWire:
    w = channel_pair()
    w.run(1.0, stop=lambda: w.a.state is ChannelState.ESTABLISHED and w.b.state is ChannelState.ESTABLISHED)
    return w


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=1300), max_size=8))
def test_random_datagrams_are_dropped_and_counted(datagrams: list[bytes]) -> None:
    w = _established()
    b = w.b
    for d in datagrams:
        b.receive_datagram(d, b.peer_addr, w.now)
    s = b.stats
    dropped = s.malformed_dropped + s.wrong_sid_dropped + s.replays_dropped + s.decrypt_failures
    assert dropped == len(datagrams)
    assert b.state is ChannelState.ESTABLISHED and b.events() == []


# half the cases start like the fast path's layout (ACK frame, then a message frame type byte)
_ack_prefix = st.builds(
    lambda largest, lane, rest: wire.push_ack(largest, 0, 0) + bytes([lane]) + rest,
    st.integers(0, 3),
    st.sampled_from([0x10, 0x11, 0x12, 0x13]),
    st.binary(max_size=30),
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400) | _ack_prefix)
def test_authenticated_garbage_frames_never_raise(plaintext: bytes) -> None:
    """A peer with the right keys but a broken frame encoder: parsed, or the channel closes with a reason."""
    w = _established()
    a, b = w.a, w.b
    pn = a._pn
    a._pn += 1
    header = wire.encode_header(wire.PacketType.DATA, a._remote_sid, pn)
    b.receive_datagram(header + a._seal(pn, header, plaintext), b.peer_addr, w.now)
    for event in b.events():
        assert isinstance(event, (MessageReceived, ChannelClosed))
        if isinstance(event, ChannelClosed):
            assert event.reason.startswith("peer broke the channel protocol") or event.by_peer
    b.datagrams_to_send(w.now + 0.01)
    b.handle_timer(w.now + 0.01)
    if b.is_open:
        b.send(b"still works", Lane.RELIABLE)


@pytest.mark.parametrize("tail", [b"\x11", b"\x11\x00", b"\x11\x00\x00", b"\x11\x00\x00\x05", b"\x10\x00"])
def test_short_message_frame_after_ack_is_refused_not_raised(tail: bytes) -> None:
    w = _established()
    a, b = w.a, w.b
    pn = a._pn
    a._pn += 1
    header = wire.encode_header(wire.PacketType.DATA, a._remote_sid, pn)
    b.receive_datagram(header + a._seal(pn, header, wire.push_ack(0, 0, 0) + tail), b.peer_addr, w.now)
    (closed,) = b.events()
    assert isinstance(closed, ChannelClosed) and "frame" in closed.reason
