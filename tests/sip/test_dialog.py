"""Dialogs: UAC and UAS dialog state, the end-to-end ACK for a 2xx, BYE with Reason, routing, CSeq rules."""

from __future__ import annotations

import pytest

from gamesdk.errors import LocalProtocolError, RemoteProtocolError
from gamesdk.sip.dialog import (
    DialogId,
    build_ack_for_2xx,
    build_bye,
    build_in_dialog_request,
    dialog_from_2xx,
    dialog_from_invite,
    incoming_dialog_id,
    receive_in_dialog_request,
)
from gamesdk.sip.headers import Reason
from gamesdk.sip.message import Message, Request, Response, response_for
from gamesdk.sip.parser import parse_message_untrusted
from gamesdk.sip.uri import NameAddr

INVITE_TEXT = (
    "INVITE sip:bob@na.example SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-inv;rport\r\n"
    "Max-Forwards: 70\r\n"
    'From: "Alice" <sip:alice@eu.example>;tag=a1\r\n'
    "To: <sip:bob@na.example>\r\n"
    "Call-ID: call-d@test\r\n"
    "CSeq: 2 INVITE\r\n"
    "Contact: <sip:alice@127.0.0.1:5070>\r\n"
    'Proxy-Authorization: Digest username="alice", realm="eu.example", nonce="n", uri="sip:bob@na.example", '
    'response="00", algorithm=MD5, qop=auth, nc=00000001, cnonce="c"\r\n'
    "Content-Length: 0\r\n\r\n"
)


def parse(data: bytes | str) -> Message:
    return parse_message_untrusted(data.encode() if isinstance(data, str) else data)


def invite() -> Request:
    msg = parse(INVITE_TEXT)
    assert isinstance(msg, Request)
    return msg


def ok(
    inv: Request, *, record_route: tuple[str, ...] = (), contact: str | None = "<sip:bob@127.0.0.1:5080>"
) -> Response:
    extra = [("Record-Route", rr) for rr in record_route]
    if contact is not None:
        extra.append(("Contact", contact))
    msg = parse(response_for(inv, 200, to_tag="b1", extra=extra).to_bytes())
    assert isinstance(msg, Response)
    return msg


def wire(request: Request) -> Request:
    """The request as the peer parses it."""
    msg = parse(request.to_bytes())
    assert isinstance(msg, Request)
    return msg


# --- UAC -------------------------------------------------------------------------------------------------


def test_uac_dialog_from_2xx() -> None:
    inv = invite()
    d = dialog_from_2xx(inv, ok(inv))
    assert d.id == DialogId("call-d@test", "a1", "b1")
    assert d.local_seq == 2 and d.remote_seq is None
    assert str(d.remote_target) == "sip:bob@127.0.0.1:5080"
    assert d.route_set == ()
    assert d.local_uri.tag is None and d.remote_uri.tag is None
    assert d.via_sent_by == "127.0.0.1:5070" and d.is_uac


def test_ack_for_2xx_goes_end_to_end_with_a_new_branch() -> None:
    inv = invite()
    d = dialog_from_2xx(inv, ok(inv))
    ack = wire(build_ack_for_2xx(d, inv, "z9hG4bK-ack1"))
    assert (ack.method, ack.uri) == ("ACK", "sip:bob@127.0.0.1:5080")  # the remote target, not the AOR
    assert ack.top_via.branch == "z9hG4bK-ack1" and len(ack.vias) == 1
    assert (ack.cseq.seq, ack.cseq.method) == (2, "ACK")  # the INVITE's number (13.2.2.4)
    assert ack.from_.tag == "a1" and ack.to.tag == "b1"
    assert ack.from_.display_name == "Alice"
    assert ack.call_id == "call-d@test"
    assert "Route" not in ack.headers  # no Record-Route, no Route: straight to the peer
    assert ack.headers.get("Proxy-Authorization") == inv.headers.get("Proxy-Authorization")
    assert ack.max_forwards == 70
    assert "Contact" not in ack.headers
    # Building it again (for a 2xx retransmission) does not move the dialog's CSeq.
    assert d.local_seq == 2


