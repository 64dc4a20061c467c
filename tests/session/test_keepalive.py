"""The STUN keep-alive of the SIP flow (RFC 5626 section 4.4.2), sans-IO: timing, answers, the two failures."""

from __future__ import annotations

import itertools

from gamesdk.ice import stun
from gamesdk.session.keepalive import StunKeepAlive

REGION = ("203.0.113.10", 5060)


def _random(start: int = 0) -> object:
    counter = itertools.count(start)
    return lambda n: bytes((next(counter) + i) % 256 for i in range(n))


def _answer(request: bytes, mapped: tuple[str, int]) -> bytes:
    answer = stun.binding_response(request, mapped)
    assert answer is not None
    return answer


def test_requests_come_every_80_to_100_percent_of_the_interval_and_answers_are_matched() -> None:
    k = StunKeepAlive(REGION, 10.0, _random())  # type: ignore[arg-type]
    k.start(0.0)
    due = k.due()
    assert due is not None and 8.0 <= due <= 10.0
    assert k.poll(due - 0.001) == ([], False)
    (request,), failed = k.poll(due)
    assert not failed and stun.is_stun(request)
    other = StunKeepAlive(REGION, 10.0, _random(100))  # type: ignore[arg-type]
    other.start(0.0)
    (foreign,), _ = other.poll(20.0)
    assert k.receive(_answer(foreign, ("198.51.100.2", 4000)), due) is None  # not our transaction
    assert k.receive(b"\x00\x01garbage", due) is None
    assert k.receive(_answer(request, ("198.51.100.2", 4000)), due + 0.01) is True
    assert k.mapped == ("198.51.100.2", 4000) and k.answered == 1
    nxt = k.due()
    assert nxt is not None and due + 8.0 <= nxt <= due + 10.01


def test_a_new_mapped_address_is_a_failed_flow() -> None:
    k = StunKeepAlive(REGION, 1.0, _random())  # type: ignore[arg-type]
    k.start(0.0)
    (first,), _ = k.poll(1.0)
    assert k.receive(_answer(first, ("198.51.100.2", 4000)), 1.0) is True
    (second,), _ = k.poll(2.0)
    assert k.receive(_answer(second, ("198.51.100.2", 4001)), 2.0) is False
    assert k.failures == 1 and k.mapped == ("198.51.100.2", 4001)


def test_no_answer_after_the_tries_is_a_failed_flow_and_stop_ends_it() -> None:
    k = StunKeepAlive(REGION, 1.0, _random(), rto_s=0.5)  # type: ignore[arg-type]
    k.start(0.0)
    sent = 0
    failed = False
    now = 0.0
    for _ in range(50):
        due = k.due()
        assert due is not None
        now = due
        requests, failed = k.poll(now)
        sent += len(requests)
        if failed:
            break
    assert failed and sent == StunKeepAlive.TRIES and k.failures == 1
    assert now <= 1.0 + 0.5 * (2 ** StunKeepAlive.TRIES)  # 0.5 + 1 + 2 + 4 + 8 s after the first
    k.stop()
    assert k.due() is None and not k.running
