"""The callee's side of the user agent against a scripted caller and server: broken offers, a caller that never
ACKs, and the dialog publication lifecycle (DESIGN section 4). No sockets; a fake clock."""

from __future__ import annotations

from dataclasses import replace

import pytest
from agent_kit import (
    BOB,
    SCRIPTED_PEER,
    SCRIPTED_SERVER,
    Net,
    config,
    make_agent,
    of_type,
    offer_terms,
    requests,
    responses,
    unique,
)

from gamesdk.errors import LocalProtocolError, NegotiationError
from gamesdk.events import InviteCancelled, InviteReceived, SessionEnded, SessionEstablished, SessionFailed
from gamesdk.qos.negotiation import Requirements
from gamesdk.sdp.codec import format_sdp
from gamesdk.sdp.game import GameMedia, Role, game_to_sdp
from gamesdk.session.agent import CallState, UserAgent
from gamesdk.sip.dialog import build_ack_for_2xx, build_bye, dialog_from_2xx
from gamesdk.sip.dialog_info import parse_dialog_info_untrusted
from gamesdk.sip.message import Headers, Request, Response, response_for
from gamesdk.sip.transaction_client import build_cancel

CALLER_CONTACT = f"<sip:alice@{SCRIPTED_PEER[0]}:{SCRIPTED_PEER[1]}>"


def offer_body(**changes: object) -> bytes:
    game = GameMedia(terms=offer_terms(**changes), address="127.0.0.1", port=46000, public_key=b"\x05" * 32,
                     session_id=55)
    return format_sdp(game_to_sdp(game, username="alice", sess_id=1, sess_version=1, role=Role.OFFER)).encode()


def invite_request(body: bytes, *, branch: str = "z9hG4bK-inv1", call_id: str = "call-1@alice") -> Request:
    headers = Headers([
        ("Via", f"SIP/2.0/UDP {SCRIPTED_PEER[0]}:{SCRIPTED_PEER[1]};branch={branch}"),
        ("Max-Forwards", "69"), ("From", "\"Alice\" <sip:alice@eu.gamesdk.test>;tag=alice-tag"),
        ("To", "<sip:bob@na.gamesdk.test>"), ("Call-ID", call_id), ("CSeq", "2 INVITE"),
        ("Contact", CALLER_CONTACT), ("Content-Type", "application/sdp"),
    ])
    return Request("INVITE", "sip:bob@127.0.0.1:6002", headers, body)


def callee(**changes: object) -> tuple[Net, UserAgent]:
    net = Net()
    net.add_scripted(SCRIPTED_SERVER)
    net.add_scripted(SCRIPTED_PEER)
    agent = net.add_agent(make_agent(config("bob", "pw", "na.gamesdk.test", SCRIPTED_SERVER, **changes), BOB, "b"))
    return net, agent


def invited(**changes: object) -> tuple[Net, UserAgent, Request]:
    net, agent = callee(**changes)
    invite = invite_request(offer_body(latency_ms=80))
    net.send(SCRIPTED_PEER, BOB, invite)
    events = net.take(BOB)
    assert [type(e) for e in events] == [InviteReceived]
    received = events[0]
    assert isinstance(received, InviteReceived)
    assert (received.caller, received.caller_name) == ("sip:alice@eu.gamesdk.test", "Alice")
    assert received.offer.qos.latency_ms == 80
    assert [r.status for r in responses(net.inbox(SCRIPTED_PEER), "INVITE")] == [180]
    return net, agent, invite


def answered(**changes: object) -> tuple[Net, UserAgent, Request, Response]:
    net, agent, invite = invited(**changes)
    agent.accept(invite.call_id, net.now)
    oks = [r for r in responses(net.inbox(SCRIPTED_PEER), "INVITE") if r.status == 200]
    assert len(oks) == 1
    assert agent.session_state(invite.call_id) is CallState.ANSWERED
    return net, agent, invite, oks[0]


def confirmed(**changes: object) -> tuple[Net, UserAgent, Request, Response]:
    net, agent, invite, ok = answered(**changes)
    ack = build_ack_for_2xx(dialog_from_2xx(invite, ok), invite, "z9hG4bK-ack1")
    net.send(SCRIPTED_PEER, BOB, ack)
    assert [type(e) for e in net.take(BOB)] == [SessionEstablished]
    return net, agent, invite, ok


