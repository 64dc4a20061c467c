"""Tables keyed by outside input stay capped; the throttle never refuses a right password for other sources'
failures; log lines are rate limited and values clipped."""

from __future__ import annotations

import logging

from server.auth import FailureThrottle
from server.loglimit import RateLimitFilter, clip
from server.publish import DialogPublications, PublishRequest
from server.ratelimit import SourceRateLimiter


def throttle(**kw: int) -> FailureThrottle:
    return FailureThrottle(slow_after=3, block_after=5, window_s=300, delay_step_s=0.5, max_delay_s=4,
                           block_s=300, **kw)


def test_failures_from_other_sources_only_delay_the_player() -> None:
    t = throttle()
    for i in range(50):
        t.failed("alice", f"10.0.0.{i}", 1.0)
    verdict = t.check("alice", "192.0.2.1", 2.0)
    assert not verdict.blocked and 0 < verdict.delay_s <= 4
    for _ in range(5):
        t.failed("alice", "10.0.0.1", 3.0)
    assert t.check("alice", "10.0.0.1", 4.0).blocked  # the guessing address itself is refused
    assert not t.check("alice", "192.0.2.1", 4.0).blocked


def test_throttle_table_is_capped() -> None:
    t = throttle(max_keys=1000)
    for i in range(4000):
        t.failed(f"user{i}" + "x" * 200, f"10.{i // 250}.{i % 250}.1", 1.0)
    assert len(t) <= 1000


def test_rate_limiter_is_capped_and_limits() -> None:
    limiter = SourceRateLimiter(10, 20, max_keys=100)
    assert sum(limiter.allow("a", 0.0) for _ in range(100)) == 20
    assert limiter.allow("a", 0.2)  # 2 tokens back after 0.2 s
    for i in range(1000):
        limiter.allow(f"10.0.{i // 250}.{i % 250}", 1.0)
    assert len(limiter) <= 100


def test_one_player_cannot_pile_up_publications() -> None:
    counter = iter(range(10**6))
    pubs = DialogPublications(etag_factory=lambda: f"e{next(counter)}", max_per_aor=32)
    body = (b'<?xml version="1.0"?><dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" '
            b'state="full" entity="sip:alice@eu.example"><dialog id="d1"><state>confirmed</state></dialog>'
            b'</dialog-info>')
    statuses = [pubs.handle(PublishRequest(aor="sip:alice@eu.example", event="dialog", expires=90, if_match=None,
                                           content_type="application/dialog-info+xml", body=body), 1.0).status
                for _ in range(3000)]
    assert statuses.count(200) == 32 and len(pubs) == 32
    assert set(statuses[32:]) == {403}


def test_log_lines_are_rate_limited_and_values_clipped() -> None:
    now = [0.0]
    flt = RateLimitFilter(per_s=1, burst=5, clock=lambda: now[0])
    records = [logging.LogRecord("server.proxy", logging.INFO, __file__, 1, "refused %s", ("x",), None)
               for _ in range(1000)]
    passed = [r for r in records if flt.filter(r)]
    assert len(passed) == 5
    now[0] = 10.0
    late = logging.LogRecord("server.proxy", logging.INFO, __file__, 1, "refused %s", ("x",), None)
    assert flt.filter(late) and "995 similar lines held back" in late.getMessage()
    assert len(clip("u" * 7000)) < 100
