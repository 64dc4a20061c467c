"""Forwarding by splicing bytes gives the message the serialiser would have made (header for header, same
body), only without decoding and re-encoding what the proxy does not edit."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gamesdk.sip.message import Request, Response
from gamesdk.sip.parser import parse_message_untrusted
from server.proxy_responses import mark_received, marked_via
from server.splice import forward_request, read_head, spliced, with_vias

OUR_VIA = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc.def1.0123456789abcdef;rport"
SOURCE = ("127.0.0.2", 7001)

_OTHER = [("From", "<sip:alice@eu.gamesdk.test>;tag=a1"), ("To", "<sip:bob@eu.gamesdk.test>;tag=b1"),
          ("Call-ID", "c1@127.0.0.2"), ("Contact", "<sip:alice@127.0.0.2:7001>"), ("Subject", "a   game"),
          ("X-Odd", "")]


def _text(start: str, vias: list[tuple[str, str]], others: list[tuple[str, str]], mf: str | None, body: bytes,
          cseq: str) -> bytes:
    lines = [start, *(f"{n}: {v}" for n, v in vias), *(f"{n}: {v}" for n, v in others), f"CSeq: {cseq}"]
    if mf is not None:
        lines.insert(1 + len(vias), f"Max-Forwards: {mf}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _same(a: Request | Response, b: Request | Response) -> None:
    # Field order matters among fields of one name (RFC 3261 section 7.3.1), so that is what is compared: the
    # serialiser moves a lone Via it edited to the end of the head, splicing leaves it where it was.
    for which in ("via", "other"):
        assert [(k, v) for k, _, v in a.headers._items if (k == "via") == (which == "via")] == \
            [(k, v) for k, _, v in b.headers._items if (k == "via") == (which == "via")]
    assert a.body == b.body
    if isinstance(a, Request):
        assert isinstance(b, Request) and (a.method, a.uri) == (b.method, b.uri)


VIA_HOSTS = st.sampled_from(["127.0.0.2:7001", "127.0.0.9:7001", "alice.invalid"])
VIA_PARAMS = st.sampled_from([";branch=z9hG4bK-1", ";branch=z9hG4bK-1;rport", ";rport;branch=z9hG4bK-2",
                              ";branch=z9hG4bK-3;rport=9;received=127.0.0.2"])


@settings(max_examples=200, deadline=None)
@given(host=VIA_HOSTS, params=VIA_PARAMS, via_name=st.sampled_from(["Via", "v", "VIA"]),
       second=st.booleans(), mf=st.sampled_from([None, "70", "1"]), order=st.permutations(_OTHER),
       body=st.sampled_from([b"", b"v=0\r\n", b"x\r\n\r\ny"]), new_uri=st.booleans(), hide=st.booleans())
def test_forwarded_request_equals_the_serialised_copy(host: str, params: str, via_name: str, second: bool,
                                                      mf: str | None, order: list[tuple[str, str]], body: bytes,
                                                      new_uri: bool, hide: bool) -> None:
    vias = [(via_name, f"SIP/2.0/UDP {host}{params}")]
    if second:
        vias.append(("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-up"))
    raw = _text("BYE sip:bob@127.0.0.3:7002 SIP/2.0", vias, list(order), mf, body, "2 BYE")
    request = parse_message_untrusted(raw, lazy=True)
    assert isinstance(request, Request)
    uri = "sip:bob@127.0.0.4:7003" if new_uri else request.uri
    # The serialiser's way (ProxyCore._forward_copy + _push_via).
    copy = Request(request.method, uri, request.headers.copy(), request.body, request.version)
    max_forwards = request.max_forwards
    copy.headers.set("Max-Forwards", str(69 if max_forwards is None else max_forwards - 1))
    if hide:
        copy.headers.remove("Via")
    else:
        mark_received(copy.headers, request.top_via, SOURCE)
    copy.headers.insert_first("Via", OUR_VIA)
    expected = parse_message_untrusted(copy.to_bytes())
    # The splicing way (ProxyCore._spliced).
    via = request.top_via
    top = None
    if not hide and (via.host != SOURCE[0] or via.rport is not None):
        top = marked_via(via, request.headers.get("Via") or "", SOURCE)
    line = None if uri == request.uri else f"BYE {uri} SIP/2.0".encode()
    spliced = forward_request(raw, request_line=line, our_via=OUR_VIA, top_via=top, hide=hide,
                              max_forwards=69 if max_forwards is None else max_forwards - 1)
    assert spliced is not None
    _same(parse_message_untrusted(spliced), expected)
    # What the proxy does not edit arrives byte for byte.
    assert b"Subject: a   game\r\n" in spliced and spliced.endswith(b"\r\n\r\n" + body)


@settings(max_examples=100, deadline=None)
@given(order=st.permutations(_OTHER), via_name=st.sampled_from(["Via", "v"]),
       extra=st.sampled_from([[], [("P-Gamesdk-Reservation", "r1"), ("Identity", "x.y.z")]]),
       body=st.sampled_from([b"", b"v=0\r\n"]), upstream=st.sampled_from([1, 2]))
def test_response_with_the_requests_vias_equals_the_serialised_one(order: list[tuple[str, str]], via_name: str,
                                                                   extra: list[tuple[str, str]], body: bytes,
                                                                   upstream: int) -> None:
    vias = [(via_name, OUR_VIA)]  # what came back: ours alone (the request went on hidden)
    raw = _text("SIP/2.0 180 Ringing", vias, list(order), None, body, "1 INVITE")
    request_vias = [f"SIP/2.0/UDP 127.0.0.{i}:7001;branch=z9hG4bK-{i};rport=7001" for i in range(2, 2 + upstream)]
    response = parse_message_untrusted(raw, lazy=True)
    spliced = with_vias(raw, request_vias, extra)
    assert spliced is not None
    response.headers.set("Via", request_vias[-1])
    for value in reversed(request_vias[:-1]):
        response.headers.insert_first("Via", value)
    for name, value in extra:
        response.headers.add(name, value)
    _same(parse_message_untrusted(spliced), parse_message_untrusted(response.to_bytes()))


def test_shapes_it_does_not_handle_are_left_to_the_serialiser() -> None:
    plain = _text("SIP/2.0 200 OK", [("Via", OUR_VIA), ("Via", "SIP/2.0/UDP h;branch=z9hG4bK-1")], _OTHER, None,
                  b"", "1 BYE")
    assert with_vias(plain, ["SIP/2.0/UDP h;branch=z9hG4bK-1"]) is not None
    folded = plain.replace(b"Subject: a   game", b"Subject: a\r\n   game")
    bare_lf = plain.replace(b"\r\n", b"\n")
    no_via = b"\r\n".join(line for line in plain.split(b"\r\n") if not line.startswith(b"Via"))
    for raw in (folded, bare_lf, no_via, plain.split(b"\r\n\r\n")[0]):
        assert with_vias(raw, ["SIP/2.0/UDP h;branch=z9hG4bK-1"]) is None
    two_on_a_line = plain.replace(f"Via: {OUR_VIA}\r\nVia: ".encode(), f"Via: {OUR_VIA}, ".encode())
    assert forward_request(two_on_a_line, request_line=None, our_via=OUR_VIA, top_via="x", hide=False,
                           max_forwards=69) is None


def test_lazily_parsed_bytes_go_once_the_headers_change() -> None:
    raw = _text("SIP/2.0 180 Ringing", [("Via", OUR_VIA)], _OTHER, None, b"", "1 INVITE")
    response = parse_message_untrusted(raw + b"junk after the body", lazy=True)
    assert response.raw_unchanged() == raw  # bytes after Content-Length are not part of the message
    assert response.to.tag == "b1"  # reading keeps them
    response.headers.add("X-New", "1")
    assert response.raw_unchanged() is None
    assert parse_message_untrusted(raw).raw_unchanged() is None  # only the lazy parse keeps them


def test_a_lazy_parse_still_checks_what_an_answer_would_copy() -> None:
    """Any answer copies Via, From, To, Call-ID and CSeq: a relayed message gets them checked as in full, so a
    refusal of it is never malformed (found by tests/server/test_mutation.py)."""
    import pytest

    from gamesdk.errors import RemoteProtocolError

    good = _text("BYE sip:bob@127.0.0.3:7002 SIP/2.0", [("Via", "SIP/2.0/UDP h;branch=z9hG4bK-1")], _OTHER, "70",
                 b"", "2 BYE")
    parse_message_untrusted(good, lazy=True)
    for bad in (good.replace(b"Call-ID: c1@127.0.0.2\r\n", b"Call-ID: c1@127.0.0.2\r\nCall-ID: c2\r\n"),
                good.replace(b"From: <sip:alice@eu.gamesdk.test>;tag=a1", b"From: <sip:alice@eu"),
                good.replace(b"To: <sip:bob@eu.gamesdk.test>;tag=b1\r\n", b"")):
        with pytest.raises(RemoteProtocolError):
            parse_message_untrusted(bad, lazy=True)
    # What the relay does not read waits until it is read.
    lazy = parse_message_untrusted(good.replace(b"Max-Forwards: 70", b"Max-Forwards: lots"), lazy=True)
    with pytest.raises(RemoteProtocolError):
        _ = lazy.max_forwards


_CREDENTIAL_LINES = [("Proxy-Authorization", 'Digest username="alice",realm="eu",nonce="n",uri="sip:b",response="r"'),
                     ("Identity", "forged.by.alice;info=<https://x.invalid/c>"), ("y", "compact.form")]


@settings(max_examples=150, deadline=None)
@given(order=st.permutations(_OTHER + _CREDENTIAL_LINES), mf=st.sampled_from([None, "70"]),
       add=st.sampled_from([[], ["Route: <sip:edge.invalid;lr>"], ["Identity: a.b.c", "P-Gamesdk-Grant: g1"]]),
       hide=st.booleans(), body=st.sampled_from([b"", b"v=0\r\n"]))
def test_a_players_invite_spliced_equals_the_serialised_copy(order: list[tuple[str, str]], mf: str | None,
                                                             add: list[str], hide: bool, body: bytes) -> None:
    """The INVITE of a player authenticated here: its credentials and Identity out, a Path's Route, our Identity
    and the policy's headers in (ProxyCore._forward_new's two ways)."""
    raw = _text("INVITE sip:bob@eu.gamesdk.test SIP/2.0", [("Via", "SIP/2.0/UDP 127.0.0.2:7001;branch=z9hG4bK-1")],
                list(order), mf, body, "2 INVITE")
    request = parse_message_untrusted(raw, lazy=True)
    assert isinstance(request, Request)
    max_forwards = 69 if request.max_forwards is None else request.max_forwards - 1
    copy = Request(request.method, "sip:bob@127.0.0.3:7002", request.headers.copy(), request.body)
    copy.headers.set("Max-Forwards", str(max_forwards))
    for name in ("Proxy-Authorization", "Identity"):
        copy.headers.remove(name)
    for line in add:
        name, _, value = line.partition(": ")
        copy.headers.add(name, value)
    if hide:
        copy.headers.remove("Via")
    copy.headers.insert_first("Via", OUR_VIA)
    spliced = forward_request(raw, request_line=b"INVITE sip:bob@127.0.0.3:7002 SIP/2.0", our_via=OUR_VIA,
                              top_via=None, hide=hide, max_forwards=max_forwards,
                              drop=(b"proxy-authorization", b"identity", b"y"), add=add)
    assert spliced is not None
    _same(parse_message_untrusted(spliced), parse_message_untrusted(copy.to_bytes()))
    assert b"forged" not in spliced and b"Digest" not in spliced and spliced.endswith(b"\r\n\r\n" + body)


_OTHER_LINES = ["From: <sip:a@eu.gamesdk.test>;tag=1", "To: <sip:b@eu.gamesdk.test>;tag=2", "Call-ID: c-1@h",
                "Content-Length: 0", "Contact: <sip:b@10.0.0.2>", "Subject: x"]


@settings(max_examples=300)
@given(request=st.booleans(),
       vias=st.lists(st.tuples(st.sampled_from(["Via", "v", "VIA"]),
                               st.sampled_from(["SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport",
                                                "SIP/2.0/UDP h.example;branch=z9hG4bKx", "SIP/2.0/TCP a, SIP/2.0/UDP b"])),
                     min_size=1, max_size=3),
       mf=st.sampled_from([None, "Max-Forwards: 70", "max-forwards: 5"]), order=st.randoms(use_true_random=False),
       new_mf=st.integers(0, 255), lower=st.booleans())
def test_spliced_edits_a_read_head_as_forward_request_and_with_vias_do(request: bool, vias: list[tuple[str, str]],
                                                                        mf: str | None, order: object,
                                                                        new_mf: int, lower: bool) -> None:
    """The relay path's splice (from the places read_head noted) and the general ones (which look for the lines
    again) give the same bytes: Via lines wherever they are, Max-Forwards before, between or after them, or none."""
    import random
    assert isinstance(order, random.Random)
    lines = [f"{name}: {value}" for name, value in vias] + _OTHER_LINES[:4] + (
        [mf] if mf is not None else []) + _OTHER_LINES[4:]
    order.shuffle(lines)
    cseq = "CSeq: 3 BYE"
    first = "BYE sip:b@10.0.0.2 SIP/2.0" if request else "SIP/2.0 180 Ringing"
    raw = "\r\n".join([first, cseq, *lines, "", ""]).encode()
    head = read_head(raw)
    assert head is not None
    ours = ["SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKours", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;received=x"]
    if request:
        line = b"BYE sip:b@10.0.0.3 SIP/2.0"
        if lower and "," not in head.via_lines[0]:  # (a top line of several Vias: the serialiser's)
            assert spliced(head, line, [ours[0], ours[1]], True, new_mf) == forward_request(
                raw, request_line=line, our_via=ours[0], top_via=ours[1], hide=False, max_forwards=new_mf)
        assert spliced(head, None, [ours[0]], False, new_mf) == forward_request(
            raw, request_line=None, our_via=ours[0], top_via=None, hide=True, max_forwards=new_mf)
    else:
        assert spliced(head, None, ours, False, None) == with_vias(raw, ours)


# The plain readers check their values by byte tables (server.splice._all_in) where the grammar is written as these
# expressions: each check must take exactly what its expression takes, near misses (spaces at the ends, "@" at
# the edges or twice, a DEL, non-ASCII, CR/LF) included. (test_login_path holds the REGISTER's From and ASCII text.)
_GRAMMAR_CHARS = st.sampled_from([*"aZ09.!%*_+~-`'@ \t\r\n\"<>;:=,/\x00\x7f", "é", "\u2028"])
_VALUES = st.lists(_GRAMMAR_CHARS, max_size=12).map("".join) | st.text(max_size=12)


@settings(max_examples=3000, deadline=None)
@given(value=_VALUES)
@example(value="a@b@c")
@example(value="@a")
@example(value="a@")
@example(value=" a")
@example(value="a ")
@example(value="a\x7fb")
@example(value="é")
@example(value="")
@example(value="a`b'c")
def test_the_byte_table_checks_take_what_their_expressions_take(value: str) -> None:
    import re

    from server import splice

    token = re.compile(splice.TOKEN)
    call_id = re.compile(r"[A-Za-z0-9.!%*_+~-]+(?:@[A-Za-z0-9.!%*_+~-]+)?")
    assert (splice._printable(value) is not None) == (splice._TEXT.fullmatch(value) is not None)
    assert splice._is_token(value) == (token.fullmatch(value) is not None)
    assert (splice._call_id_of(value) is not None) == (call_id.fullmatch(value) is not None)
    from_value = f'"alice" <sip:alice@eu.gamesdk.test>;tag={value}'
    assert (splice._from_of(from_value) is not None) == (splice._FROM.fullmatch(from_value) is not None)