def test_malformed_offer_is_refused_488_with_a_warning_naming_the_line() -> None:
    net, agent = callee()
    body = offer_body().replace(b"a=gsdk-qos:lat=100", b"a=gsdk-qos:lat=fast")
    assert b"lat=fast" in body
    net.send(SCRIPTED_PEER, BOB, invite_request(body))
    answers = responses(net.inbox(SCRIPTED_PEER), "INVITE")
    assert [r.status for r in answers] == [488]
    warning = answers[0].headers.get("Warning") or ""
    assert warning.startswith("399 ") and "gsdk-qos" in warning
    assert net.take(BOB) == []
    assert agent.session_state("call-1@alice") is None


def test_offer_without_a_game_stream_is_refused_488() -> None:
    net, _agent = callee()
    net.send(SCRIPTED_PEER, BOB, invite_request(b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"))
    answers = responses(net.inbox(SCRIPTED_PEER), "INVITE")
    assert [r.status for r in answers] == [488] and answers[0].headers.get("Warning")


def test_unsatisfiable_requirements_decline_488_and_raise() -> None:
    net, agent, invite = invited()
    with pytest.raises(NegotiationError):
        agent.accept(invite.call_id, net.now, requirements=Requirements(
            formats=offer_terms(format="chess/2").formats, receive_kbps=64))
    answers = responses(net.inbox(SCRIPTED_PEER), "INVITE")
    assert [r.status for r in answers] == [488] and answers[0].headers.get("Warning")
    with pytest.raises(LocalProtocolError):
        agent.accept(invite.call_id, net.now)


def test_accept_sends_200_with_the_answer_and_the_ack_confirms() -> None:
    net, _agent, invite, ok = answered()
    assert ok.to.tag and ok.contacts and str(ok.contacts[0].uri) == "sip:bob@127.0.0.1:6002"
    assert ok.headers.get("Content-Type") == "application/sdp" and b"a=gsdk-kx:" in ok.body
    # without the ACK the 2xx is retransmitted (RFC 6026), with it the retransmissions stop
    net.run(1.6)  # T1 = 0.5 s: sent again at +0.5 s and +1.5 s
    assert [r.status for r in responses(net.inbox(SCRIPTED_PEER), "INVITE")] == [200, 200]
    ack = build_ack_for_2xx(dialog_from_2xx(invite, ok), invite, "z9hG4bK-ack1")
    net.send(SCRIPTED_PEER, BOB, ack)
    events = net.take(BOB)
    assert [type(e) for e in events] == [SessionEstablished]
    est = events[0]
    assert isinstance(est, SessionEstablished) and not est.agreement.is_caller
    assert est.agreement.peer_addr == ("127.0.0.1", 46000)
    net.run(10.0)
    assert responses(net.inbox(SCRIPTED_PEER), "INVITE") == []
    # a retransmitted ACK changes nothing
    net.send(SCRIPTED_PEER, BOB, ack)
    assert net.take(BOB) == []


def test_ack_from_another_dialog_does_not_confirm() -> None:
    net, agent, invite, ok = answered()
    dialog = dialog_from_2xx(invite, ok)
    wrong = build_ack_for_2xx(replace(dialog, remote_tag="someone-else"), invite, "z9hG4bK-ack-wrong")
    net.send(SCRIPTED_PEER, BOB, wrong)
    assert net.take(BOB) == [] and agent.session_state(invite.call_id) is CallState.ANSWERED


def test_caller_that_never_acks_gets_a_bye_and_the_application_a_408() -> None:
    net, agent, _invite, ok = answered()
    net.run(64 * agent.config.timers.t1 + 1)
    events = net.take(BOB)
    failed = of_type(events, SessionFailed)
    assert len(failed) == 1 and failed[0].status == 408, events  # type: ignore[attr-defined]
    assert of_type(events, SessionEstablished) == []
    byes = unique(requests(net.inbox(SCRIPTED_PEER), "BYE"))
    assert len(byes) == 1
    bye = byes[0]
    assert bye.uri == CALLER_CONTACT[1:-1] and bye.to.tag == "alice-tag" and bye.from_.tag == ok.to.tag
    assert "cause=408" in (bye.headers.get("Reason") or "")


def test_cancel_before_the_answer_gives_487_and_invite_cancelled() -> None:
    net, agent, invite = invited()
    net.send(SCRIPTED_PEER, BOB, build_cancel(invite))
    got = net.inbox(SCRIPTED_PEER)
    assert [r.status for r in responses(got, "CANCEL")] == [200]
    assert [r.status for r in responses(got, "INVITE")] == [487]
    events = net.take(BOB)
    assert [type(e) for e in events] == [InviteCancelled]
    with pytest.raises(LocalProtocolError):
        agent.accept(invite.call_id, net.now)
    # a CANCEL for an INVITE we never saw (other branch) gets 481 (RFC 3261 9.2)
    stray = build_cancel(invite_request(offer_body(), branch="z9hG4bK-other", call_id="call-2@alice"))
    net.send(SCRIPTED_PEER, BOB, stray)
    assert [r.status for r in responses(net.inbox(SCRIPTED_PEER), "CANCEL")] == [481]


def test_answer_timeout_sends_480() -> None:
    net, _agent, _invite = invited(answer_timeout_s=5.0)
    net.run(5.1)
    assert [type(e) for e in net.take(BOB)] == [InviteCancelled]
    assert [r.status for r in responses(net.inbox(SCRIPTED_PEER), "INVITE")] == [480]


def test_same_invite_under_another_branch_is_a_merged_request_482() -> None:
    net, _agent, invite = invited()
    again = invite_request(invite.body, branch="z9hG4bK-forked")
    net.send(SCRIPTED_PEER, BOB, again)
    assert [r.status for r in responses(net.inbox(SCRIPTED_PEER), "INVITE")] == [482]
    assert net.take(BOB) == []


def test_publication_confirmed_refreshed_recovered_and_terminated() -> None:
    net, agent, invite, ok = confirmed(session_refresh_s=1000.0)
    publishes = requests(net.inbox(SCRIPTED_SERVER), "PUBLISH")
    assert len(publishes) == 1
    first = publishes[0]
    assert first.headers.get("Event") == "dialog" and first.headers.get("Expires") == "90"
    assert first.headers.get("SIP-If-Match") is None
    entry = parse_dialog_info_untrusted(first.body).dialogs[0]
    assert (entry.state.value, entry.call_id, entry.direction.value) == ("confirmed", invite.call_id, "recipient")
    net.send(SCRIPTED_SERVER, BOB, response_for(first, 200, to_tag="srv", extra=[("SIP-ETag", "etag-1")]))
    # the refresh comes after publish_refresh_s with SIP-If-Match and no body (RFC 3903 4.2)
    net.run(agent.config.publish_refresh_s - 1)
    assert requests(net.inbox(SCRIPTED_SERVER), "PUBLISH") == []
    net.run(1.5)
    refreshes = unique(requests(net.inbox(SCRIPTED_SERVER), "PUBLISH"))
    assert len(refreshes) == 1
    assert refreshes[0].headers.get("SIP-If-Match") == "etag-1" and refreshes[0].body == b""
    # the server lost the publication (restart): 412, and the state is published again at once (RFC 3903 4.1)
    net.send(SCRIPTED_SERVER, BOB, response_for(refreshes[0], 412, to_tag="srv"))
    again = unique(requests(net.inbox(SCRIPTED_SERVER), "PUBLISH"))
    assert len(again) == 1 and again[0].headers.get("SIP-If-Match") is None
    assert parse_dialog_info_untrusted(again[0].body).dialogs[0].state.value == "confirmed"
    net.send(SCRIPTED_SERVER, BOB, response_for(again[0], 200, to_tag="srv", extra=[("SIP-ETag", "etag-2")]))
    assert net.take(BOB) == []
    # BYE from the caller: the publication says terminated, under the current entity tag
    bye, _ = build_bye(dialog_from_2xx(invite, ok), "z9hG4bK-bye1")
    net.send(SCRIPTED_PEER, BOB, bye)
    assert [type(e) for e in net.take(BOB)] == [SessionEnded]
    last = unique(requests(net.inbox(SCRIPTED_SERVER), "PUBLISH"))
    assert len(last) == 1 and last[0].headers.get("SIP-If-Match") == "etag-2"
    assert parse_dialog_info_untrusted(last[0].body).dialogs[0].state.value == "terminated"
    # and no more refreshes for a session that is over
    net.send(SCRIPTED_SERVER, BOB, response_for(last[0], 200, to_tag="srv", extra=[("SIP-ETag", "etag-3")]))
    net.run(3 * agent.config.publish_refresh_s)
    assert requests(net.inbox(SCRIPTED_SERVER), "PUBLISH") == []


def test_publish_challenge_is_answered() -> None:
    net, _agent, _invite, _ok = confirmed(session_refresh_s=1000.0)
    first = requests(net.inbox(SCRIPTED_SERVER), "PUBLISH")[0]
    net.send(SCRIPTED_SERVER, BOB, response_for(first, 401, to_tag="srv", extra=[
        ("WWW-Authenticate", 'Digest realm="na.gamesdk.test", nonce="n1", algorithm=MD5, qop="auth"')]))
    retry = requests(net.inbox(SCRIPTED_SERVER), "PUBLISH")
    assert len(retry) == 1 and (retry[0].headers.get("Authorization") or "").startswith("Digest ")
    assert retry[0].cseq.seq == first.cseq.seq + 1 and retry[0].body == first.body


def test_required_extension_is_refused_420() -> None:
    net, _agent = callee()
    invite = invite_request(offer_body())
    invite.headers.add("Require", "100rel, timer")
    net.send(SCRIPTED_PEER, BOB, invite)
    answers = responses(net.inbox(SCRIPTED_PEER), "INVITE")
    assert [r.status for r in answers] == [420]
    assert answers[0].headers.get("Unsupported") == "100rel, timer"
    assert net.take(BOB) == []


def test_offer_in_another_format_is_refused_415() -> None:
    net, _agent = callee()
    invite = invite_request(b"<offer/>")
    invite.headers.set("Content-Type", "application/xml")
    net.send(SCRIPTED_PEER, BOB, invite)
    answers = responses(net.inbox(SCRIPTED_PEER), "INVITE")
    assert [r.status for r in answers] == [415] and answers[0].headers.get("Accept") == "application/sdp"
    # the same with parameters on the SDP type is fine
    ok = invite_request(offer_body(), call_id="call-2@alice", branch="z9hG4bK-inv2")
    ok.headers.set("Content-Type", "Application/SDP; charset=utf-8")
    net.send(SCRIPTED_PEER, BOB, ok)
    assert [type(e) for e in net.take(BOB)] == [InviteReceived]


def test_publication_refreshes_in_time_for_a_shorter_grant() -> None:
    net, _agent, _invite, _ok = confirmed(session_refresh_s=1000.0)
    first = requests(net.inbox(SCRIPTED_SERVER), "PUBLISH")[0]
    net.send(SCRIPTED_SERVER, BOB, response_for(first, 200, to_tag="srv", extra=[
        ("SIP-ETag", "e1"), ("Expires", "20")]))
    # the server granted 20 s of the 90 asked: refresh at half of that, not after publish_refresh_s (45 s)
    net.run(10.5)
    refreshes = unique(requests(net.inbox(SCRIPTED_SERVER), "PUBLISH"))
    assert len(refreshes) == 1 and refreshes[0].headers.get("SIP-If-Match") == "e1"


def test_publication_interval_too_brief_is_published_again_with_min_expires() -> None:
    net, _agent, invite, ok = confirmed(session_refresh_s=1000.0, publish_expires_s=30)
    first = requests(net.inbox(SCRIPTED_SERVER), "PUBLISH")[0]
    assert first.headers.get("Expires") == "30"
    net.send(SCRIPTED_SERVER, BOB, response_for(first, 423, to_tag="srv", extra=[("Min-Expires", "60")]))
    again = unique(requests(net.inbox(SCRIPTED_SERVER), "PUBLISH"))
    assert len(again) == 1 and again[0].headers.get("Expires") == "60"
    assert again[0].body == first.body and again[0].cseq.seq == first.cseq.seq + 1
    # the next publication (terminated, on BYE) asks for the minimum at once
    net.send(SCRIPTED_SERVER, BOB, response_for(again[0], 200, to_tag="srv", extra=[("SIP-ETag", "e1")]))
    bye, _ = build_bye(dialog_from_2xx(invite, ok), "z9hG4bK-bye1")
    net.send(SCRIPTED_PEER, BOB, bye)
    last = unique(requests(net.inbox(SCRIPTED_SERVER), "PUBLISH"))
    assert len(last) == 1 and last[0].headers.get("Expires") == "60"
    # a server that keeps answering 423 with the same minimum is not asked again and again
    net.send(SCRIPTED_SERVER, BOB, response_for(last[0], 423, to_tag="srv", extra=[("Min-Expires", "60")]))
    assert requests(net.inbox(SCRIPTED_SERVER), "PUBLISH") == []


def test_the_2xx_copies_record_route_and_the_dialog_follows_it() -> None:
    """RFC 3261 section 12.1.1: a record-routing proxy between the players stays on the dialog's path."""
    net, agent = callee()
    invite = invite_request(offer_body(latency_ms=80))
    routes = [f"<sip:{SCRIPTED_PEER[0]}:{SCRIPTED_PEER[1]};lr;transit>", "<sip:192.0.2.9:5060;lr>"]
    for value in routes:
        invite.headers.add("Record-Route", value)
    net.send(SCRIPTED_PEER, BOB, invite)
    net.take(BOB)
    agent.accept(invite.call_id, net.now)
    ok = next(r for r in responses(net.inbox(SCRIPTED_PEER), "INVITE") if r.status == 200)
    assert ok.headers.get_all("Record-Route") == routes
    # The caller's dialog reverses the route set (12.1.2): its ACK goes to the last proxy first.
    dialog = dialog_from_2xx(invite, ok)
    assert [str(r) for r in dialog.route_set] == list(reversed(routes))
