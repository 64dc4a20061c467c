"""Resend back-off, the pause while Interrupted, and the token bucket (sans-IO core on a fake clock)."""

from __future__ import annotations

import itertools

from gamesdk.channel.config import ChannelConfig, Lane
from gamesdk.channel.connection import Channel
from gamesdk.channel.pacing import TokenBucket
from gamesdk.channel.testing import ANSWER_ADDR, OFFER_ADDR, make_params_pair


def test_resends_to_a_silent_peer_back_off_then_pause_while_interrupted() -> None:
    offer, answer = make_params_pair()
    config = ChannelConfig(interrupted_s=1.0, disconnected_s=None, initial_rto_s=0.05, max_rto_s=0.8)
    a, b = Channel(offer, config, now=0.0), Channel(answer, config, now=0.0)
    # one exchange so `a` has heard from its peer (Interrupted needs authentic traffic first)
    for datagram, _ in a.datagrams_to_send(0.0):
        b.receive_datagram(datagram, OFFER_ADDR, 0.0)
    for datagram, _ in b.datagrams_to_send(0.001):
        a.receive_datagram(datagram, ANSWER_ADDR, 0.001)
    a.send(b"last words", Lane.RELIABLE)
    resends: list[float] = []
    now = 0.002
    a.datagrams_to_send(now)
    while now < 4.0:  # b is silent from here on
        timer = a.get_timer()
        assert timer is not None
        now = max(timer, now + 1e-4)
        a.handle_timer(now)
        before = a.stats.retransmissions
        a.datagrams_to_send(now)
        if a.stats.retransmissions > before:
            resends.append(now)
    gaps = [later - earlier for earlier, later in itertools.pairwise(resends)]
    assert gaps and all(later >= 1.9 * earlier for earlier, later in itertools.pairwise(gaps)), gaps
    assert all(t < 1.0 + 0.001 for t in resends), resends  # nothing resent while Interrupted
    assert a.stats.rto_backoff >= len(resends)


def test_token_bucket_bounds_what_leaves() -> None:
    bucket = TokenBucket(rate_bytes_s=1000.0, burst_bytes=500.0, now=0.0)
    sent = 0
    now = 0.0
    while now < 2.0:
        while bucket.may_send(now):
            bucket.charge(100, now)
            sent += 100
        now = bucket.ready_at(now)
    assert sent <= 1000 * 2.0 + 500 + 100
    assert sent >= 1000 * 2.0  # and it does not starve either


def test_paced_channel_holds_data_and_says_so() -> None:
    offer, _ = make_params_pair()
    a = Channel(offer, ChannelConfig(send_kbps=8.0), now=0.0)  # 1000 bytes/s, burst 2400 bytes
    a.path_validated(a.peer_addr, 0.0)  # as if an ICE check had passed: data may go there
    for _ in range(40):
        a.send(bytes(200), Lane.UNRELIABLE)
    first = sum(len(d) for d, _ in a.datagrams_to_send(0.0))
    assert first <= 2400 + 1200
    stats = a.stats
    assert stats.paced_holds == 1 and stats.queued_bytes > 0 and stats.send_limit_kbps == 8.0
    timer = a.get_timer()
    assert timer is not None and 0.0 < timer <= 1.3  # woken when the bucket has room again
