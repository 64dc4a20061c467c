"""Transit latency between regions: the windowed minimum of the OPTIONS round trips (RFC 9002 section 5.2's
min_rtt idea), so queueing in a busy server does not read as a longer path."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from server_kit import make_node

from gamesdk.sip.ids import SequentialIdFactory
from gamesdk.sip.message import Request, Response, response_for
from gamesdk.sip.parser import parse_message_untrusted
from server.config import ListenAddress, PeerConfig
from server.federation import MIN_RTT_WINDOW_S, FederationTable, PeerState, timestamp_echo

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


def _ping(table: FederationTable, sent: float) -> Request:
    (data, dest), = table.handle_timer(sent)
    assert dest == NA
    ping = parse_message_untrusted(data)
    assert isinstance(ping, Request)
    return ping


def _answer(ping: Request, timestamp: str | None) -> Response:
    extra = [] if timestamp is None else [("Timestamp", timestamp)]
    answer = parse_message_untrusted(response_for(ping, 200, to_tag="na", extra=extra).to_bytes())
    assert isinstance(answer, Response)
    return answer


def test_the_ping_is_timed_at_its_arrival_not_when_it_was_read() -> None:
    """The answer waited 400 ms in our socket behind other datagrams (a busy loop): the path took 3 ms."""
    table = _table()
    ping = _ping(table, 100.0)
    assert table.handle_response(_answer(ping, None), 100.403, received_at=100.003)
    assert table.rtt_ms("na.gamesdk.test") == pytest.approx(3.0)


def test_the_time_the_ping_spent_with_the_peer_is_taken_off() -> None:
    """RFC 3261 section 8.2.6.1: the ping carries a Timestamp, the peer echoes it with its delay (its queue)."""
    table = _table()
    ping = _ping(table, 100.0)
    stamp = ping.headers.get("Timestamp")
    assert stamp is not None and float(stamp) == 100.0
    assert table.handle_response(_answer(ping, f"{stamp} 0.075"), 100.080)
    assert table.rtt_ms("na.gamesdk.test") == pytest.approx(5.0)


@pytest.mark.parametrize("echo", ["100.0 abc", "100.0 -0.075", "100.0 ０.075", "100.0 0.075 1", "", "100.0 1e3",
                                  "100.0 " + "9" * 30])
def test_a_peer_delay_that_is_not_one_counts_as_none(echo: str) -> None:
    table = _table()
    ping = _ping(table, 100.0)
    assert table.handle_response(_answer(ping, echo), 100.080)
    assert table.rtt_ms("na.gamesdk.test") == pytest.approx(80.0)


def test_a_peer_delay_longer_than_the_round_trip_gives_zero_not_less() -> None:
    table = _table()
    ping = _ping(table, 100.0)
    assert table.handle_response(_answer(ping, "100.0 5"), 100.080)
    assert table.rtt_ms("na.gamesdk.test") == 0.0


def test_an_arrival_time_outside_the_ping_s_life_is_not_used() -> None:
    """A kernel time from before the ping left (another datagram's, a clock step) or from the future: ``now``."""
    for received_at in (99.0, 101.0):
        table = _table()
        ping = _ping(table, 100.0)
        assert table.handle_response(_answer(ping, None), 100.080, received_at=received_at)
        assert table.rtt_ms("na.gamesdk.test") == pytest.approx(80.0)


@pytest.mark.parametrize(("value", "delay", "echo"), [("12.5", 0.03, "12.5 0.030000"), ("7", 0.0, "7 0.000000"),
                                                      ("12.5 0.2", 0.001, "12.5 0.001000"), ("12.5", -1.0, "12.5 0.000000"),
                                                      ("abc", 0.03, None), ("", 0.03, None), ("1 2 3", 0.0, None),
                                                      ("１２", 0.0, None)])
def test_timestamp_echo(value: str, delay: float, echo: str | None) -> None:
    assert timestamp_echo(value, delay) == echo


@pytest.mark.parametrize(("stamp", "received_at", "echo"), [("54.25", 99.97, "54.25 0.030000"),
                                                            ("54.25", None, "54.25 0.000000"),
                                                            ("abc", 99.97, None), (None, 99.97, None)])
def test_the_node_answers_a_ping_with_the_time_it_held_it(tmp_path: Path, stamp: str | None,
                                                          received_at: float | None, echo: str | None) -> None:
    node = make_node("eu", 5060, 5062, tmp_path, {})
    extra = "" if stamp is None else f"Timestamp: {stamp}\r\n"
    ping = (f"OPTIONS sip:eu.gamesdk.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-p1\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:ping@na.gamesdk.test>;tag=n1\r\nTo: <sip:eu.gamesdk.test>\r\n"
            f"Call-ID: p1@na\r\nCSeq: 1 OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n").encode()
    [(data, dest)] = node.handle_datagram(ping, NA, 100.0, received_at=received_at)
    answer = parse_message_untrusted(data)
    assert dest == NA and isinstance(answer, Response) and answer.status == 200
    assert answer.headers.get("Timestamp") == echo


def test_a_new_peer_is_pinged_every_second_until_it_answered_three_pings() -> None:
    """One late answer at start-up would otherwise be the whole estimate for a full interval (10 s here)."""
    table = _table()
    sent = []
    now = 0.0
    for _ in range(6):
        ping = _ping(table, now)
        sent.append(now)
        assert table.handle_response(_answer(ping, None), now + (0.060 if now == 0.0 else 0.002))
        next_ping = table.get_timer()
        assert next_ping is not None
        now = next_ping
    assert sent == [0.0, 1.0, 2.0, 3.0, 13.0, 23.0]
    assert table.rtt_ms("na.gamesdk.test") == pytest.approx(2.0)


def test_an_unanswered_peer_is_pinged_every_second() -> None:
    table = _table()
    for expected in (0.0, 1.0, 2.0):
        assert table.get_timer() == expected
        _ping(table, expected)


def test_the_first_ping_to_a_tls_peer_is_not_a_transit_sample() -> None:
    """It waited for the TCP and TLS handshakes (74 ms seen under load, which refused a call with 580)."""
    peer = PeerConfig(domain="na.gamesdk.test", address=ListenAddress("tls", *NA))
    table = FederationTable((peer,), local_domain="eu.gamesdk.test", via_host="127.0.0.1", via_port=5060,
                            ids=SequentialIdFactory("eu"), interval_s=10.0)
    assert table.handle_response(_answer(_ping(table, 0.0), None), 0.074)
    state = table.by_domain("na.gamesdk.test")
    assert state is not None and state.reachable
    assert table.rtt_ms("na.gamesdk.test") is None  # unknown: the policy adds no transit yet
    assert table.handle_response(_answer(_ping(table, 1.0), None), 1.002)
    assert table.rtt_ms("na.gamesdk.test") == pytest.approx(2.0)
