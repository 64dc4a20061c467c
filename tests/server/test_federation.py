"""Transit latency between regions: the windowed minimum of the OPTIONS round trips (RFC 9002 section 5.2's
min_rtt idea), so queueing in a busy server does not read as a longer path."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gamesdk.sip.ids import SequentialIdFactory
from gamesdk.sip.message import Response, response_for
from gamesdk.sip.parser import parse_message_untrusted
from server.config import ListenAddress, PeerConfig
from server.federation import MIN_RTT_WINDOW_S, FederationTable, PeerState

NA = ("127.0.0.1", 5062)


def _table() -> FederationTable:
    peer = PeerConfig(domain="na.gamesdk.test", address=ListenAddress("udp", *NA))
    return FederationTable((peer,), local_domain="eu.gamesdk.test", via_host="127.0.0.1", via_port=5060,
                           ids=SequentialIdFactory("eu"), interval_s=10.0)


def _ping_and_answer(table: FederationTable, sent: float, rtt: float) -> None:
    (data, dest), = table.handle_timer(sent)
    assert dest == NA
    ping = parse_message_untrusted(data)
    answer = response_for(ping, 200, to_tag="na")  # type: ignore[arg-type]
    assert isinstance(answer, Response)
    assert table.handle_response(parse_message_untrusted(answer.to_bytes()), sent + rtt)  # type: ignore[arg-type]


def test_queueing_under_load_does_not_inflate_the_transit_latency() -> None:
    table = _table()
    now = 0.0
    for _ in range(5):  # an idle path: 2 ms
        _ping_and_answer(table, now, 0.002)
        now += 10.0
    for _ in range(10):  # the peer gets busy: its queue adds 75 ms to every ping
        _ping_and_answer(table, now, 0.077)
        now += 10.0
    transit = table.rtt_ms("na.gamesdk.test")
    assert transit is not None and abs(transit - 2.0) < 1e-6
    peer = table.by_domain("na.gamesdk.test")
    assert peer is not None and peer.rtt_ms is not None and peer.rtt_ms > 40  # the smoothed one shows the queue


def test_a_longer_path_shows_once_the_window_has_passed() -> None:
    table = _table()
    _ping_and_answer(table, 0.0, 0.002)
    now = 10.0
    while now < MIN_RTT_WINDOW_S + 30:
        _ping_and_answer(table, now, 0.030)  # rerouted: 30 ms for good
        now += 10.0
    transit = table.rtt_ms("na.gamesdk.test")
    assert transit is not None and abs(transit - 30.0) < 1e-6
    assert table.rtt_ms("unknown.test") is None


@given(st.lists(st.tuples(st.floats(0.0, 50.0), st.floats(0.0, 1.0)), min_size=1, max_size=60))
def test_windowed_minimum_matches_a_plain_scan(steps: list[tuple[float, float]]) -> None:
    peer = PeerState("na.gamesdk.test", NA)
    now = 0.0
    seen: list[tuple[float, float]] = []
    for gap, sample in steps:
        now += gap
        peer.add_sample(sample, now)
        seen.append((now, sample))
        expected = min(s for t, s in seen if t >= now - MIN_RTT_WINDOW_S)
        assert peer.min_rtt_s == expected
        assert peer.last_rtt_s == sample
