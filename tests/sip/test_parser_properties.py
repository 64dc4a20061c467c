"""Property tests of the untrusted SIP parsers (hypothesis).

Whatever bytes arrive, ``parse_message_untrusted`` and ``StreamParser`` either return a message or raise
``RemoteProtocolError``: never another exception. The typed accessors of a parsed message obey the same rule,
and a parsed message serializes to bytes that parse back to the same message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gamesdk.errors import RemoteProtocolError
from gamesdk.sip.message import Message, Request, Response
from gamesdk.sip.parser import StreamParser, parse_message_untrusted

CORPUS = Path(__file__).resolve().parent.parent / "data" / "rfc4475"
SEEDS: list[bytes] = sorted(p.read_bytes() for p in CORPUS.glob("*.dat")) + [
    (
        b"REGISTER sip:eu.gamesdk.test SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKnashds7;rport\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: <sip:alice@eu.gamesdk.test>;tag=456248\r\n"
        b"To: <sip:alice@eu.gamesdk.test>\r\n"
        b"Call-ID: 843817637684230@998sdasdh09\r\n"
        b"CSeq: 1826 REGISTER\r\n"
        b"Contact: <sip:alice@127.0.0.1:5070>;expires=3600\r\n"
        b'Authorization: Digest username="alice", realm="eu.gamesdk.test", nonce="abc", uri="sip:x", response="0"\r\n'
        b"Expires: 7200\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    ),
    (
        b"SIP/2.0 407 Proxy Authentication Required\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKnashds8;received=127.0.0.1\r\n"
        b"From: <sip:alice@eu.gamesdk.test>;tag=456248\r\n"
        b"To: <sip:bob@na.gamesdk.test>;tag=2493k59kd\r\n"
        b"Call-ID: 843817637684230@998sdasdh09\r\n"
        b"CSeq: 1 INVITE\r\n"
        b'Proxy-Authenticate: Digest realm="eu.gamesdk.test", nonce="f84f1cec41e6cbe5aea9c8e88d359", algorithm=SHA-256\r\n'
        b'Warning: 370 eu.gamesdk.test "insufficient uplink"\r\n'
        b"Content-Length: 0\r\n"
        b"\r\n"
    ),
]

# Bytes that matter to the SIP grammar, so that mutations hit separators rather than letters.
SPECIAL = [b";", b",", b":", b'"', b"\\", b"<", b">", b"=", b"%", b"@", b"?", b" ", b"\t", b"\r\n", b"\r\n ",
           b"\n", b"\r", b"\x00", b"\xff", b"\xc3", b"/", b"[", b"]", b"0", b"9" * 12, b"-1"]  # fmt: skip


def _accessors(message: Message) -> None:
    """Touch every typed accessor; each may raise only RemoteProtocolError."""
    reads: list[Callable[[], object]] = [
        lambda: message.call_id,
        lambda: message.cseq,
        lambda: message.vias,
        lambda: message.top_via,
        lambda: message.from_,
        lambda: message.to,
        lambda: message.contacts,
        lambda: message.contact_star,
        lambda: message.max_forwards,
        lambda: message.expires,
        lambda: message.content_length,
        lambda: message.content_type,
        lambda: message.warnings,
        lambda: message.reasons,
        lambda: message.routes,
        lambda: message.record_routes,
    ]
    if isinstance(message, Request):
        reads.append(lambda: message.request_uri)
    for read in reads:
        try:
            read()
        except RemoteProtocolError:
            pass


def _comparable(message: Request | Response) -> tuple[object, ...]:
    """The message without its Content-Length fields, which ``to_bytes`` rewrites to the body's length."""
    start = (
        (message.method, message.uri) if isinstance(message, Request) else (message.status, message.reason)
    )
    fields = [
        (name.lower(), value)
        for name, value in message.headers
        if name.lower() not in ("content-length", "l")
    ]
    return (start, message.version, fields, message.body)


def _check(data: bytes) -> None:
    try:
        message = parse_message_untrusted(data)
    except RemoteProtocolError as exc:
        assert 400 <= exc.status_hint < 600
        assert exc.message
        message = None
    parser = StreamParser()
    parser.feed(data)
    try:
        for _ in range(100):
            if parser.next_message() is None:
                break
    except RemoteProtocolError:
        pass
    if message is None:
        return
    _accessors(message)
    wire = message.to_bytes()
    again = parse_message_untrusted(wire)
    assert _comparable(again) == _comparable(message)
    assert again.to_bytes() == wire
    if message.headers.get("Content-Length") == str(len(message.body)):
        assert again == message


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        if not data:
            break
        pos = draw(st.integers(min_value=0, max_value=len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "dupline", "truncate"]))
        if kind == "insert":
            data[pos:pos] = draw(st.sampled_from(SPECIAL) | st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(min_value=1, max_value=8))]
        elif kind == "replace":
            data[pos : pos + 1] = draw(st.sampled_from(SPECIAL))
        elif kind == "dupline":
            start = data.rfind(b"\n", 0, pos) + 1
            end = data.find(b"\n", pos)
            if end > start:
                data[start:start] = data[start : end + 1]
        else:
            del data[pos:]
    return bytes(data)


