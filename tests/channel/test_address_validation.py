"""Address validation (RFC 9000 section 8: probes, then at most 3x what came back) and consent (RFC 7675)."""

from __future__ import annotations

import select
import time

from gamesdk.channel import (
    Channel,
    ChannelConfig,
    ChannelEstablished,
    ChannelEvent,
    ChannelState,
    Disconnected,
    Lane,
    MessageReceived,
)
from gamesdk.channel.testing import MemoryWire, make_params_pair
from gamesdk.io.channel_poll import PollChannel, bind_udp

LOOPBACK = "127.0.0.1"
#: Header + tag + ACK + CONFIRM + PATH_CHALLENGE: the largest probe.
MAX_PROBE_BYTES = 13 + 16 + 19 + 17 + 9


def test_an_answer_pointing_at_a_silent_victim_gets_it_only_probes_over_udp() -> None:
    """A hostile answer's c=/m= names a victim that never answers: a 60 Hz game sends it no game data, only
    the bounded probes (the channel's connectivity checks); 3x the bytes received from it is 3 x 0."""
    victim, own = bind_udp(LOOPBACK), bind_udp(LOOPBACK)
    offer, _ = make_params_pair(offer_addr=own.getsockname(), answer_addr=victim.getsockname())
    chan = PollChannel.open(offer, now=time.monotonic(), sock=own)
    got: list[bytes] = []
    try:
        start = time.monotonic()
        frame = 0
        while time.monotonic() - start < 2.5 and frame < 300:  # bounded in time and count
            now = time.monotonic()
            chan.poll(now)
            chan.send(bytes(200), Lane.SEQUENCED)  # the game's snapshot, every frame
            if frame % 30 == 0:
                chan.send(bytes(500), Lane.RELIABLE)
            chan.flush(now)
            frame += 1
            while select.select([victim], [], [], 0)[0]:
                got.append(victim.recv(2048))
            time.sleep(1 / 60)
        while select.select([victim], [], [], 0.05)[0]:
            got.append(victim.recv(2048))
    finally:
        chan.sock.close()
        victim.close()
    total = sum(len(d) for d in got)
    assert got, "probes did go out"
    assert all(len(d) <= MAX_PROBE_BYTES for d in got)  # never a snapshot or a reliable message
    # probes back off: at 0, 0.1, 0.3, 0.7, 1.5, 2.5 s -> at most 7 in 2.5 s
    assert len(got) <= 7 and total <= 7 * MAX_PROBE_BYTES
    assert chan.channel.probes_sent == len(got)
    assert chan.channel.state is ChannelState.CONFIRMING and not chan.channel.peer_validated
    # the same loop to a peer that answers moves ~60 x 250 bytes a second: what the victim got before


def test_over_ten_seconds_the_victim_gets_a_few_hundred_bytes_not_a_stream() -> None:
    offer, _ = make_params_pair()
    chan = Channel(offer, now=0.0)
    sent: list[bytes] = []
    now = 0.0
    while chan.is_open and now < 20.0:
        chan.send(bytes(900), Lane.SEQUENCED)
        for data, _ in chan.datagrams_to_send(now):
            sent.append(data)
        timer = chan.get_timer()
        now = min(now + 1 / 60, timer if timer is not None else now + 1 / 60)
        if chan.get_timer() is not None and chan.get_timer() <= now:  # type: ignore[operator]
            chan.handle_timer(now)
    assert isinstance(chan.events()[-1], Disconnected)  # 10 s of silence
    assert all(len(d) <= MAX_PROBE_BYTES for d in sent)
    assert len(sent) <= 16 and sum(map(len, sent)) <= 16 * MAX_PROBE_BYTES  # instead of 600 x ~950 bytes


def test_before_validation_answers_stay_within_three_times_what_came_in() -> None:
    offer, answer = make_params_pair()
    w = MemoryWire(Channel(offer, now=0.0), Channel(answer, now=0.0))
    w.run(1.0, stop=lambda: w.a.peer_validated and w.b.peer_validated)
    for ch in (w.a, w.b):
        assert ch.peer_validated and ch.state is ChannelState.ESTABLISHED
        # what went to the peer's address as answers before it was validated, against what came from it
        assert 0 < ch._path_out <= 3 * ch._path_in  # the allowance the channel kept
    # the answerer's first answer carried a triggered check, so one round trip validated both sides
    assert w.a.probes_sent + w.b.probes_sent <= 3


def test_consent_expires_when_the_peer_stops_answering_path_checks() -> None:
    config = ChannelConfig(consent_interval_s=0.5, consent_timeout_s=3.0, disconnected_s=100.0)
    offer, answer = make_params_pair()
    w = MemoryWire(Channel(offer, config, now=0.0), Channel(answer, config, now=0.0))
    w.run(1.0, stop=lambda: w.a.peer_validated and w.b.peer_validated)
    # b keeps sending (keepalives reach a), but a's packets, its path checks included, no longer reach b
    w.tap_a_to_b = lambda d: None
    w.run(w.now + 10.0, stop=lambda: not w.a.is_open)
    ended = [e for e in w.a_events if isinstance(e, Disconnected)]
    assert ended and ended[0].reason.startswith("consent expired: the peer answered no path check for 3 s")
    assert w.a.datagrams_to_send(w.now) == [] and w.a.state is ChannelState.CLOSED


def test_an_ice_agent_can_withdraw_and_restore_consent() -> None:
    offer, answer = make_params_pair()
    w = MemoryWire(Channel(offer, now=0.0), Channel(answer, now=0.0))
    w.run(1.0, stop=lambda: w.a.peer_validated and w.b.peer_validated)
    w.a.consent_lost(w.now)
    w.a.send(b"held", Lane.RELIABLE)
    assert w.a.datagrams_to_send(w.now) == []  # stopped sending at once
    w.run(w.now + 0.5)
    assert messages(w.b_events) == []
    w.a.path_validated(w.a.peer_addr, w.now)
    w.run(w.now + 0.5)
    assert messages(w.b_events) == [b"held"]


def test_an_ice_validated_address_lets_data_flow_at_once() -> None:
    offer, _ = make_params_pair()
    a = Channel(offer, now=0.0)
    a.path_validated(a.peer_addr, 0.0)
    a.send(bytes(200), Lane.RELIABLE)
    assert any(len(d) > 200 for d, _ in a.datagrams_to_send(0.0))


def messages(events: list[ChannelEvent]) -> list[bytes]:
    return [e.data for e in events if isinstance(e, MessageReceived)]


def test_both_sides_still_establish_when_one_opens_late() -> None:
    offer, answer = make_params_pair()
    a = Channel(offer, now=0.0)
    late = Channel(answer, now=0.0)
    w = MemoryWire(a, late)
    w.tap_a_to_b = lambda d: None  # b's process is not reading yet
    w.run(1.5)
    w.tap_a_to_b = None
    w.run(3.5, stop=lambda: ChannelEstablished() in w.a_events and ChannelEstablished() in w.b_events)
    assert ChannelEstablished() in w.a_events and ChannelEstablished() in w.b_events
