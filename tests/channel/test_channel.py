"""Two channel cores over an in-memory, simulated wire on a fake clock (STYLE principle 8)."""

from __future__ import annotations

import pytest

from gamesdk.channel import (
    Channel,
    ChannelClosed,
    ChannelConfig,
    ChannelEstablished,
    ChannelEvent,
    ChannelState,
    Disconnected,
    Interrupted,
    Lane,
    MessageReceived,
    MessageTooLarge,
    QosRestored,
    QosViolation,
    Resumed,
    SecurityError,
    SimulatorConfig,
)
from gamesdk.channel import packet as wire
from gamesdk.channel.testing import MemoryWire, channel_pair, make_params_pair
from gamesdk.errors import LocalProtocolError

SUITES = ["chacha20-poly1305", "aes-256-gcm"]
BAD_NET = {
    "latency_s": 0.02,
    "jitter_s": 0.01,
    "loss": 0.2,
    "duplicate": 0.1,
    "reorder": 0.1,
    "reorder_delay_s": 0.015,
}


def messages(events: list[ChannelEvent], lane: Lane | None = None) -> list[bytes]:
    return [e.data for e in events if isinstance(e, MessageReceived) and (lane is None or e.lane == lane)]


def established(w: MemoryWire) -> bool:
    return w.a.state is ChannelState.ESTABLISHED and w.b.state is ChannelState.ESTABLISHED


@pytest.mark.parametrize("suite", SUITES)
def test_confirm_then_messages_on_every_lane_both_ways(suite: str) -> None:
    w = channel_pair(suite=suite)
    w.run(1.0, stop=lambda: established(w))
    assert w.a_events == [ChannelEstablished()] and w.b_events == [ChannelEstablished()]
    w.a.send(b"u", Lane.UNRELIABLE)
    w.a.send(b"s", Lane.SEQUENCED)
    w.a.send(b"r", Lane.RELIABLE)
    w.b.send(b"back", Lane.RELIABLE)
    w.run(w.now + 0.1)
    assert [(e.lane, e.data) for e in w.b_events if isinstance(e, MessageReceived)] == [
        (Lane.RELIABLE, b"r"), (Lane.SEQUENCED, b"s"), (Lane.UNRELIABLE, b"u"),
    ]  # fmt: skip
    assert messages(w.a_events) == [b"back"]
    # small messages of one flush share one packet
    assert w.a.packets_out < 10


