"""Roaming: an authenticated packet from a new address starts a path check, the channel moves once it passes,
and spoofed or replayed packets cannot move it (RFC 9000 section 9, WireGuard's roaming)."""

from __future__ import annotations

import select
import time

from gamesdk.channel import (
    Channel,
    ChannelEstablished,
    ChannelEvent,
    ChannelState,
    Lane,
    MessageReceived,
    PathChanged,
)
from gamesdk.channel import packet as wire
from gamesdk.channel.testing import MemoryWire, make_params_pair
from gamesdk.io.channel_poll import PollChannel, bind_udp

LOOPBACK = "127.0.0.1"


def messages(events: list[ChannelEvent], lane: Lane | None = None) -> list[bytes]:
    return [e.data for e in events if isinstance(e, MessageReceived) and (lane is None or e.lane == lane)]


def established_wire() -> MemoryWire:
    offer, answer = make_params_pair()
    w = MemoryWire(Channel(offer, now=0.0), Channel(answer, now=0.0))
    w.run(1.0, stop=lambda: w.a.peer_validated and w.b.peer_validated)
    assert w.a.state is ChannelState.ESTABLISHED and w.b.state is ChannelState.ESTABLISHED
    return w


def test_a_nat_rebinding_moves_the_channel_after_a_path_check_and_loses_nothing_reliable() -> None:
    w = established_wire()
    old = w.a_addr
    sent = [i.to_bytes(2, "big") for i in range(200)]
    for i, m in enumerate(sent):
        if i == 100:
            w.a_addr = ("127.0.0.1", 50123)  # a's NAT gives it a new public port: b's packets to the old one die
        w.a.send(m, Lane.RELIABLE)
        w.b.send(m, Lane.SEQUENCED)
        w.run(w.now + 0.016)
    w.run(w.now + 2.0, stop=lambda: len(messages(w.b_events, Lane.RELIABLE)) == 200)
    assert messages(w.b_events, Lane.RELIABLE) == sent
    moved = [e for e in w.b_events if isinstance(e, PathChanged)]
    assert moved == [PathChanged(old_addr=old, new_addr=("127.0.0.1", 50123))]
    assert w.b.peer_addr == ("127.0.0.1", 50123) and w.b.stats.path_changes == 1
    # and b's snapshots reach a again after the move
    late = [int.from_bytes(m, "big") for m in messages(w.a_events, Lane.SEQUENCED)]
    assert late and late[-1] >= 190
    assert w.a.is_open and w.b.is_open


def test_spoofed_and_replayed_packets_from_elsewhere_cannot_move_the_channel() -> None:
    w = established_wire()
    home = w.b.peer_addr
    captured: list[bytes] = []
    w.tap_a_to_b = lambda d: captured.append(d) or d  # type: ignore[func-returns-value]
    w.a.send(b"x" * 300, Lane.RELIABLE)
    w.run(w.now + 0.05)
    w.tap_a_to_b = None
    genuine = max(captured, key=len)
    _, sid, pn = wire.decode_header_untrusted(genuine)
    attacker = ("203.0.113.9", 4444)
    # forgeries: right session id, newest packet numbers, no keys
    for i in range(20):
        forged = wire.encode_header(wire.PacketType.DATA, sid, pn + 1000 + i) + bytes(60)
        w.b.receive_datagram(forged, attacker, w.now)
    w.b.receive_datagram(genuine, attacker, w.now)  # a replay: the window already has it
    assert w.b.stats.foreign_address_dropped == 20 and w.b.stats.replays_dropped >= 1
    w.run(w.now + 3.0)
    assert w.b.peer_addr == home and w.b.stats.path_changes == 0
    assert not [m for who, m, addr in w.misrouted if who == "b" and addr == attacker]  # not even a probe
    # an on-path attacker racing a fresh genuine packet to b from its own address gets it read once, and a
    # path check it cannot answer: the challenge is encrypted, and only a knows the keys to read it
    w.tap_a_to_b = lambda d: (w.b.receive_datagram(d, attacker, w.now), None)[1]  # type: ignore[func-returns-value]
    w.a.send(b"raced", Lane.RELIABLE)
    w.run(w.now + 0.05)
    w.tap_a_to_b = None
    w.run(w.now + 10.0)
    assert messages(w.b_events).count(b"raced") == 1
    assert w.b.peer_addr == home and w.b.stats.path_changes == 0
    probes = [m for who, m, addr in w.misrouted if who == "b" and addr == attacker]
    assert 1 <= len(probes) <= w.b.config.max_probes  # bounded, then given up
    assert w.a.is_open and w.b.is_open


def _pump(chans: list[PollChannel], logs: list[list[ChannelEvent]], until: object, max_s: float) -> None:
    end = time.monotonic() + max_s
    while time.monotonic() < end:
        now = time.monotonic()
        for ch, log in zip(chans, logs, strict=True):
            log.extend(ch.poll(now))
        if callable(until) and until():
            return
        select.select(chans, [], [], 0.002)


def test_a_new_source_port_mid_match_over_udp_keeps_the_match_going() -> None:
    """NAT-rebinding-like: mid-match a's packets start leaving from a new port on loopback (a new socket);
    b's packets to the old port are lost until the path check moves the channel."""
    sa, sb = bind_udp(LOOPBACK), bind_udp(LOOPBACK)
    offer, answer = make_params_pair(offer_addr=sa.getsockname(), answer_addr=sb.getsockname())
    now = time.monotonic()
    a, b = PollChannel.open(offer, now=now, sock=sa), PollChannel.open(answer, now=now, sock=sb)
    a_events: list[ChannelEvent] = []
    b_events: list[ChannelEvent] = []
    moved_sock = bind_udp(LOOPBACK)
    try:
        _pump([a, b], [a_events, b_events], lambda: ChannelEstablished() in a_events + b_events, max_s=10.0)
        _pump([a, b], [a_events, b_events], lambda: a.channel.peer_validated and b.channel.peer_validated, 10.0)
        sent = [i.to_bytes(2, "big") for i in range(120)]
        for i, m in enumerate(sent):
            if i == 60:
                # the rebinding: same channel, new source port; the old socket is gone
                a = PollChannel(a.channel, moved_sock)
                sa.close()
            a.send(m, Lane.RELIABLE)
            b.send(m, Lane.SEQUENCED)
            _pump([a, b], [a_events, b_events], None, max_s=1 / 120)  # about 120 frames a second
        _pump(
            [a, b], [a_events, b_events],
            lambda: len(messages(b_events, Lane.RELIABLE)) == 120 and b.channel.stats.path_changes == 1,
            max_s=10.0,
        )  # fmt: skip
        assert messages(b_events, Lane.RELIABLE) == sent
        moved = [e for e in b_events if isinstance(e, PathChanged)]
        assert len(moved) == 1 and moved[0].new_addr == moved_sock.getsockname()
        assert b.channel.peer_addr == moved_sock.getsockname()
        b.send(b"after the move", Lane.RELIABLE)
        _pump([a, b], [a_events, b_events], lambda: b"after the move" in messages(a_events), max_s=10.0)
        assert b"after the move" in messages(a_events)
        assert a.channel.is_open and b.channel.is_open
    finally:
        for s in (sa, sb, moved_sock):
            s.close()
