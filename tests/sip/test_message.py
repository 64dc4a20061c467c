"""The SIP message model: headers, typed accessors, responses, serialization."""

from __future__ import annotations

import pytest

from gamesdk.errors import RemoteProtocolError
from gamesdk.sip.digest import parse_auth_params_untrusted
from gamesdk.sip.headers import CSeq, Reason, Via, Warning, split_header_values
from gamesdk.sip.message import Headers, Request, Response, response_for
from gamesdk.sip.parser import parse_message_untrusted
from gamesdk.sip.uri import NameAddr, SipUri

INVITE = (
    b"INVITE sip:bob@na.gamesdk.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:alice@eu.gamesdk.test>;tag=1928301774\r\n'
    b"To: <sip:bob@na.gamesdk.test>\r\n"
    b"Call-ID: a84b4c76e66710@127.0.0.1\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@127.0.0.1:5070>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def test_headers_are_case_insensitive_and_compact_forms_match() -> None:
    h = Headers([("v", "SIP/2.0/UDP a"), ("VIA", "SIP/2.0/UDP b, SIP/2.0/UDP c"), ("i", "x")])
    assert h.get("Via") == "SIP/2.0/UDP a"
    assert h.get_all("via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b, SIP/2.0/UDP c"]
    assert h.values("Via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b", "SIP/2.0/UDP c"]
    assert "call-id" in h and "CALL-ID" in h and "From" not in h
    h.insert_first("Via", "SIP/2.0/UDP first")
    assert h.values("v")[0] == "SIP/2.0/UDP first"
    assert h.remove_first("Via") == "SIP/2.0/UDP first"
    h.set("Call-ID", "y")
    assert h.get("i") == "y" and h.count("call-id") == 1
    assert h.remove("via") == 2 and "v" not in h


def test_replace_first_puts_the_value_where_the_first_one_was() -> None:
    # One edit in place: the other fields stay where they are (remove_first + insert_first would put the new
    # value before the next Via line instead, wherever that is).
    new = "SIP/2.0/UDP new"
    cases = [
        ([("Via", "SIP/2.0/UDP a"), ("To", "<sip:b@x>"), ("v", "SIP/2.0/UDP b")],
         [("Via", new), ("To", "<sip:b@x>"), ("v", "SIP/2.0/UDP b")], "SIP/2.0/UDP a"),
        # the first line holds two values (a comma inside quotes is not a separator): the rest keeps its line
        ([("From", "<sip:a@x>"), ("v", 'SIP/2.0/UDP a;x="1,2", SIP/2.0/UDP b'), ("Via", "SIP/2.0/UDP c")],
         [("From", "<sip:a@x>"), ("Via", new), ("v", "SIP/2.0/UDP b"), ("Via", "SIP/2.0/UDP c")],
         'SIP/2.0/UDP a;x="1,2"'),
        ([("Via", 'SIP/2.0/UDP a;x="1,2"'), ("To", "<sip:b@x>")], [("Via", new), ("To", "<sip:b@x>")],
         'SIP/2.0/UDP a;x="1,2"'),
    ]
    for items, expected, old in cases:
        headers = Headers(items)
        _ = headers.cached("via", lambda: "stale")
        assert headers.replace_first("Via", new) == old
        assert list(headers) == expected
        assert headers.cached("via", lambda: "fresh") == "fresh"  # the change cleared what was parsed
    nothing = Headers([("To", "<sip:b@x>")])
    assert nothing.replace_first("Via", new) is None and list(nothing) == [("To", "<sip:b@x>")]


def test_typed_accessors() -> None:
    msg = parse_message_untrusted(INVITE)
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert msg.request_uri == SipUri.parse("sip:bob@na.gamesdk.test")
    assert msg.cseq == CSeq(314159, "INVITE")
    assert msg.top_via.branch == "z9hG4bK776asdhds"
    assert msg.top_via.sent_by == ("127.0.0.1", 5070)
    assert msg.top_via.rport == ""
    assert msg.from_.tag == "1928301774" and msg.from_.display_name == "Alice"
    assert msg.to.tag is None
    assert msg.contacts[0].uri.port == 5070
    assert msg.max_forwards == 70
    assert msg.body == b"v=0\n"


def test_exact_round_trip_and_content_length_fixed_on_change() -> None:
    msg = parse_message_untrusted(INVITE)
    assert msg.to_bytes() == INVITE
    msg.body = b"v=0\r\nchanged\r\n"
    again = parse_message_untrusted(msg.to_bytes())
    assert again.body == b"v=0\r\nchanged\r\n"
    assert again.headers.get("Content-Length") == str(len(again.body))


def test_accessor_cache_follows_header_changes() -> None:
    msg = parse_message_untrusted(INVITE)
    assert msg.top_via.host == "127.0.0.1"
    msg.headers.insert_first("Via", "SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKproxy")
    assert msg.top_via.branch == "z9hG4bKproxy"
    assert len(msg.vias) == 2


def test_response_for_copies_dialog_headers_and_adds_tag() -> None:
    req = parse_message_untrusted(INVITE)
    assert isinstance(req, Request)
    resp = response_for(req, 180, to_tag="xyz")
    assert resp.reason == "Ringing"
    assert resp.to.tag == "xyz"
    assert resp.vias == req.vias and resp.cseq == req.cseq and resp.call_id == req.call_id
    trying = response_for(req, 100, to_tag="xyz")
    assert trying.to.tag is None
    parsed = parse_message_untrusted(resp.to_bytes())
    assert isinstance(parsed, Response) and parsed.status == 180


def test_bad_values_raise_remote_protocol_error() -> None:
    msg = Request("INVITE", "sip:a@b", [("CSeq", "abc INVITE"), ("Max-Forwards", "300")])
    with pytest.raises(RemoteProtocolError):
        _ = msg.cseq
    with pytest.raises(RemoteProtocolError):
        _ = msg.max_forwards
    with pytest.raises(RemoteProtocolError):
        _ = msg.call_id


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@eu.gamesdk.test",
        "sips:bob:secret@[2001:db8::1]:5061;transport=tls;lr",
        "sip:user;par=u%40example.net@example.com",
        "sip:127.0.0.1:5062;transport=udp",
        "tel:+1-555-0100",
    ],
)
def test_uri_round_trip(text: str) -> None:
    assert str(SipUri.parse(text)) == text


