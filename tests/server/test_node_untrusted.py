"""Hypothesis: whatever arrives, the node answers with well-formed SIP or nothing, and never fails inside."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_kit import TestUA, make_node

from gamesdk.sip.message import Response
from gamesdk.sip.parser import parse_message_untrusted
from server.node import _salvage_response

_UA = TestUA("alice", "eu.gamesdk.test", "pw", ("127.0.0.1", 7001))
SEEDS = [_UA.register(600).to_bytes(), _UA.invite("sip:bob@na.gamesdk.test").to_bytes()]

_LINES = st.sampled_from([
    b"Via: SIP/2.0/UDP 127.0.0.1:7001;branch=z9hG4bKx", b"From: <sip:a@b>;tag=1", b"To: <sip:c@d>",
    b"Call-ID: x", b"CSeq: 1 INVITE", b"CSeq: x", b"Max-Forwards: 0", b"Content-Length: 5", b"v: SIP/2.0/UDP h",
    b"Contact: *", b"Expires: -1", b"Route: <sip:127.0.0.1:5060;lr>", b"Proxy-Require: foo", b"f: <sip:x@y>;tag=2",
])
_START = st.sampled_from([b"INVITE sip:bob@na.gamesdk.test SIP/2.0", b"REGISTER sip:eu.gamesdk.test SIP/2.0",
                          b"OPTIONS sip:eu.gamesdk.test SIP/2.0", b"ACK sip:x@y SIP/2.0", b"FOO sip:x SIP/2.0",
                          b"SIP/2.0 200 OK", b"BYE sip:127.0.0.1:9 SIP/3.0", b"garbage"])
MESSAGES = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda start, lines, body: start + b"\r\n" + b"\r\n".join(lines) + b"\r\n\r\n" + body,
              _START, st.lists(_LINES, max_size=9), st.binary(max_size=20)),
    st.builds(lambda seed, cut: seed[:cut], st.sampled_from(SEEDS), st.integers(0, 600)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=MESSAGES)
def test_salvage_answers_parse_or_are_none(data: bytes) -> None:
    answer = _salvage_response(data, 400, "Bad \r\n request \x00")
    if answer is not None:
        response = parse_message_untrusted(answer)
        assert isinstance(response, Response) and response.status == 400 and "\r" not in response.reason


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(MESSAGES, min_size=1, max_size=5))
def test_node_never_fails_inside(tmp_path: Path, messages: list[bytes]) -> None:
    node = make_node("eu", 5060, 5062, tmp_path, {"alice": "pw"})
    now = 100.0
    for data in messages:
        for out, _ in node.handle_datagram(data, ("127.0.0.1", 7001), now):
            parse_message_untrusted(out)
        now += 1.0
        for out, _ in node.handle_timer(now):
            parse_message_untrusted(out)
    assert node.stats.internal_errors == 0
