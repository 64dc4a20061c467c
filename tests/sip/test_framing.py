"""Message framing: the stream parser at any split point, and the datagram parser's Content-Length rules.

RFC 3261 section 18.3: on a stream, Content-Length says where a message ends and is mandatory; in a datagram it
may be absent (the body is the rest of the datagram), octets after the body are ignored, and a Content-Length
larger than what arrived is an error.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gamesdk.errors import RemoteProtocolError
from gamesdk.sip.message import Request, Response
from gamesdk.sip.parser import MAX_MESSAGE_BYTES, StreamParser, parse_message_untrusted

SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=application 50000 UDP/GSDK gsdk\r\n"
    b"b=AS:64\r\n"
    b"a=gsdk-format:pong/1;tick=60\r\n"
)

INVITE = (
    b"INVITE sip:bob@na.gamesdk.test SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:alice@eu.gamesdk.test>;tag=1928301774\r\n'
    b"To: <sip:bob@na.gamesdk.test>\r\n"
    b"Call-ID: a84b4c76e66710@127.0.0.1\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@127.0.0.1:5070;transport=tcp>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)

RINGING = (
    b"SIP/2.0 180 Ringing\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK776asdhds;rport=5070\r\n"
    b'From: "Alice" <sip:alice@eu.gamesdk.test>;tag=1928301774\r\n'
    b"To: <sip:bob@na.gamesdk.test>;tag=a6c85cf\r\n"
    b"Call-ID: a84b4c76e66710@127.0.0.1\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

BYE = (
    b"BYE sip:alice@127.0.0.1:5070;transport=tcp SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5080;branch=z9hG4bKnashds7\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:bob@na.gamesdk.test>;tag=a6c85cf\r\n"
    b'To: "Alice" <sip:alice@eu.gamesdk.test>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@127.0.0.1\r\n"
    b"CSeq: 231 BYE\r\n"
    b'Reason: SIP;cause=488;text="QoS answer unacceptable"\r\n'
    b"Content-Length: 0\r\n"
    b"\r\n"
)

CORPUS = Path(__file__).resolve().parent.parent / "data" / "rfc4475"


def _corpus_stream_messages() -> list[bytes]:
    """Well-formed RFC 4475 messages that carry a Content-Length, cut to exactly that length."""
    manifest = json.loads((CORPUS / "manifest.json").read_text("utf-8"))["messages"]
    out: list[bytes] = []
    for entry in manifest:
        if not entry["valid"]:
            continue
        data = (CORPUS / entry["file"]).read_bytes()
        message = parse_message_untrusted(data)
        if message.content_length is None:
            continue
        end = data.index(b"\r\n\r\n") + 4 + message.content_length
        out.append(data[:end])
    return out


def _drain(parser: StreamParser) -> list[Request | Response]:
    out: list[Request | Response] = []
    for _ in range(1000):  # bounded: a parser that never returns None would be a bug, not a hang
        message = parser.next_message()
        if message is None:
            return out
        out.append(message)
    raise AssertionError("next_message never returned None")


def test_fed_whole() -> None:
    parser = StreamParser()
    parser.feed(INVITE)
    (message,) = _drain(parser)
    assert message == parse_message_untrusted(INVITE)
    assert message.body == SDP
    assert parser.buffered == 0


def test_fed_byte_by_byte() -> None:
    parser = StreamParser()
    for i in range(len(INVITE) - 1):
        parser.feed(INVITE[i : i + 1])
        assert parser.next_message() is None
    parser.feed(INVITE[-1:])
    assert parser.next_message() == parse_message_untrusted(INVITE)
    assert parser.next_message() is None
    assert parser.buffered == 0


@pytest.mark.parametrize("data", [INVITE, RINGING, BYE], ids=["invite", "180", "bye"])
def test_every_split_point(data: bytes) -> None:
    expected = parse_message_untrusted(data)
    for cut in range(1, len(data)):
        parser = StreamParser()
        parser.feed(data[:cut])
        assert parser.next_message() is None, cut
        parser.feed(data[cut:])
        assert _drain(parser) == [expected], cut


def test_trailing_data_stays_buffered_for_the_next_message() -> None:
    parser = StreamParser()
    parser.feed(INVITE + RINGING[:40])
    assert _drain(parser) == [parse_message_untrusted(INVITE)]
    assert parser.buffered == 40
    parser.feed(RINGING[40:])
    assert _drain(parser) == [parse_message_untrusted(RINGING)]
    assert parser.buffered == 0


def test_several_messages_back_to_back_with_keepalives() -> None:
    # RFC 5626 section 3.5.1: CRLF keep-alives may sit between messages on a stream.
    parser = StreamParser()
    parser.feed(b"\r\n\r\n" + INVITE + RINGING + b"\r\n" + BYE + b"\r\n\r\n")
    messages = _drain(parser)
    assert messages == [parse_message_untrusted(m) for m in (INVITE, RINGING, BYE)]
    assert isinstance(messages[1], Response) and messages[1].status == 180
    assert isinstance(messages[2], Request) and messages[2].reasons[0].cause == 488
    assert parser.buffered == 0


def test_torture_corpus_back_to_back_in_odd_chunks() -> None:
    messages = _corpus_stream_messages()
    assert len(messages) >= 20
    stream = b"".join(messages)
    parser = StreamParser()
    got: list[Request | Response] = []
    for start in range(0, len(stream), 97):  # a prime chunk size cuts messages everywhere
        parser.feed(stream[start : start + 97])
        got.extend(_drain(parser))
    assert got == [parse_message_untrusted(m) for m in messages]


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(INVITE) + len(RINGING) + len(BYE)), max_size=8))
def test_any_chunking_of_a_stream_gives_the_same_messages(cuts: list[int]) -> None:
    stream = INVITE + RINGING + BYE
    bounds = [0, *sorted(cuts), len(stream)]
    parser = StreamParser()
    got: list[Request | Response] = []
    for lo, hi in itertools.pairwise(bounds):
        parser.feed(stream[lo:hi])
        got.extend(_drain(parser))
    assert got == [parse_message_untrusted(m) for m in (INVITE, RINGING, BYE)]


@pytest.mark.parametrize(
    ("value", "why"),
    [(b"-1", "negative"), (b"12a", "not a number"), (b"", "empty"), (b"99999999999", "too many digits")],
)
def test_bad_content_length_on_a_stream(value: bytes, why: str) -> None:
    data = RINGING.replace(b"Content-Length: 0", b"Content-Length: " + value)
    parser = StreamParser()
    parser.feed(data)
    with pytest.raises(RemoteProtocolError) as info:
        parser.next_message()
    assert info.value.status_hint == 400, why


def test_two_content_lengths_on_a_stream() -> None:
    parser = StreamParser()
    parser.feed(RINGING.replace(b"Content-Length: 0\r\n", b"Content-Length: 0\r\nl: 4\r\n"))
    with pytest.raises(RemoteProtocolError) as info:
        parser.next_message()
    assert info.value.status_hint == 400


def test_missing_content_length_on_a_stream() -> None:
    parser = StreamParser()
    parser.feed(RINGING.replace(b"Content-Length: 0\r\n", b""))
    with pytest.raises(RemoteProtocolError) as info:
        parser.next_message()
    assert info.value.status_hint == 400


def test_oversize_headers_without_end_on_a_stream() -> None:
    parser = StreamParser(max_size=4096)
    parser.feed(b"INVITE sip:bob@na.gamesdk.test SIP/2.0\r\n")
    chunk = b"X-Padding: " + b"a" * 100 + b"\r\n"
    raised = None
    for _ in range(100):  # bounded: 100 * 113 bytes is well past the 4096-byte limit
        parser.feed(chunk)
        try:
            assert parser.next_message() is None
        except RemoteProtocolError as exc:
            raised = exc
            break
    assert raised is not None and raised.status_hint == 513


def test_oversize_content_length_is_refused_before_the_body_arrives() -> None:
    parser = StreamParser()
    parser.feed(RINGING.replace(b"Content-Length: 0", b"Content-Length: " + str(MAX_MESSAGE_BYTES).encode()))
    with pytest.raises(RemoteProtocolError) as info:
        parser.next_message()
    assert info.value.status_hint == 513


def test_message_exactly_at_the_size_limit_is_accepted() -> None:
    parser = StreamParser(max_size=len(INVITE))
    parser.feed(INVITE)
    assert _drain(parser) == [parse_message_untrusted(INVITE)]
    with pytest.raises(RemoteProtocolError) as info:
        parse_message_untrusted(INVITE, max_size=len(INVITE) - 1)
    assert info.value.status_hint == 513


def test_datagram_ignores_octets_after_the_body() -> None:
    message = parse_message_untrusted(INVITE + b"garbage that is not SIP\r\n\r\n")
    assert message == parse_message_untrusted(INVITE)


def test_datagram_without_content_length_takes_the_rest_as_body() -> None:
    message = parse_message_untrusted(
        INVITE.replace(b"Content-Length: " + str(len(SDP)).encode() + b"\r\n", b"")
    )
    assert message.body == SDP
    assert message.content_length is None


def test_datagram_shorter_than_content_length() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_message_untrusted(INVITE[:-1])
    assert info.value.status_hint == 400


def test_datagram_without_the_empty_line_after_the_headers() -> None:
    head = INVITE[: INVITE.index(b"\r\n\r\n") + 2]
    with pytest.raises(RemoteProtocolError) as info:
        parse_message_untrusted(head)
    assert info.value.status_hint == 400


def test_oversize_datagram() -> None:
    padded = INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nX-Pad: " + b"p" * 70000 + b"\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        parse_message_untrusted(padded)
    assert info.value.status_hint == 513


def test_leading_crlf_before_the_start_line_is_ignored() -> None:
    # RFC 3261 section 7.5: empty lines before the start line are skipped.
    assert parse_message_untrusted(b"\r\n\r\n" + BYE) == parse_message_untrusted(BYE)
    with pytest.raises(RemoteProtocolError):
        parse_message_untrusted(b"\r\n\r\n")


def test_bare_lf_line_ends_are_accepted() -> None:
    # RFC 3261 section 7.5 asks receivers to accept a bare LF as a line end.
    lf = BYE.replace(b"\r\n", b"\n")
    message = parse_message_untrusted(lf)
    assert isinstance(message, Request) and message.method == "BYE"
    assert message.call_id == "a84b4c76e66710@127.0.0.1"
    parser = StreamParser()
    parser.feed(lf + lf)
    assert [m.cseq.method for m in _drain(parser)] == ["BYE", "BYE"]


@pytest.mark.parametrize("lazy", [False, True])
def test_one_bare_lf_or_folded_line_among_crlf_lines(lazy: bool) -> None:
    # The parser takes a fast path for heads of CRLF lines without folding and finds out on the way when a head
    # is not of that shape: one bare LF or one continuation line late in the head still ends or joins a line.
    mixed = BYE.replace(b"CSeq: 231 BYE\r\n", b"CSeq: 231 BYE\nSubject: late\r\n")
    message = parse_message_untrusted(mixed, lazy=lazy)
    assert message.cseq.seq == 231 and message.headers.get("Subject") == "late"
    assert message.headers.get("CSeq") == "231 BYE"
    for fold in (b"\r\n ", b"\r\n\t"):
        folded = BYE.replace(b'Reason: SIP;cause=488;', b"Reason: SIP;" + fold + b"cause=488;")
        message = parse_message_untrusted(folded, lazy=lazy)
        assert message.headers.get("Reason") == 'SIP; cause=488;text="QoS answer unacceptable"'
    with pytest.raises(RemoteProtocolError):
        parse_message_untrusted(BYE.replace(b"Via:", b" Via:"), lazy=lazy)  # a continuation before any header


def test_bare_lf_head_with_crlf_lines_in_the_body() -> None:
    # The head ends at the first empty line, whichever line end it uses; a CRLF CRLF inside the body of a
    # bare-LF message is body, not the end of the head.
    body = b"line1\r\n\r\nline3\r\n"
    lf = BYE.replace(b"Content-Length: 0", b"Content-Length: " + str(len(body)).encode()).replace(
        b"\r\n", b"\n"
    )
    message = parse_message_untrusted(lf + body)
    assert message.body == body
    assert message.cseq.method == "BYE"
    parser = StreamParser()
    parser.feed(lf + body + BYE)
    assert [m.body for m in _drain(parser)] == [body, b""]