_PLAUSIBLE: dict[str, list[str]] = {
    "Via": ["SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa;rport", "SIP / 2.0 / TCP h.example ; branch = z9hG4bKb",
            "SIP/2.0/UDP [::1]:5060;received=::1, SIP/2.0/TLS a.b;maddr=[2001:db8::9]"],
    "From": ["<sip:alice@eu.gamesdk.test>;tag=1", '"A \\"B\\"" <sips:a@b:5061;transport=tls>;tag=x',
             "sip:a@b;tag=2", "Alice <tel:+1-555>;tag=3"],
    "To": ["<sip:bob@na.gamesdk.test>", "sip:bob@na.gamesdk.test;tag=9", '"" <sip:b@c>'],
    "Call-ID": ["abc@127.0.0.1", "x", "a84b4c76e66710@[::1]"],
    "CSeq": ["1 INVITE", "2147483647 OPTIONS", "0009 BYE"],
    "Contact": ["*", "<sip:a@b>;expires=60, <sip:c@d>;q=0.5", "sip:a@b;expires=0"],
    "Max-Forwards": ["70", "0", "255"],
    "Expires": ["3600", "0"],
    "Route": ["<sip:p1.example;lr>, <sip:p2.example;lr>"],
    "Warning": ['370 eu.gamesdk.test "insufficient uplink"'],
    "Reason": ['SIP;cause=580;text="Precondition Failure"', "Q.850;cause=16"],
    "Date": ["Sat, 13 Nov 2010 23:29:00 GMT"],
}  # fmt: skip
_REQUIRED_NAMES = ["Via", "From", "To", "Call-ID", "CSeq"]
_NAME_FORMS = {"Via": ["Via", "v", "VIA"], "From": ["From", "f"], "To": ["To", "t"], "Call-ID": ["Call-ID", "i"],
               "Contact": ["Contact", "m"]}  # fmt: skip
_VALUE_ALPHABET = st.sampled_from(
    list('abcAZ09.-_:;,=<>"\\@%/?[] \tsip') + ["sip:", "SIP/2.0/UDP ", "tag=", "\r\n "]
)


@st.composite
def assembled(draw: st.DrawFn) -> bytes:
    """Messages assembled from plausible pieces: a start line, the required fields, extra fields, a body.

    Each field value is either a plausible one or a random string over the characters that matter to SIP.
    """
    start = draw(
        st.sampled_from(
            [
                "INVITE sip:bob@na.gamesdk.test SIP/2.0",
                "OPTIONS sip:x SIP/2.0",
                "BYE sips:[::1]:5061 SIP/2.0",
                "SIP/2.0 200 OK",
                "SIP/2.0 100 ",
                "SIP/3.0 200 OK",
                "INVITE sip:a@b SIP/1.0",
            ]
        )
    )
    names = _REQUIRED_NAMES + draw(st.lists(st.sampled_from(sorted(_PLAUSIBLE)), max_size=5))
    names = draw(st.permutations(names))
    lines = [start]
    for name in names:
        shown = draw(st.sampled_from(_NAME_FORMS.get(name, [name])))
        if draw(st.integers(min_value=0, max_value=4)) == 0:
            value = "".join(draw(st.lists(_VALUE_ALPHABET, max_size=24)))
        else:
            value = draw(st.sampled_from(_PLAUSIBLE[name]))
            if name == "CSeq" and not start.startswith("SIP/"):
                value = value.split()[0] + " " + start.split()[0]
        lines.append(f"{shown}:{draw(st.sampled_from(['', ' ', '   ', chr(9)]))}{value}")
    body = draw(st.binary(max_size=40))
    if draw(st.booleans()):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600))
@example(data=b"")
@example(data=b"\r\n\r\n")
@example(data=b"SIP/2.0 \r\n\r\n")
@example(data=b"INVITE  SIP/2.0\r\n\r\n")
@example(
    data=b"BYE sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h\r\nf: <sip:a@b>\r\nt: <sip:b@c>\r\ni: c\r\nCSeq: 1 BYE\r\nX: a\r\n \r\n\r\n"
)
def test_arbitrary_bytes_parse_or_raise_the_one_error(data: bytes) -> None:
    _check(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated())
def test_mutated_messages_parse_or_raise_the_one_error(data: bytes) -> None:
    _check(data)


@settings(max_examples=200, deadline=None)
@given(data=assembled())
def test_assembled_messages_parse_or_raise_the_one_error(data: bytes) -> None:
    _check(data)


@settings(max_examples=60, deadline=None)
@given(seed=st.sampled_from(SEEDS), chunk=st.integers(min_value=1, max_value=64))
def test_stream_parser_in_chunks_never_raises_anything_else(seed: bytes, chunk: int) -> None:
    parser = StreamParser()
    for start in range(0, len(seed), chunk):
        parser.feed(seed[start : start + chunk])
        try:
            parser.next_message()
        except RemoteProtocolError:
            return


def test_seeds_include_parseable_messages() -> None:
    # The mutation tests only mean something if many seeds parse before they are mutated.
    parsed = 0
    for seed in SEEDS:
        try:
            parse_message_untrusted(seed)
            parsed += 1
        except RemoteProtocolError:
            pass
    assert parsed >= 25