@pytest.mark.parametrize(
    "text", ["sip:", "sip:a@b:99999", "sip:a b@c", "<sip:a@b>", "sip:a@b@c", "sip:a%zz@b"]
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        SipUri.parse(text)


def test_name_addr_forms() -> None:
    na = NameAddr.parse('"Bell, Alexander" <sip:a.g.bell@example.com>;tag=a48s')
    assert na.display_name == "Bell, Alexander" and na.tag == "a48s"
    bare = NameAddr.parse("sip:a@b.example;tag=1")
    assert bare.uri.params == () and bare.tag == "1"
    assert NameAddr.parse(str(na)) == na
    for bad in ["Bell, Alexander <sip:a@b>", '"unterminated <sip:a@b>', "< sip:a@b >", "sip:a@b?x=y"]:
        with pytest.raises(RemoteProtocolError):
            NameAddr.parse(bad)


def test_header_values() -> None:
    assert split_header_values('"a,b" <sip:x@y>, <sip:z@w;p=1,2>') == ['"a,b" <sip:x@y>', "<sip:z@w;p=1,2>"]
    via = Via.parse("SIP / 2.0 / UDP host.example ; branch = z9hG4bK1")
    assert via.branch == "z9hG4bK1" and via.sent_by == ("host.example", 5060)
    assert str(Via.parse(str(via))) == str(via)
    w = Warning.parse('370 eu.gamesdk.test "insufficient uplink in eu-dsl"')
    assert (w.code, w.text) == (370, "insufficient uplink in eu-dsl")
    assert Warning.parse(str(w)) == w
    r = Reason.parse('SIP;cause=580;text="Precondition Failure"')
    assert (r.protocol, r.cause, r.text) == ("SIP", 580, "Precondition Failure")
    assert Reason.parse(str(r)) == r
    scheme, params = parse_auth_params_untrusted('Digest realm="eu", nonce="n1", algorithm=SHA-256, qop="auth"')
    assert scheme == "Digest" and params == {
        "realm": "eu",
        "nonce": "n1",
        "algorithm": "SHA-256",
        "qop": "auth",
    }
