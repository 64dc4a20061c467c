"""The parser's plain path (one loop over a CRLF head, issue 16) must give exactly what the general path gives:
the same message (fields, names, body, the typed values it stored, the bytes it kept) or, when it declines, the
general path's answer. Checked on the RFC 4475 torture corpus, the property tests' seeds, their mutations and
assembled messages, in full and lazily (then with ``validate_untrusted``)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings

from gamesdk.errors import RemoteProtocolError
from gamesdk.sip import parser
from gamesdk.sip.message import Request, Response
from gamesdk.sip.parser import MAX_MESSAGE_BYTES, parse_message_untrusted, validate_untrusted


def _properties() -> ModuleType:
    path = Path(__file__).resolve().parent / "test_parser_properties.py"
    spec = importlib.util.spec_from_file_location("_sip_parser_properties", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_PROPS = _properties()
SEEDS: list[bytes] = _PROPS.SEEDS

PLAIN_INVITE = (
    b"INVITE sip:bob@eu.gamesdk.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-7-2;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "alice" <sip:alice@eu.gamesdk.test>;tag=7uac\r\n'
    b"To: <sip:bob@eu.gamesdk.test>\r\n"
    b"Call-ID: 7-1@127.0.0.1\r\n"
    b"CSeq: 2 INVITE\r\n"
    b"Contact: <sip:alice@127.0.0.1:5061;transport=udp>\r\n"
    b"Expires: 60\r\n"
    b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\r\n"
)


def _state(message: Request | Response) -> tuple[object, ...]:
    start: tuple[object, ...]
    if isinstance(message, Request):
        start = (message.method, message.uri, message.request_uri)
    else:
        start = (message.status, message.reason)
    cache = {k: v for k, v in message.headers._cache.items() if k != parser._PLAIN_KEY}
    return (type(message).__name__, start, message.version, list(message.headers._items), message.body, cache)


def _outcome(parse: Callable[[], Request | Response], validate: bool = False) -> object:
    try:
        message = parse()
        if validate:
            validate_untrusted(message)
    except RemoteProtocolError as exc:
        return ("error", exc.status_hint, exc.message)
    return _state(message)


def _general(data: bytes, lazy: bool) -> Request | Response:
    return parser._parse_general(data, MAX_MESSAGE_BYTES, lazy)


def _check_same(data: bytes) -> None:
    assert _outcome(lambda: parse_message_untrusted(data)) == _outcome(lambda: _general(data, False))
    assert _outcome(lambda: parse_message_untrusted(data, lazy=True)) == _outcome(lambda: _general(data, True))
    assert _outcome(lambda: parse_message_untrusted(data, lazy=True), validate=True) == \
        _outcome(lambda: _general(data, True), validate=True)


def test_plain_path_takes_the_everyday_message() -> None:
    end = PLAIN_INVITE.index(b"\r\n\r\n")
    for lazy in (False, True):
        message = parser._parse_plain(PLAIN_INVITE, end, lazy)
        assert message is not None
        assert _state(message) == _state(_general(PLAIN_INVITE, lazy))
    _check_same(PLAIN_INVITE)


def test_plain_path_takes_most_of_the_corpus() -> None:
    # The comparisons below only mean something if the plain path answers for many messages itself.
    taken = 0
    for seed in SEEDS:
        end = seed.find(b"\r\n\r\n")
        if end > 0 and parser._parse_plain(seed, end, False) is not None:
            taken += 1
    assert taken >= 15


@pytest.mark.parametrize("index", range(len(SEEDS)))
def test_corpus_parses_the_same_on_both_paths(index: int) -> None:
    _check_same(SEEDS[index])


@pytest.mark.parametrize(("old", "new"), [
    (b"Max-Forwards: 70", b"Max-Forwards: 70\r\nMax-Forwards: 70"),   # twice: the general path's error
    (b"Expires: 60", b"Expires: 60\r\nExpires: 61"),
    (b"Expires: 60", b"Expires: 6x"),
    (b"Max-Forwards: 70", b"Max-Forwards: 256"),
    (b"Max-Forwards: 70", b"Max-Forwards: 00000000070"),
    (b"Date: Sat, 13 Nov 2010 23:29:00 GMT", b"Date: Sat, 13 Nov 2010 23:29:00 EST"),
    (b"Contact: <sip:alice@127.0.0.1:5061;transport=udp>", b"Contact: <sip:alice@127.0.0.1:5061"),
    (b"Contact: <sip:alice@127.0.0.1:5061;transport=udp>", b"Contact: *\r\nm: <sip:a@b>"),
    (b"CSeq: 2 INVITE", b"CSeq: 2 BYE"),
    (b"Call-ID: 7-1@127.0.0.1", b"Call-ID: 7-1 @127.0.0.1"),
    (b"Call-ID: 7-1@127.0.0.1", b"i: 7-1@127.0.0.1\r\nCall-ID: 7-2@127.0.0.1"),
    (b"Content-Length: 4", b"Content-Length: 40"),
    (b"Content-Length: 4", b"l: 4"),
    (b"Content-Length: 4", b"Content-Length: 4\r\nContent-Length: 4"),
    (b"Content-Type: application/sdp", b"Content-Type: application/sdp\r\nc: text/plain"),
    (b"To: <sip:bob@eu.gamesdk.test>", b"To :  <sip:bob@eu.gamesdk.test>\t"),
    (b"To: <sip:bob@eu.gamesdk.test>", b"To: <sip:bob@eu.gamesdk.test>\r\n ;tag=1"),
    (b"To: <sip:bob@eu.gamesdk.test>", b"To: <sip:bob@eu.gamesdk.test>\rX"),
    (b"To: <sip:bob@eu.gamesdk.test>", b"To: <sip:bob@eu.gamesdk.test>\nX: y"),
    (b"To: <sip:bob@eu.gamesdk.test>", b"T@: <sip:bob@eu.gamesdk.test>"),
    (b"Via: SIP/2.0/UDP", b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKa, SIP/2.0/UDP"),
    (b"Via: SIP/2.0/UDP", b"v: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKa\r\nVia: SIP/2.0/UDP"),
    (b"INVITE sip:bob@eu.gamesdk.test SIP/2.0", b"INVITE sip:bob@eu.gamesdk.test?x=y SIP/2.0"),
    (b"INVITE sip:bob@eu.gamesdk.test SIP/2.0", b"INVITE sip:bob@eu.gamesdk.test SIP/2.1"),
    (b"INVITE sip:bob@eu.gamesdk.test SIP/2.0", b"SIP/2.0 180 Ringing"),
    (b"INVITE sip:bob@eu.gamesdk.test SIP/2.0", b"SIP/2.0 099 Early"),
    (b"INVITE sip:bob@eu.gamesdk.test SIP/2.0", b"SIP/2.0 200"),
    (b"INVITE sip:bob@eu.gamesdk.test SIP/2.0", b"SIP/2.0 200 OK "),
    (b"alice", "al\u00efce".encode()),
    (b"alice", b"al\xffce"),
])
def test_edited_message_parses_the_same_on_both_paths(old: bytes, new: bytes) -> None:
    data = PLAIN_INVITE.replace(old, new, 1)
    assert data != PLAIN_INVITE
    _check_same(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_PROPS.mutated())
def test_mutated_messages_parse_the_same_on_both_paths(data: bytes) -> None:
    _check_same(data)


@settings(max_examples=300, deadline=None)
@given(data=_PROPS.assembled())
def test_assembled_messages_parse_the_same_on_both_paths(data: bytes) -> None:
    _check_same(data)


@pytest.mark.parametrize("line", [b"Allow", b"Via", b"Content-Type", b"X-Never-Seen-Before"])
@pytest.mark.parametrize("lazy", [False, True])
def test_a_line_without_a_colon_is_refused_even_under_a_known_name(line: bytes, lazy: bool) -> None:
    # The names' table once answered before the colon was looked for: "Allow" alone passed as an empty Allow
    # once a message with an Allow field had been parsed, and was refused before that.
    parse_message_untrusted(PLAIN_INVITE.replace(b"Expires: 60", b"Allow: INVITE\r\nVia: SIP/2.0/UDP h"))
    for data in (PLAIN_INVITE.replace(b"Expires: 60", line), PLAIN_INVITE.replace(b"Expires: 60\r\n", b"Expires: 60\n" + line + b"\r\n")):
        with pytest.raises(RemoteProtocolError, match="Bad header line"):
            parse_message_untrusted(data, lazy=lazy)