def test_bye_with_reason_and_next_cseq() -> None:
    inv = invite()
    d = dialog_from_2xx(inv, ok(inv))
    bye, d2 = build_bye(d, "z9hG4bK-bye1", reason=Reason("SIP", 580, "insufficient uplink in eu-dsl"))
    assert bye.headers.get("Reason") == 'SIP;cause=580;text="insufficient uplink in eu-dsl"'
    parsed = wire(bye)
    assert parsed.reasons == [Reason("SIP", 580, "insufficient uplink in eu-dsl")]
    assert (parsed.cseq.seq, parsed.cseq.method) == (3, "BYE")
    assert parsed.uri == "sip:bob@127.0.0.1:5080"
    assert parsed.from_.tag == "a1" and parsed.to.tag == "b1"
    assert d2.local_seq == 3 and d.local_seq == 2  # values, not mutation
    assert "Proxy-Authorization" not in parsed.headers
    again, d3 = build_in_dialog_request(d2, "INFO", branch="z9hG4bK-i")
    assert again.cseq.seq == 4 and d3.local_seq == 4


def test_bye_without_reason() -> None:
    inv = invite()
    bye, _ = build_bye(dialog_from_2xx(inv, ok(inv)), "z9hG4bK-b")
    assert "Reason" not in bye.headers


def test_target_refresh_carries_contact_and_body() -> None:
    inv = invite()
    d = dialog_from_2xx(inv, ok(inv))
    reinvite, _ = build_in_dialog_request(
        d, "INVITE", branch="z9hG4bK-re", body=b"v=0\r\n", content_type="application/sdp"
    )
    parsed = wire(reinvite)
    assert [str(c.uri) for c in parsed.contacts] == ["sip:alice@127.0.0.1:5070"]
    assert parsed.body == b"v=0\r\n" and parsed.content_type == "application/sdp"
    with pytest.raises(LocalProtocolError):
        build_in_dialog_request(d, "INFO", branch="z9hG4bK-x", body=b"x")
    with pytest.raises(LocalProtocolError):
        build_in_dialog_request(d, "ACK", branch="z9hG4bK-x")


def test_loose_route_set_is_reversed_for_the_uac() -> None:
    inv = invite()
    rr = ("<sip:p2.na.example;lr>", "<sip:p1.eu.example;lr>")
    d = dialog_from_2xx(inv, ok(inv, record_route=rr))
    assert [str(r.uri) for r in d.route_set] == ["sip:p1.eu.example;lr", "sip:p2.na.example;lr"]
    ack = wire(build_ack_for_2xx(d, inv, "z9hG4bK-a"))
    assert ack.uri == "sip:bob@127.0.0.1:5080"
    assert [str(r.uri) for r in ack.routes] == ["sip:p1.eu.example;lr", "sip:p2.na.example;lr"]


def test_strict_route_puts_first_route_in_request_uri() -> None:
    inv = invite()
    d = dialog_from_2xx(inv, ok(inv, record_route=("<sip:p2.example>", "<sip:p1.example>")))
    bye, _ = build_bye(d, "z9hG4bK-s")
    parsed = wire(bye)
    # RFC 3261 12.2.1.1: strict router first -> it becomes the Request-URI, the remote target goes last.
    assert parsed.uri == "sip:p1.example"
    assert [str(r.uri) for r in parsed.routes] == ["sip:p2.example", "sip:bob@127.0.0.1:5080"]


def test_bad_2xx_is_a_remote_error() -> None:
    inv = invite()
    with pytest.raises(RemoteProtocolError, match="Contact"):
        dialog_from_2xx(inv, ok(inv, contact=None))
    no_tag = parse(response_for(inv, 200, extra=[("Contact", "<sip:b@h>")]).to_bytes())
    assert isinstance(no_tag, Response)
    with pytest.raises(RemoteProtocolError, match="tag"):
        dialog_from_2xx(inv, no_tag)
    with pytest.raises(LocalProtocolError):
        dialog_from_2xx(inv, parse(response_for(inv, 486, to_tag="x").to_bytes()))  # type: ignore[arg-type]


