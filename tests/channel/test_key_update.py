"""Key update (QUIC's key phase, RFC 9001 section 6) and the AEAD usage limits (section 6.6), on a fake clock."""

from __future__ import annotations

import pytest

from gamesdk.channel import (
    SUITES,
    Channel,
    ChannelClosed,
    ChannelConfig,
    ChannelEvent,
    ChannelState,
    Lane,
    MessageReceived,
    SimulatorConfig,
)
from gamesdk.channel import packet as wire
from gamesdk.channel.testing import MemoryWire, make_params_pair
from gamesdk.errors import LocalProtocolError


def messages(events: list[ChannelEvent]) -> list[bytes]:
    return [e.data for e in events if isinstance(e, MessageReceived)]


def pair(config: ChannelConfig, suite: str = "chacha20-poly1305", **links: SimulatorConfig) -> MemoryWire:
    offer, answer = make_params_pair(suite=suite)
    w = MemoryWire(Channel(offer, config, now=0.0), Channel(answer, config, now=0.0), **links)  # type: ignore[arg-type]
    w.run(2.0, stop=lambda: w.a.state is w.b.state is ChannelState.ESTABLISHED and w.b.stats.path_validated)
    assert w.a.state is ChannelState.ESTABLISHED and w.b.state is ChannelState.ESTABLISHED
    return w


@pytest.mark.parametrize("suite", SUITES)
def test_keys_update_every_n_packets_both_ways_and_nothing_is_lost(suite: str) -> None:
    w = pair(ChannelConfig(key_update_packets=64), suite)
    phases_seen: set[int] = set()
    w.tap_a_to_b = lambda d: phases_seen.add(wire.key_phase_of(d)) or d  # type: ignore[func-returns-value]
    sent_a = [i.to_bytes(4, "big") for i in range(600)]
    sent_b = [b"b" + i.to_bytes(4, "big") for i in range(600)]
    for i in range(600):
        w.a.send(sent_a[i], Lane.RELIABLE)
        w.b.send(sent_b[i], Lane.RELIABLE)
        w.run(w.now + 0.004)
    w.run(w.now + 3.0, stop=lambda: len(messages(w.b_events)) == 600 and len(messages(w.a_events)) == 600)
    assert messages(w.b_events) == sent_a and messages(w.a_events) == sent_b
    # several updates happened on each side, and the two sides agree on the phase
    assert w.a.key_phase >= 4 and w.b.key_phase >= 4 and abs(w.a.key_phase - w.b.key_phase) <= 1
    assert w.a.stats.key_phase == w.a.key_phase
    assert phases_seen == {0, 1}
    assert w.a.stats.decrypt_failures == 0 and w.b.stats.decrypt_failures == 0
    assert w.a.is_open and w.b.is_open


def test_reordered_packets_of_the_previous_phase_still_open() -> None:
    bad = SimulatorConfig(latency_s=0.005, jitter_s=0.004, reorder=0.3, reorder_delay_s=0.01, duplicate=0.05, seed=5)
    w = pair(ChannelConfig(key_update_packets=32), a_to_b=bad, b_to_a=SimulatorConfig(latency_s=0.005, seed=6))
    sent = [i.to_bytes(2, "big") for i in range(400)]
    for m in sent:
        w.a.send(m, Lane.RELIABLE)
        w.a.send(m, Lane.UNRELIABLE)
        w.run(w.now + 0.002)
    def reliable() -> list[bytes]:
        return [e.data for e in w.b_events if isinstance(e, MessageReceived) and e.lane is Lane.RELIABLE]

    w.run(w.now + 5.0, stop=lambda: len(reliable()) == len(sent))
    assert reliable() == sent
    assert w.a.key_phase >= 5
    assert w.b.stats.decrypt_failures == 0  # every reordered old-phase packet opened with the kept keys


def test_an_explicit_update_and_its_preconditions() -> None:
    offer, _ = make_params_pair()
    lone = Channel(offer, now=0.0)
    with pytest.raises(LocalProtocolError, match="key update needs an established channel"):
        lone.update_keys()
    w = pair(ChannelConfig())
    w.a.send(b"x", Lane.RELIABLE)
    w.run(w.now + 0.1)
    w.a.update_keys()
    with pytest.raises(LocalProtocolError):  # the peer has not reached phase 1 yet
        w.a.update_keys()
    w.a.send(b"after", Lane.RELIABLE)
    w.run(w.now + 0.2)
    assert messages(w.b_events)[-1] == b"after"
    assert w.a.key_phase == 1 and w.b.key_phase == 1  # the peer answered in the new phase


def test_the_confidentiality_limit_closes_a_channel_whose_peer_never_takes_up_the_update() -> None:
    w = pair(ChannelConfig(key_update_packets=16, disconnected_s=None))
    w.tap_b_to_a = lambda d: None  # a hears nothing of the peer's new phase, so it cannot update a second time
    for i in range(200):
        if not w.a.is_open:
            break
        w.a.send(bytes(1000), Lane.UNRELIABLE)
        w.run(w.now + 0.01)
    closed = [e for e in w.a_events if isinstance(e, ChannelClosed)]
    assert closed and "AEAD confidentiality limit" in closed[0].reason
    assert w.a.key_phase == 1 and w.a.state is ChannelState.CLOSED
    # the first update came after 16 packets; phase 1 ended at its hard limit (2 x 16 less a margin of 8)
    assert w.a.stats.packets_out <= 16 + 24 + 2


def test_the_integrity_limit_closes_the_channel() -> None:
    w = pair(ChannelConfig(integrity_limit=5))
    pn = 10_000
    for i in range(4):
        w.b.receive_datagram(wire.encode_header(wire.PacketType.DATA, 0x0A5E0002, pn + i) + bytes(40), w.a_addr, w.now)
    assert w.b.is_open and w.b.stats.decrypt_failures == 4
    w.b.receive_datagram(wire.encode_header(wire.PacketType.DATA, 0x0A5E0002, pn + 9) + bytes(40), w.a_addr, w.now)
    closed = [e for e in w.b.events() if isinstance(e, ChannelClosed)]
    assert closed and "AEAD integrity limit: 5 packets failed to authenticate" in closed[0].reason
