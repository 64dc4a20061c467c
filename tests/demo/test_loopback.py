"""LoopbackLink: the in-memory GameLink behaves like the channel the game will get."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from demo_game.link import (
    Lane,
    LinkClosed,
    LinkStats,
    MessageReceived,
    PeerDisconnected,
    PeerInterrupted,
    PeerResumed,
    SessionFailed,
    SessionReady,
    SetupStep,
    check_budget,
)
from demo_game.loopback import LoopbackLink, NetSim
from demo_game.testing import sample_session_info

INFO = sample_session_info()


def ready_pair(**kw: object) -> tuple[LoopbackLink, LoopbackLink]:
    host, guest = LoopbackLink.pair(INFO, **kw)  # type: ignore[arg-type]
    assert isinstance(host.poll(0.0)[-1], SessionReady)
    assert isinstance(guest.poll(0.0)[-1], SessionReady)
    return host, guest


def received(events: Sequence[object], lane: Lane) -> list[bytes]:
    return [e.data for e in events if isinstance(e, MessageReceived) and e.lane is lane]


def test_setup_steps_then_ready_with_each_side_seeing_itself() -> None:
    host, guest = LoopbackLink.pair(INFO, setup_steps=("login", "invite"), step_interval_s=0.5)
    assert host.session_info() is None
    assert host.poll(0.0) == [SetupStep(text="login")]
    with pytest.raises(LinkClosed, match="not established"):
        host.send_state(b"x")
    assert host.poll(0.4) == []
    assert host.poll(0.5) == [SetupStep(text="invite")]
    events = host.poll(1.0)
    assert len(events) == 1 and isinstance(events[0], SessionReady)
    assert events[0].info.local_side == 0
    # Each end counts its steps from its own first poll.
    assert guest.poll(3.0) == [SetupStep(text="login")]
    ready = guest.poll(5.0)[-1]
    assert isinstance(ready, SessionReady) and ready.info.local_side == 1
    assert guest.session_info() == ready.info


def test_scripted_failure_is_final() -> None:
    host, _ = LoopbackLink.pair(INFO, setup_steps=("invite",), failure=(580, "insufficient uplink in eu-dsl"))
    events = host.poll(0.0)
    assert events[-1] == SessionFailed(status=580, reason="insufficient uplink in eu-dsl")
    with pytest.raises(LinkClosed):
        host.send_reliable(b"x")
    assert host.poll(1.0) == []


def test_latency_delays_delivery_both_ways_and_rtt_is_measured() -> None:
    host, guest = ready_pair(sim=NetSim(latency_ms=20.0))
    for i in range(10):
        now = i * 0.1
        host.poll(now)
        guest.poll(now)
        host.send_state(b"s%d" % i)
        guest.send_reliable(b"r%d" % i)
        host.flush(now)
        guest.flush(now)
        assert received(guest.poll(now + 0.019), Lane.STATE) == []
        assert received(guest.poll(now + 0.021), Lane.STATE) == [b"s%d" % i]
        assert received(host.poll(now + 0.021), Lane.RELIABLE) == [b"r%d" % i]
    stats = host.stats()
    assert stats.rtt_ms == pytest.approx(40.0)
    assert stats.rtt_min_ms == pytest.approx(40.0) and stats.rtt_max_ms == pytest.approx(40.0)
    assert stats.packets_out == 10 and stats.packets_in == 10
    assert stats.jitter_ms == pytest.approx(0.0, abs=1e-9)


def test_state_lane_is_sequenced_and_reliable_lane_ordered_under_jitter() -> None:
    host, guest = ready_pair(sim=NetSim(latency_ms=5.0, jitter_ms=30.0, seed=3))
    for i in range(200):
        host.poll(i * 0.002)
        host.send_state(i.to_bytes(2, "big"))
        host.send_reliable(i.to_bytes(2, "big"))
    events = guest.poll(10.0)
    states = [int.from_bytes(d, "big") for d in received(events, Lane.STATE)]
    reliable = [int.from_bytes(d, "big") for d in received(events, Lane.RELIABLE)]
    assert states == sorted(states) and len(set(states)) == len(states)
    assert len(states) < 200  # jitter made some arrive after newer ones: those were dropped
    assert reliable == list(range(200))
    assert guest.stats().jitter_ms > 1.0


def test_loss_hits_the_state_lane_only_and_is_measured() -> None:
    host, guest = ready_pair(sim=NetSim(latency_ms=1.0, loss=0.2, seed=9))
    for i in range(1000):
        host.poll(i * 0.01)
        host.send_state(b"s")
        host.send_reliable(b"r")
    events = guest.poll(100.0)
    assert len(received(events, Lane.RELIABLE)) == 1000
    got = len(received(events, Lane.STATE))
    assert 700 < got < 900
    assert host.stats().loss_out_ppm == pytest.approx((1000 - got) * 1000, rel=0.01)
    assert guest.stats().loss_in_ppm == host.stats().loss_out_ppm


def test_close_reaches_the_peer_after_queued_messages() -> None:
    host, guest = ready_pair(sim=NetSim(latency_ms=10.0))
    host.poll(1.0)
    host.send_reliable(b"end")
    host.close("time")
    host.close("time")  # idempotent
    events = guest.poll(2.0)
    assert [type(e) for e in events] == [MessageReceived, PeerDisconnected]
    assert "time" in events[1].reason  # type: ignore[attr-defined]
    with pytest.raises(LinkClosed, match="ended"):
        host.send_state(b"x")


def test_cut_wire_interrupts_then_disconnects_and_restore_resumes() -> None:
    host, guest = ready_pair(interrupt_after_s=1.0, disconnect_after_s=10.0)
    host.cut(5.0)
    assert guest.poll(5.5) == []
    assert guest.poll(6.1) == [PeerInterrupted()]
    assert guest.poll(7.0) == []
    host.restore()
    assert guest.poll(7.1) == [PeerResumed()]
    host.cut(8.0)
    guest.poll(9.5)
    last = guest.poll(18.5)
    assert len(last) == 1 and isinstance(last[0], PeerDisconnected)
    assert "silent" in last[0].reason


def test_budget_check() -> None:
    b = INFO.budget
    assert check_budget(LinkStats(), b).ok  # nothing measured yet: nothing over
    over = check_budget(LinkStats(rtt_ms=51.0, jitter_ms=2.0, loss_in_ppm=20_000), b)
    assert (over.rtt_over, over.jitter_over, over.loss_over, over.ok) == (True, False, True, False)
