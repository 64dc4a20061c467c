"""The parser's memo of checked header values (a proxy sees each call's From/To/CSeq/Via about four times) must
give exactly what a fresh parse gives, and must never let a bad value through on a second look."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gamesdk.errors import RemoteProtocolError
from gamesdk.sip import parser
from gamesdk.sip.parser import parse_message_untrusted

GOOD = (
    b"INVITE sip:bob@na.gamesdk.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc.1;rport=5060, SIP/2.0/UDP 127.0.0.1:7001;branch=z9hG4bKx\r\n"
    b"Max-Forwards: 69\r\n"
    b"From: \"Alice\" <sip:alice@eu.gamesdk.test>;tag=a1\r\n"
    b"To: <sip:bob@na.gamesdk.test>\r\n"
    b"Call-ID: c1@eu\r\n"
    b"CSeq: 2 INVITE\r\n"
    b"Contact: <sip:alice@127.0.0.1:7001>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _typed(data: bytes) -> tuple[object, ...]:
    m = parse_message_untrusted(data)
    return (m.vias, m.from_, m.to, m.cseq, m.call_id, m.contacts, m.max_forwards)


def test_memo_hit_equals_fresh_parse() -> None:
    parser.clear_memo()
    fresh = _typed(GOOD)
    assert parser._MEMO  # the values were remembered
    again = _typed(GOOD)
    assert again == fresh
    parser.clear_memo()
    assert _typed(GOOD) == fresh


@pytest.mark.parametrize(("old", "new"), [
    (b"CSeq: 2 INVITE", b"CSeq: 99999999999 INVITE"),
    (b"To: <sip:bob@na.gamesdk.test>", b"To: <sip:bob@na.gamesdk.test:99999>"),
    (b"127.0.0.1:7001;branch=z9hG4bKx", b"127.0.0.1:70001;branch=z9hG4bKx"),
    (b"Contact: <sip:alice@127.0.0.1:7001>", b"Contact: <sip:alice@127.0.0.1:7001"),
])
def test_bad_values_raise_every_time(old: bytes, new: bytes) -> None:
    bad = GOOD.replace(old, new)
    assert bad != GOOD
    parse_message_untrusted(GOOD)  # the good neighbours are in the memo
    for _ in range(2):
        with pytest.raises(RemoteProtocolError):
            parse_message_untrusted(bad)


def test_memo_stays_bounded() -> None:
    parser.clear_memo()
    for i in range(parser._MEMO_MAX + 500):
        parse_message_untrusted(GOOD.replace(b"tag=a1", f"tag=a{i}".encode()))
    assert len(parser._MEMO) <= parser._MEMO_MAX and len(parser._MEMO_OLD) <= parser._MEMO_MAX


def test_values_that_come_back_stay_while_values_seen_once_fill_the_memo() -> None:
    # A registrar's players refresh with the same To and Contact, between requests whose Via branch and From tag
    # are new every time. The values that come back are not parsed again (the memo hands back the very object
    # the first parse made); before, the memo was cleared when full, and they were parsed again every turn.
    parser.clear_memo()
    first = parse_message_untrusted(GOOD)
    for i in range(3 * parser._MEMO_MAX):
        parse_message_untrusted(GOOD.replace(b"tag=a1", f"tag=a{i}".encode()))
        if i % 1000 == 0:
            assert parse_message_untrusted(GOOD).to is first.to
    assert parse_message_untrusted(GOOD).to is first.to
    assert len(parser._MEMO) <= parser._MEMO_MAX and len(parser._MEMO_OLD) <= parser._MEMO_MAX


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abcXYZ019.-_;=<>:@\" ", max_size=40), st.sampled_from([b"From", b"To", b"Via", b"CSeq"]))
def test_mutated_value_parses_the_same_with_and_without_memo(text: str, name: bytes) -> None:
    lines = GOOD.split(b"\r\n")
    index = next(i for i, line in enumerate(lines) if line.startswith(name + b":"))
    lines[index] = name + b": " + text.encode()
    data = b"\r\n".join(lines)

    def outcome() -> object:
        try:
            return _typed(data)
        except RemoteProtocolError as exc:
            return ("error", exc.message)

    parser.clear_memo()
    first = outcome()
    second = outcome()  # with whatever the first parse left in the memo
    parser.clear_memo()
    assert first == second == outcome()


def test_memo_stays_bounded_in_bytes_whatever_the_values_length() -> None:
    # Bounded in entries only, 8,192 unique Via and From values of 30,000 characters each (a server configured for
    # 64 KB datagrams takes them) held half a gigabyte; long values are parsed and checked as ever, not kept.
    parser.clear_memo()
    pad = "x" * 3000
    for i in range(400):
        data = (GOOD.replace(b"branch=z9hG4bKx", f"branch=z9hG4bKx;p{i}={pad}".encode())
                .replace(b"tag=a1", f"tag=a{i};p={pad}".encode()))
        message = parse_message_untrusted(data)
        assert message.from_.param("p") == pad
    kept = [value for (_, value) in (*parser._MEMO, *parser._MEMO_OLD)]
    assert kept and max(len(value) for value in kept) <= 512
    # Short values still come back from the memo.
    first = parse_message_untrusted(GOOD)
    assert parse_message_untrusted(GOOD).to is first.to


def test_start_lines_kept_are_bounded_in_length() -> None:
    # Request-URIs and reason phrases come from the network: 2 x 1,024 start lines of 60 KB each would be kept.
    long_uri = b"sip:bob@na.gamesdk.test;p=" + b"y" * 3000
    for i in range(50):
        request = GOOD.replace(b"sip:bob@na.gamesdk.test SIP/2.0", long_uri + f"{i} SIP/2.0".encode(), 1)
        assert parse_message_untrusted(request).uri.endswith("y" * 3000 + str(i))
        response = (b"SIP/2.0 180 " + b"R" * 3000 + f"{i}".encode() + b"\r\n"
                    + GOOD.split(b"\r\n", 1)[1].replace(b"Contact: <sip:alice@127.0.0.1:7001>\r\n", b""))
        assert parse_message_untrusted(response).reason == "R" * 3000 + str(i)
    kept = [*parser._REQUEST_LINES, *parser._STATUS_LINES]
    assert kept and max(len(line) for line in kept) <= 512


def test_line_memo_gives_the_fields_of_a_fresh_split_and_stays_bounded() -> None:
    # Header lines already split are kept by their text (most lines repeat those of earlier messages): a message
    # parsed with them must equal one parsed without, and the memo holds at most _LINES_MAX lines of at most
    # _LINE_MEMO_ENTRY characters whatever the network sends.
    parser.clear_memo()
    fresh = parse_message_untrusted(GOOD)
    assert parser._LINES
    again = parse_message_untrusted(GOOD)
    assert list(again.headers) == list(fresh.headers) and _typed(GOOD) == (
        fresh.vias, fresh.from_, fresh.to, fresh.cseq, fresh.call_id, fresh.contacts, fresh.max_forwards)
    long_value = "x" * (parser._LINE_MEMO_ENTRY + 1)
    for i in range(parser._LINES_MAX + 500):
        parse_message_untrusted(GOOD.replace(b"Call-ID: c1@eu", f"Call-ID: c{i}@eu".encode()).replace(
            b"Content-Length: 0", f"Subject: {long_value}\r\nContent-Length: 0".encode()))
    assert len(parser._LINES) <= parser._LINES_MAX
    assert all(len(line) <= parser._LINE_MEMO_ENTRY for line in parser._LINES)
    parser.clear_memo()
    assert not parser._LINES
