"""The relay path's head reader (server/splice.py read_head and spliced, round 11: the lines split and partitioned
by C calls, the sequence of names looked up as a shape) held to round 10's reader (tests/server/splice_reference.py,
a loop over the lines): every head, plain or odd (compact names, whitespace around the colon, several Vias in one
line, repeated or folded lines, bare LF, lines without a colon, bodies, bad Content-Length, Max-Forwards out of
range), is read by both or refused by both, with the same fields, and spliced into the same bytes."""

from __future__ import annotations

import splice_reference as reference
from hypothesis import given, settings
from hypothesis import strategies as st

from server import splice

_VIA = ["SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc.1;rport", "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2;received=10.0.0.9;rport=7",
        "SIP/2.0/UDP a.invalid;branch=z9hG4bK3, SIP/2.0/TCP b.invalid;branch=z9hG4bK4"]
#: Lines a head may have more than once (several Vias; others the reader does not read).
_REPEATABLE = st.sampled_from([
    *(f"{name}: {value}" for name in ("Via", "v", "VIA", "Via ") for value in _VIA),
    "Route: <sip:r;lr>", "Proxy-Require: foo", "Contact: <sip:b@10.0.0.3:7002>", "X-Odd:", "Subject: a:b: c\t",
    "x-odd :\t v \t"])
#: Lines that replace one of the head's single fields (some unreadable) or make the head one to refuse.
_ODD = st.sampled_from([
    "From: <sip:a@x>;tag=f1", "f: <sip:a@x>;tag=f2", "To: <sip:b@x>", "t:<sip:b@x>;tag=t1", "TO :  <sip:b@x>;tag=t2 ",
    "Call-ID: c1@h", "i: c2", "Call-ID: a b", "Call-ID:", "CSeq: 2 INVITE", "CSeq: 3 BYE", "cseq: 4 ACK",
    "CSeq: x INVITE", "Max-Forwards: 70", "Max-Forwards:  12 ", "Max-Forwards: 256", "Max-Forwards: 7a",
    "Content-Length: 0", "l: 4", "Content-Length: 99", "Content-Length: -1", "No colon here",
    " folded continuation", "\tfolded", "Bad Name: x", ": empty name", "Via: SIP/2.0/UDP c;branch=z9hG4bK5\nX: bare lf",
    "Subject: bare\rcr",
])
_STARTS = st.sampled_from(["SIP/2.0 180 Ringing", "SIP/2.0 100 Trying", "SIP/2.0 200 OK", "SIP/2.0 18 Bad",
                           "SIP/2.0 700 No", "BYE sip:b@10.0.0.3:7002 SIP/2.0", "BYE sip:b@x SIP/2.0",
                           "BYE  sip:b@x SIP/2.0", "B@D sip:b@x SIP/2.0", "SIP/2.0 183 Session\nProgress"])
_BASE = ["Via: " + _VIA[0], "From: <sip:a@x>;tag=f", "To: <sip:b@x>;tag=t", "Call-ID: c@h", "CSeq: 3 BYE",
         "Content-Length: 4"]


@st.composite
def _datagrams(draw: st.DrawFn) -> bytes:
    lines = list(draw(st.permutations(_BASE)))
    for _ in range(draw(st.integers(0, 3))):
        lines.insert(draw(st.integers(0, len(lines))), draw(_REPEATABLE))
    if draw(st.integers(0, 3)) == 0:
        odd = draw(_ODD)
        at = draw(st.integers(0, len(lines) - 1))
        if draw(st.booleans()):
            lines[at] = odd  # in place of a field (or of an extra line)
        else:
            lines.insert(at, odd)
    body = draw(st.sampled_from([b"", b"abcd", b"v=0\r\n", b"abcdefgh"]))
    return ("\r\n".join([draw(_STARTS), *lines]) + "\r\n\r\n").encode() + body


_FIELDS = ("method", "uri", "status", "via_lines", "call_id", "cseq", "cseq_text", "to", "from_", "max_forwards",
           "routes", "proxy_require", "raw")


@settings(max_examples=600, deadline=None)
@given(data=_datagrams(), vias=st.sampled_from([["SIP/2.0/UDP up;branch=z9hG4bKu"], ["SIP/2.0/UDP o;branch=z9hG4bKo",
                                                                                    "SIP/2.0/UDP p;branch=z9hG4bKp"]]),
       lower=st.booleans(), mf=st.sampled_from([None, 0, 69]), new_start=st.booleans())
def test_the_head_reader_reads_and_splices_as_round_10s(data: bytes, vias: list[str], lower: bool, mf: int | None,
                                                        new_start: bool) -> None:
    ours = splice.read_head(data)
    theirs = reference.read_head(data)
    assert (ours is None) == (theirs is None), data
    if ours is None or theirs is None:
        return
    assert [getattr(ours, name) for name in _FIELDS] == [getattr(theirs, name) for name in _FIELDS]
    start = "BYE sip:c@10.0.0.4 SIP/2.0" if new_start else None
    assert splice.spliced(ours, start, vias, lower, mf) == reference.spliced(
        theirs, None if start is None else start.encode(), vias, lower, mf)


def test_the_shapes_memo_stays_bounded() -> None:
    # Shapes come from the network: a flood of new ones clears the memo instead of growing it.
    for n in range(splice._MEMO_MAX + 50):
        data = (f"SIP/2.0 180 Ringing\r\nVia: {_VIA[0]}\r\nX-{n}: 1\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\n"
                "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode()
        assert splice.read_head(data) is not None
    assert len(splice._SHAPES) <= splice._MEMO_MAX
