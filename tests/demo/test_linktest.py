"""The GameLink conformance check passes on LoopbackLink and catches a link that breaks a promise."""

from __future__ import annotations

import pytest

from demo_game.link import Lane, LinkEvent, MessageReceived
from demo_game.loopback import LoopbackLink, NetSim
from demo_game.testing import VirtualClock, check_link_pair, sample_session_info

INFO = sample_session_info("c9")


@pytest.mark.parametrize("sim", [NetSim(), NetSim(latency_ms=30.0, jitter_ms=20.0, loss=0.1, seed=4)])
def test_loopback_link_keeps_every_promise(sim: NetSim) -> None:
    host, guest = LoopbackLink.pair(INFO, sim=sim, setup_steps=("a", "b"), step_interval_s=0.1)
    clock = VirtualClock()
    report = check_link_pair(host, guest, clock=clock, sleep=clock.sleep)
    assert report.info.call_id == "c9"
    assert report.last_before_close_delivered  # the loopback orders the close after reliable data
    assert 0.2 <= report.setup_s <= 0.25  # ready after the two steps, seen at the next 1/60 s poll
    if sim.loss:
        assert report.states_delivered < report.states_sent
        assert report.host_stats.loss_out_ppm > 0
    else:
        assert report.states_delivered == report.states_sent


class Reordering(LoopbackLink):
    """A broken link: it swaps each pair of reliable messages."""

    held: MessageReceived | None = None

    def poll(self, now: float) -> list[LinkEvent]:
        out: list[LinkEvent] = []
        for ev in super().poll(now):
            if isinstance(ev, MessageReceived) and ev.lane is Lane.RELIABLE:
                if self.held is None:
                    self.held = ev
                    continue
                out += [ev, self.held]
                self.held = None
            else:
                out.append(ev)
        return out


def test_the_check_names_a_broken_promise() -> None:
    host, guest = Reordering.pair(INFO)
    clock = VirtualClock()
    with pytest.raises(AssertionError, match="promise 3"):
        check_link_pair(host, guest, clock=clock, sleep=clock.sleep, messages=10, timeout_s=1.0)