# --- UAS -------------------------------------------------------------------------------------------------


def test_uas_dialog_and_its_bye() -> None:
    inv = invite()
    d = dialog_from_invite(inv, "b1", "<sip:bob@127.0.0.1:5080>")
    assert d.id == DialogId("call-d@test", "b1", "a1")
    assert d.remote_seq == 2 and d.local_seq == 0 and not d.is_uac
    assert d.via_sent_by == "127.0.0.1:5080"
    # The id the UAS computes for a request from the UAC.
    bye_from_uac, _ = build_bye(dialog_from_2xx(inv, ok(inv)), "z9hG4bK-u")
    assert incoming_dialog_id(wire(bye_from_uac)) == d.id
    bye, d2 = build_bye(d, "z9hG4bK-uas", reason=Reason("SIP", 488, "QoS answer unacceptable"))
    parsed = wire(bye)
    assert parsed.uri == "sip:alice@127.0.0.1:5070"  # the INVITE's Contact
    assert parsed.from_.uri.user == "bob" and parsed.from_.tag == "b1"
    assert parsed.to.uri.user == "alice" and parsed.to.tag == "a1"
    assert parsed.to.display_name == "Alice"
    assert parsed.cseq.seq == 1 and d2.local_seq == 1
    assert parsed.top_via.sent_by == ("127.0.0.1", 5080)


def test_uas_keeps_record_route_order() -> None:
    text = INVITE_TEXT.replace(
        "Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nRecord-Route: <sip:p1;lr>, <sip:p2;lr>\r\n"
    )
    inv = parse(text)
    assert isinstance(inv, Request)
    d = dialog_from_invite(inv, "b1", NameAddr.parse("<sip:bob@127.0.0.1:5080>"))
    assert [str(r.uri) for r in d.route_set] == ["sip:p1;lr", "sip:p2;lr"]


def test_uas_needs_a_contact_in_the_invite() -> None:
    inv = parse(INVITE_TEXT.replace("Contact: <sip:alice@127.0.0.1:5070>\r\n", ""))
    assert isinstance(inv, Request)
    with pytest.raises(RemoteProtocolError, match="Contact"):
        dialog_from_invite(inv, "b1", "<sip:bob@127.0.0.1:5080>")


def test_in_dialog_cseq_order_and_target_refresh() -> None:
    inv = invite()
    d = dialog_from_invite(inv, "b1", "<sip:bob@127.0.0.1:5080>")
    uac = dialog_from_2xx(inv, ok(inv))
    info, uac = build_in_dialog_request(uac, "INFO", branch="z9hG4bK-1")
    d = receive_in_dialog_request(d, wire(info))
    assert d.remote_seq == 3
    # ACK and CANCEL reuse the INVITE's number: no change, no error.
    assert receive_in_dialog_request(d, wire(build_ack_for_2xx(uac, inv, "z9hG4bK-2"))) == d
    stale = INVITE_TEXT.replace("CSeq: 2 INVITE", "CSeq: 1 OPTIONS").replace("INVITE sip", "OPTIONS sip")
    old = parse(stale)
    assert isinstance(old, Request)
    with pytest.raises(RemoteProtocolError) as info_exc:
        receive_in_dialog_request(d, old)
    assert info_exc.value.status_hint == 500
    moved = parse(
        INVITE_TEXT.replace("CSeq: 2", "CSeq: 5").replace(
            "<sip:alice@127.0.0.1:5070>", "<sip:alice@127.0.0.1:6000>"
        )
    )
    assert isinstance(moved, Request)
    d = receive_in_dialog_request(d, moved)
    assert str(d.remote_target) == "sip:alice@127.0.0.1:6000" and d.remote_seq == 5
