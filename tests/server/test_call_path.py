"""The call path (issue 16): an INVITE with credentials in the plain shape is read from its bytes (server/splice.py's
read_call, RegionalServer._read_plainly) into the Request the full parse and check make of it, without parsing
every header. As for the login (tests/server/test_login_path.py), each test sends the same datagrams to a node with
the path and to one without (``challenge_path = False``: every INVITE parsed and validated in full) and expects the
very same datagrams out (the 100, the INVITE forwarded to the callee, or the refusal; its retransmission too), the
same counts and the same transactions. Hypothesis varies the INVITE, its credentials, its body, Route, Record-Route
and Max-Forwards over shapes inside and just outside the plain one."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from head_variants import varied_head
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_invite_challenge_path import (
    _NAMES,
    _RURIS,
    BODY,
    PEER,
    _log_in,
    _nodes,
    _plain,
    _state,
    invite_values,
)
from test_login_path import _credentials

from gamesdk.address import Address
from gamesdk.sip.message import Request
from gamesdk.sip.parser import parse_message_untrusted, validate_untrusted
from server import splice
from server.splice import CALL_SPANS, read_call, read_invite

DOMAIN = "eu.gamesdk.test"
_NONCE = re.compile(rb'nonce="([^"]+)"')
CALLER = ("127.0.0.1", 5099)
CALLEE = ("127.0.0.1", 5070)
#: A game offer as the SDK writes it, and bodies the policy reads otherwise (or refuses).
_BODIES = [BODY,
           ("v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           "m=application 50002 UDP/GSDK gsdk\r\nb=AS:64\r\na=gsdk-format:pong/1;tick=60\r\na=gsdk-class:action\r\n"
           "a=gsdk-qos:lat=50;jit=10;loss=10000;pps=60\r\na=gsdk-sec:chacha20-poly1305\r\n"),
           "", "v=0\r\n", "not sdp at all", BODY.replace("m=application", "m=audio"), "\r\n", BODY + "trailing"]
_CALL_EXTRA = ["Route: <sip:127.0.0.1:5060;lr>", "Route: <sip:10.0.0.1;lr>", "Record-Route: <sip:10.0.0.1;lr>",
               "Record-Route: <sip:127.0.0.1:5060;lr>", "Max-Forwards: 10", "Proxy-Require: foo", "Require: 100rel",
               "Proxy-Authorization: Digest username=\"bob\", realm=\"other\"", "Authorization: Digest x",
               "Via: SIP/2.0/UDP 10.0.0.7;branch=z9hG4bKlow", "Identity: abc", "Supported: timer", "Expires: 60",
               "X-Thing: 1", "Content-Encoding: gzip", "Accept: application/sdp"]
_CALL_NAMES = {**_NAMES, "Proxy-Authorization": ["Proxy-Authorization", "proxy-authorization",
                                                 "PROXY-AUTHORIZATION", "Authorization"],
               "Subject": ["Subject", "s"]}


@st.composite
def calls(draw: st.DrawFn) -> tuple[bytes, str, str]:
    """An INVITE with credentials of the plain shape (SIPp's) with a few of its parts (at most three) varied: its
    text with a placeholder for the credentials' value, its Request-URI, and "auth" when the credentials are to
    be varied too."""
    varied = draw(st.sets(st.sampled_from(["ruri", "host", "Via", "Max-Forwards", "From", "To", "Call-ID", "CSeq",
                                           "Contact", "Allow", "User-Agent", "Content-Length", "name", "sep", "case",
                                           "twice", "drop", "extra", "body", "end", "order", "utf8", "auth"]),
                          max_size=3))

    def pick(part: str, plain: str, choices: list[str]) -> str:
        return draw(st.sampled_from(choices)) if part in varied else plain

    n = draw(st.integers(1, 10**6))
    host = pick("host", DOMAIN, [DOMAIN, "127.0.0.1", "127.0.0.1:5060", "EU.GAMESDK.TEST", "other.example"])
    body = pick("body", BODY, _BODIES)
    length = len(body.encode()) if body != BODY + "trailing" else len(BODY)
    ruri = pick("ruri", _RURIS[0], _RURIS)
    values = invite_values(pick, n, host, length, leg=2, credentials="\x00credentials",
                           subject="pong/1 ranked match")
    text = varied_head(draw, varied, f"INVITE {ruri} SIP/2.0", values, _CALL_NAMES, _CALL_EXTRA, body)
    return text.encode(), ruri, "auth" if "auth" in varied else ""


_SOURCES = itertools.count(1)


def _challenged(nodes: tuple[object, ...], n: int, source: Address) -> str:
    """The nonce of the 407 both nodes answer a plain INVITE from ``source`` with (the same)."""
    fast, full = nodes
    first = _plain(n, source)
    challenge = fast.handle_datagram(first, source, 10.0)  # type: ignore[attr-defined]
    assert challenge == full.handle_datagram(first, source, 10.0)  # type: ignore[attr-defined]
    match = _NONCE.search(challenge[0][0]) if challenge else None
    return match.group(1).decode() if match is not None else "0" * 32


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=calls(), data=st.data(), source_kind=st.sampled_from(["caller", "caller", "stranger", "peer"]),
       callee_in=st.booleans())
def test_the_call_path_answers_every_invite_as_the_full_path(tmp_path: Path, drawn: tuple[bytes, str, str],
                                                             data: st.DataObject, source_kind: str,
                                                             callee_in: bool) -> None:
    text, ruri, kind = drawn
    fast, full = _nodes(tmp_path, digest_algorithms=("MD5", "SHA-256"))
    n = next(_SOURCES)
    source = {"caller": CALLER, "stranger": (f"192.0.{n % 250}.{n // 250 % 250 + 1}", 5000 + n % 1000),
              "peer": PEER}[source_kind]
    _log_in((fast, full), "alice", CALLER, 9.0)
    if callee_in:
        _log_in((fast, full), "bob", CALLEE, 9.0)
    nonce = _challenged((fast, full), n, source)
    credentials = _credentials(data.draw, {kind}, "alice", fast.login.realm, nonce, ruri, "INVITE")
    second = text.replace(b"\x00credentials", credentials.encode())
    request = read_call(second)
    if request is not None:
        _spans_as_found(request, second)
    for now in (10.1, 10.6):  # and again: a retransmission gets the same
        assert fast.handle_datagram(second, source, now) == full.handle_datagram(second, source, now)
        assert _state(fast) == _state(full)
    assert fast.handle_timer(50.0) == full.handle_timer(50.0)
    assert _state(fast) == _state(full)


def _spans_as_found(request: Request, data: bytes) -> dict[str, object]:
    """The reader's cache without the places it noted for forwarding (CALL_SPANS), which must be what
    forward_request finds without them: the start line's end, the head's end and the lines it edits."""
    cache = dict(request.headers._cache)
    first, end, edited = cache.pop(CALL_SPANS)  # type: ignore[misc]
    assert end == splice._head_end(data) and first == data.find(b"\r\n")
    assert edited == splice._lines(data, end, splice._EDITED, splice._EDITED_NAMES)
    return cache


def _call(n: int, nonce: str, realm: str, source: Address = CALLER) -> bytes:
    from gamesdk.sip.digest import compute_ha1, compute_response

    response = compute_response(ha1=compute_ha1("alice", realm, "apw"), nonce=nonce, method="INVITE",
                                uri=f"sip:bob@{DOMAIN}", cnonce="6b8b4567", nc=1)
    auth = (f'Proxy-Authorization: Digest username="alice",realm="{realm}",cnonce="6b8b4567",nc=00000001,qop=auth,'
            f'uri="sip:bob@{DOMAIN}",nonce="{nonce}",response="{response}",algorithm=MD5')
    return (_plain(n, source).replace(b"CSeq: 1 INVITE", b"CSeq: 2 INVITE")
            .replace(f"branch=z9hG4bK-1-{n}-1".encode(), f"branch=z9hG4bK-1-{n}-2".encode())
            .replace(b"\r\nAllow:", f"\r\n{auth}\r\nAllow:".encode()))


def test_a_calls_second_invite_is_read_as_the_full_parse_makes_it(tmp_path: Path) -> None:
    fast, full = _nodes(tmp_path, digest_algorithms=("MD5", "SHA-256"))
    _log_in((fast, full), "alice", CALLER, 1.0)
    _log_in((fast, full), "bob", CALLEE, 1.0)
    for n in range(3):  # the lines the reader keeps come back
        data = _call(n, _challenged((fast, full), n, CALLER), fast.login.realm)
        request = read_call(data)
        parsed = parse_message_untrusted(data, lazy=True)
        validate_untrusted(parsed)
        assert request is not None and isinstance(parsed, Request)
        assert request == parsed and request.body == parsed.body
        assert _spans_as_found(request, data) == parsed.headers._cache
        assert request.request_uri == parsed.request_uri and request.from_ == parsed.from_
        assert request.raw_unchanged() == parsed.raw_unchanged()
        got = fast.handle_datagram(data, CALLER, 10.2)
        assert got == full.handle_datagram(data, CALLER, 10.2)
        assert got[0][0].startswith(b"SIP/2.0 100 Trying\r\n") and got[1][0].startswith(b"INVITE sip:bob@")
        assert got[1][1] == CALLEE
    assert _state(fast) == _state(full)
    assert fast.stats.requests == full.stats.requests
    # What the reader leaves to the full path.
    data = _call(9, "abc", fast.login.realm)
    assert read_call(data) is not None and read_invite(data) is None
    assert read_call(data.replace(b"Proxy-Authorization: ", b"Proxy-Authorization:  ")) is None
    assert read_call(data.replace(b"Proxy-Authorization: ", b"proxy-authorization: ")) is None
    assert read_call(data.replace(b"Subject:", b"Route: <sip:127.0.0.1:5060;lr>\r\nSubject:")) is None
    assert read_call(data.replace(b"Subject:", b"Record-Route: <sip:10.0.0.1;lr>\r\nSubject:")) is None
    assert read_call(data.replace(b"Subject:", b"Proxy-Authorization: Digest x\r\nSubject:")) is None
    assert read_call(data.replace(b"Max-Forwards: 70", b"Max-Forwards: 0")) is None
    assert read_call(data.replace(b"Call-ID:", b"i:")) is None
    assert read_call(data[:-1]) is None  # the body cut short
    assert read_call(_plain(9)) is None