def test_first_packets_carry_data_with_confirm() -> None:
    w = channel_pair()
    w.a.send(b"early", Lane.RELIABLE)  # before anything was exchanged
    w.run(0.05)
    assert w.b_events[0] == ChannelEstablished()
    assert messages(w.b_events) == [b"early"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reliable_ordered_exactly_once_in_order_under_loss_reorder_duplicates(seed: int) -> None:
    w = channel_pair(
        a_to_b=SimulatorConfig(**BAD_NET, seed=seed), b_to_a=SimulatorConfig(**BAD_NET, seed=seed + 100)
    )
    sent = [i.to_bytes(4, "big") * (1 + i % 50) for i in range(400)]
    for i, m in enumerate(sent):
        w.a.send(m, Lane.RELIABLE)
        if i % 20 == 0:
            w.run(w.now + 0.016)  # a game frame
    w.run(w.now + 10.0, stop=lambda: len(messages(w.b_events)) == len(sent))
    assert messages(w.b_events) == sent
    w.run(w.now + 1.0)
    assert messages(w.b_events) == sent  # nothing delivered twice later
    assert w.a_to_b.dropped > 0 and w.a_to_b.duplicated > 0 and w.b.replays_dropped > 0
    assert w.a.stats.retransmissions > 0 and w.a.stats.pending_reliable_bytes == 0


def test_fragmented_256_kib_message_under_loss() -> None:
    big = bytes(i * 7 % 251 for i in range(256 * 1024))
    w = channel_pair(a_to_b=SimulatorConfig(**BAD_NET, seed=9), b_to_a=SimulatorConfig(**BAD_NET, seed=10))
    w.a.send(big, Lane.RELIABLE)
    w.a.send(b"after", Lane.RELIABLE)
    w.run(30.0, stop=lambda: len(messages(w.b_events)) == 2)
    assert messages(w.b_events) == [big, b"after"]
    assert w.a.stats.retransmissions > 0


def test_sequenced_lane_never_delivers_stale_data() -> None:
    w = channel_pair(a_to_b=SimulatorConfig(**BAD_NET, seed=4))
    for i in range(600):
        w.a.send(i.to_bytes(4, "big"), Lane.SEQUENCED)
        w.run(w.now + 0.004)
    w.run(w.now + 1.0)
    got = [int.from_bytes(m, "big") for m in messages(w.b_events, Lane.SEQUENCED)]
    assert got == sorted(set(got))  # strictly increasing: no stale or repeated snapshot
    assert 0.5 * 600 < len(got) < 600
    assert w.b.stats.stale_dropped > 0  # the reorder produced late ones, and they were dropped


def test_unreliable_lane_may_lose_but_never_duplicates() -> None:
    w = channel_pair(a_to_b=SimulatorConfig(**BAD_NET, seed=5))
    for i in range(300):
        w.a.send(i.to_bytes(4, "big"), Lane.UNRELIABLE)
        w.run(w.now + 0.004)
    w.run(w.now + 1.0)
    got = [int.from_bytes(m, "big") for m in messages(w.b_events)]
    assert len(got) == len(set(got)) and 0.6 * 300 < len(got) < 300


def test_oversize_and_closed_sends_raise() -> None:
    w = channel_pair()
    single = w.a.unfragmented_bytes
    limit = w.a.max_unreliable_bytes
    assert 1100 < single < 1200 and limit == 16 * (single - 3)
    w.a.send(bytes(limit), Lane.UNRELIABLE)
    for lane in (Lane.UNRELIABLE, Lane.SEQUENCED):
        with pytest.raises(MessageTooLarge, match="reliable lane") as info:
            w.a.send(bytes(limit + 1), lane)
        assert info.value.size == limit + 1 and info.value.limit == limit
    w.a.send(bytes(256 * 1024), Lane.RELIABLE)
    with pytest.raises(MessageTooLarge, match="262144-byte limit"):
        w.a.send(bytes(256 * 1024 + 1), Lane.RELIABLE)
    with pytest.raises(LocalProtocolError, match="unknown lane"):
        w.a.send(b"x", 7)
    w.a.close()
    with pytest.raises(LocalProtocolError, match="closed channel"):
        w.a.send(b"x", Lane.RELIABLE)


@pytest.mark.parametrize("lane", [Lane.UNRELIABLE, Lane.SEQUENCED])
def test_every_datagram_fits_the_limit(lane: Lane) -> None:
    w = channel_pair()
    w.a.send(bytes(w.a.unfragmented_bytes), lane)  # the first packets also carry CONFIRM
    w.a.send(bytes(range(256)) * 70, lane)  # 17,920 bytes: 16 slices
    w.a.send(bytes(w.a.unfragmented_bytes + 1), lane)  # just over: 2 slices
    sizes: list[int] = []
    w.tap_a_to_b = lambda d: sizes.append(len(d)) or d  # type: ignore[func-returns-value]
    w.run(0.5)
    assert max(sizes) <= 1200
    assert messages(w.b_events, lane) == [
        bytes(w.a.unfragmented_bytes), bytes(range(256)) * 70, bytes(w.a.unfragmented_bytes + 1),
    ]  # fmt: skip


def test_fragmented_unreliable_messages_are_all_or_nothing_and_never_stale() -> None:
    w = channel_pair(a_to_b=SimulatorConfig(**BAD_NET, seed=12))
    sent = [bytes([i]) * 5000 for i in range(120)]  # 5 slices each
    for m in sent:
        w.a.send(m, Lane.SEQUENCED)
        w.a.send(m, Lane.UNRELIABLE)
        w.run(w.now + 0.02)
    w.run(w.now + 1.0)
    seq = messages(w.b_events, Lane.SEQUENCED)
    unrel = messages(w.b_events, Lane.UNRELIABLE)
    assert all(m in sent for m in seq + unrel)  # never a torn or mixed message
    order = [sent.index(m) for m in seq]
    assert order == sorted(set(order))  # sequenced: strictly newer each time
    assert len(set(unrel)) == len(unrel)
    # 20 % loss per slice: about 0.8^5 = 33 % of 5-slice messages arrive whole
    assert 0.15 * len(sent) < len(unrel) < 0.6 * len(sent)
    assert w.b.stats.partial_messages_dropped > 0


def _established_pair() -> MemoryWire:
    w = channel_pair()
    w.run(1.0, stop=lambda: established(w))
    return w


def test_tampered_packets_are_dropped_and_counted() -> None:
    w = _established_pair()
    flips = 0

    def tamper(d: bytes) -> bytes:
        nonlocal flips
        flips += 1
        if flips % 2:  # every other packet: one bit flipped in the ciphertext or the header
            pos = 13 + flips % (len(d) - 13) if flips % 4 == 1 else 5
            return d[:pos] + bytes([d[pos] ^ 0x10]) + d[pos + 1 :]
        return d

    w.tap_a_to_b = tamper
    for i in range(50):
        w.a.send(i.to_bytes(2, "big"), Lane.RELIABLE)
        w.run(w.now + 0.02)
    w.run(w.now + 2.0, stop=lambda: len(messages(w.b_events)) == 50)
    assert messages(w.b_events) == [i.to_bytes(2, "big") for i in range(50)]
    s = w.b.stats
    assert s.decrypt_failures > 10
    assert w.b.state is ChannelState.ESTABLISHED  # counted, not fatal once established
    assert not any(isinstance(e, SecurityError) for e in w.b_events)


def test_replayed_packets_are_dropped_and_counted() -> None:
    w = _established_pair()
    captured: list[bytes] = []
    w.tap_a_to_b = lambda d: captured.append(d) or d  # type: ignore[func-returns-value]
    w.a.send(b"once", Lane.UNRELIABLE)
    w.a.send(b"reliable once", Lane.RELIABLE)
    w.run(w.now + 0.05)
    w.tap_a_to_b = None
    w.run(w.now + 0.05)  # everything captured has arrived by now
    before = w.b.stats.replays_dropped
    for d in captured:
        w.b.receive_datagram(d, w.b.peer_addr, w.now)
    assert w.b.stats.replays_dropped == before + len(captured)
    w.run(w.now + 0.1)
    assert messages(w.b_events) == [b"reliable once", b"once"]


def test_wrong_session_id_and_foreign_address_are_dropped_and_counted() -> None:
    w = _established_pair()
    captured: list[bytes] = []
    w.tap_a_to_b = lambda d: captured.append(d) or None  # type: ignore[func-returns-value]
    w.a.send(b"forged?", Lane.UNRELIABLE)
    w.run(w.now + 0.01)
    w.tap_a_to_b = None
    datagram = max(captured, key=len)  # the one with the message (others may be keepalives, path checks)
    ptype, sid, pn = wire.decode_header_untrusted(datagram)
    wrong_sid = wire.encode_header(ptype, sid ^ 1, pn) + datagram[13:]
    home = w.b.peer_addr
    w.b.receive_datagram(wrong_sid, home, w.now)
    # garbage and forgeries from other addresses
    w.b.receive_datagram(datagram[:-1] + bytes([datagram[-1] ^ 1]), ("127.0.0.1", 6666), w.now)
    w.b.receive_datagram(b"\x42" + bytes(40), ("127.0.0.2", home[1]), w.now)
    s = w.b.stats
    assert s.wrong_sid_dropped == 1 and s.foreign_address_dropped == 2
    assert messages(w.b_events) == []
    # a genuine packet sniffed and sent on from another address is authentic: read once (QUIC and WireGuard do
    # the same), then a path check goes there, which nobody answers, so the channel stays where it is
    w.b.receive_datagram(datagram, ("127.0.0.1", 6666), w.now)
    w.b.receive_datagram(datagram, home, w.now)  # the original, later: a replay now
    assert messages(w.b_events) == [] and messages(w.b.events()) == [b"forged?"]
    assert w.b.stats.replays_dropped == 1
    w.run(w.now + 5.0)
    assert w.b.peer_addr == home and w.b.stats.path_changes == 0
    probes = [d for who, d, addr in w.misrouted if who == "b" and addr == ("127.0.0.1", 6666)]
    assert 1 <= len(probes) <= w.b.config.max_probes


def test_garbage_is_dropped_and_counted() -> None:
    w = _established_pair()
    for junk in (b"", b"\x00" * 5, b"\x42" + bytes(40), b"\xff" * 1300):
        w.b.receive_datagram(junk, w.b.peer_addr, w.now)
    s = w.b.stats
    assert s.malformed_dropped + s.wrong_sid_dropped + s.decrypt_failures == 4
    assert w.b.state is ChannelState.ESTABLISHED


@pytest.mark.parametrize(
    "edit",
    [
        {"edit_offer": lambda g: g.replace(b"lat=50", b"lat=90")},
        {"edit_answer": lambda g: g.replace(b"loss=10000", b"loss=20000")},
        {
            "replace_offer_key": bytes.fromhex(
                "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
            )
        },
        {"edit_offer": lambda g: g + b"a=gsdk-sec:aes-256-gcm\r\n"},
    ],
    ids=["offer-qos", "answer-qos", "offer-key", "offer-sec"],
)
@pytest.mark.parametrize("suite", SUITES)
def test_edited_sdp_gives_security_error_on_both_sides(edit: dict[str, object], suite: str) -> None:
    offer, answer = make_params_pair(suite=suite, **edit)  # type: ignore[arg-type]
    w = MemoryWire(Channel(offer, now=0.0), Channel(answer, now=0.0))
    w.a.send(b"secret", Lane.RELIABLE)
    w.run(2.0)
    for events, ch in ((w.a_events, w.a), (w.b_events, w.b)):
        assert [type(e) for e in events] == [SecurityError]
        assert events[0].reason.startswith("the keys differ: no packet from the peer authenticated")  # type: ignore[attr-defined]
        assert "SDPs was changed" in events[0].reason  # type: ignore[attr-defined]
        assert ch.state is ChannelState.FAILED and ch.stats.decrypt_failures >= 3
        assert ch.get_timer() is None and ch.datagrams_to_send(w.now) == []


def test_edited_session_id_gives_security_error() -> None:
    offer, answer = make_params_pair()
    import dataclasses

    answer = dataclasses.replace(answer, local_session_id=answer.local_session_id ^ 0xFF)
    w = MemoryWire(Channel(offer, now=0.0), Channel(answer, now=0.0))
    w.run(2.0)
    assert [type(e) for e in w.b_events] == [SecurityError]
    assert w.b.stats.wrong_sid_dropped >= 3


def test_keepalive_when_idle_and_acks_only_when_needed() -> None:
    w = _established_pair()
    start_a, start_b = w.a.packets_out, w.b.packets_out
    w.run(w.now + 2.0)
    # 100 ms keepalive each way (+ the occasional ack-only reply to a ping)
    assert 20 <= w.a.packets_out - start_a <= 45 and 20 <= w.b.packets_out - start_b <= 45
    assert w.a_events == [ChannelEstablished()]  # idle but alive: no Interrupted
    assert w.a.stats.rtt_ms is not None and w.a.stats.rtt_ms < 1.0


def test_interrupted_resumed_disconnected_on_fake_clock() -> None:
    w = _established_pair()
    t0 = w.now
    w.tap_b_to_a = lambda d: None  # b goes silent towards a
    w.run(t0 + 0.95)
    assert not any(isinstance(e, Interrupted) for e in w.a_events)
    w.run(t0 + 1.2)
    (interrupted,) = [e for e in w.a_events if isinstance(e, Interrupted)]
    assert 1.0 <= interrupted.silent_s < 1.1
    w.tap_b_to_a = None
    w.run(t0 + 1.5)
    (resumed,) = [e for e in w.a_events if isinstance(e, Resumed)]
    assert resumed.silent_s >= 1.0
    w.tap_b_to_a = lambda d: None
    w.run(t0 + 20.0)
    disconnected = [e for e in w.a_events if isinstance(e, Disconnected)]
    assert len(disconnected) == 1 and "10." in disconnected[0].reason
    assert w.a.state is ChannelState.CLOSED and w.a.get_timer() is None
    assert w.now == pytest.approx(t0 + 20.0)


def test_disconnect_timeout_can_be_switched_off() -> None:
    config = ChannelConfig(disconnected_s=None)
    offer, answer = make_params_pair()
    w = MemoryWire(Channel(offer, config, now=0.0), Channel(answer, config, now=0.0))
    w.run(0.5)
    w.tap_b_to_a = lambda d: None
    w.run(60.0)
    assert [type(e) for e in w.a_events] == [ChannelEstablished, Interrupted]
    assert w.a.is_open


def test_close_is_redundant_and_survives_loss() -> None:
    w = channel_pair(a_to_b=SimulatorConfig(loss=0.5, seed=11))
    w.run(3.0, stop=lambda: established(w))
    w.a.close("game over")
    sent_at_close = w.a.packets_out
    w.run(w.now + 1.0)
    assert w.a.packets_out == sent_at_close  # the 3 CLOSE copies were the last packets
    assert w.a_events[-1] == ChannelClosed(by_peer=False, reason="game over")
    assert ChannelClosed(by_peer=True, reason="game over") in w.b_events
    assert w.b.state is ChannelState.CLOSED
    assert w.a.datagrams_to_send(w.now + 5) == []


def test_stats_measure_the_simulated_network() -> None:
    net = {"latency_s": 0.03, "jitter_s": 0.004, "loss": 0.1}
    w = channel_pair(a_to_b=SimulatorConfig(**net, seed=21), b_to_a=SimulatorConfig(**net, seed=22))
    for _ in range(60 * 10):  # 10 s of 60 Hz traffic both ways
        w.a.send(bytes(100), Lane.SEQUENCED)
        w.b.send(bytes(100), Lane.SEQUENCED)
        w.run(w.now + 1 / 60)
    s = w.a.stats
    assert s.rtt_ms is not None and 60 <= s.rtt_ms <= 70  # 2 x 30 ms + up to 2 x 4 ms jitter
    assert s.rtt_min_ms is not None and s.rtt_min_ms >= 60 and s.rtt_max_ms is not None and s.rtt_max_ms < 75
    assert 0 < s.jitter_ms < 4
    total_in = w.b_to_a.submitted
    in_flight = len(w.b_to_a)
    assert s.packets_in == total_in - w.b_to_a.dropped - in_flight  # no duplicates configured
    assert 0.02 <= s.loss_in <= 0.2 and 0.02 <= s.loss_out <= 0.2  # one 1 s interval of ~60 packets
    assert s.packets_lost_out / s.packets_out == pytest.approx(0.1, abs=0.03)
    assert 50 <= s.packets_out_per_s <= 70
    # 100 B payload + 5 frame + 19 ack + 13 header + 16 tag = 153 B at 60/s = 73 kbit/s
    assert s.kbps_out == pytest.approx(73.4, rel=0.15)


def test_qos_violation_after_grace_and_restored() -> None:
    config = ChannelConfig(max_rtt_ms=50, max_loss_ppm=50_000, qos_grace_s=3.0)
    offer, answer = make_params_pair()
    slow = SimulatorConfig(latency_s=0.04, seed=31)
    w = MemoryWire(
        Channel(offer, config, now=0.0), Channel(answer, config, now=0.0), a_to_b=slow, b_to_a=slow
    )
    w.run(2.9)
    assert not any(isinstance(e, QosViolation) for e in w.a_events)  # 80 ms RTT, but still in grace
    w.run(6.0)
    (violation,) = [e for e in w.a_events if isinstance(e, QosViolation)]
    assert violation.metric == "rtt_ms" and violation.limit == 50 and 75 < violation.measured < 85
    assert violation.duration_s >= 3.0
    assert w.a.stats.qos_violations == ("rtt_ms",)
    w.a_to_b.config = w.b_to_a.config = SimulatorConfig(latency_s=0.005)
    w.run(12.0)
    assert any(isinstance(e, QosRestored) and e.metric == "rtt_ms" for e in w.a_events)
    assert w.a.stats.qos_violations == ()
    assert len([e for e in w.a_events if isinstance(e, QosViolation)]) == 1


def test_qos_loss_violation() -> None:
    config = ChannelConfig(max_loss_ppm=50_000, qos_grace_s=2.0)
    offer, answer = make_params_pair()
    lossy = SimulatorConfig(latency_s=0.005, loss=0.3, seed=41)
    w = MemoryWire(Channel(offer, config, now=0.0), Channel(answer, config, now=0.0), b_to_a=lossy)
    for _ in range(60 * 6):
        w.b.send(b"state", Lane.UNRELIABLE)
        w.run(w.now + 1 / 60)
    violations = [e for e in w.a_events if isinstance(e, QosViolation)]
    assert violations and violations[0].metric == "loss_ppm" and violations[0].measured > 100_000


def test_runs_are_deterministic() -> None:
    def trace() -> list[bytes]:
        w = channel_pair(a_to_b=SimulatorConfig(**BAD_NET, seed=3), b_to_a=SimulatorConfig(**BAD_NET, seed=4))
        out: list[bytes] = []
        w.tap_a_to_b = lambda d: out.append(d) or d  # type: ignore[func-returns-value]
        for i in range(50):
            w.a.send(bytes([i]) * 300, Lane.RELIABLE)
        w.run(3.0)
        return out

    assert trace() == trace()


def test_peer_breaking_frame_grammar_closes_channel() -> None:
    w = _established_pair()
    # forge a correctly encrypted packet with a bad frame, as a buggy peer would send
    pn = w.a._pn
    w.a._pn += 1
    header = wire.encode_header(wire.PacketType.DATA, w.a._remote_sid, pn)
    w.b.receive_datagram(header + w.a._seal(pn, header, b"\x7f"), w.b.peer_addr, w.now)
    (closed,) = w.b.events()
    assert isinstance(closed, ChannelClosed) and "unknown frame type" in closed.reason
    assert w.b.state is ChannelState.CLOSED


def test_peer_not_yet_listening_is_not_an_interruption() -> None:
    w = channel_pair()
    w.tap_b_to_a = lambda d: None  # the answerer's packets never arrive: its side is still in SIP
    w.tap_a_to_b = lambda d: None
    w.run(5.0)
    assert w.a_events == [] and w.a.state is ChannelState.CONFIRMING
    w.tap_b_to_a = w.tap_a_to_b = None
    w.run(7.0)  # the next probe (one a second by now) gets through
    assert w.a_events == [ChannelEstablished()]
    w.tap_b_to_a = lambda d: None
    w.run(20.0)
    assert [type(e) for e in w.a_events] == [ChannelEstablished, Interrupted, Disconnected]
