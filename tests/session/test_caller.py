"""The caller's side of the user agent against a scripted server and peer: crafted answers, lost messages,
policy refusals and answers the caller cannot accept. No sockets; a fake clock."""

from __future__ import annotations

from dataclasses import replace

import pytest
from agent_kit import (
    ALICE,
    SCRIPTED_PEER,
    SCRIPTED_SERVER,
    Net,
    answer_sdp,
    config,
    make_agent,
    of_type,
    offer_terms,
    ok_for,
    requests,
    responses,
)

from gamesdk.errors import LocalProtocolError
from gamesdk.events import Ringing, SessionEnded, SessionEstablished, SessionFailed
from gamesdk.qos.negotiation import Acceptable
from gamesdk.session.agent import CallState, UserAgent
from gamesdk.sip.dialog import build_bye, build_in_dialog_request, dialog_from_invite
from gamesdk.sip.dialog_info import parse_dialog_info_untrusted
from gamesdk.sip.message import Request, Response, response_for


def caller(**changes: object) -> tuple[Net, UserAgent]:
    net = Net()
    net.add_scripted(SCRIPTED_SERVER)
    net.add_scripted(SCRIPTED_PEER)
    agent = net.add_agent(make_agent(config("alice", "pw", "eu.gamesdk.test", SCRIPTED_SERVER, **changes),
                                     ALICE, "a"))
    return net, agent


def sent_invite(net: Net, agent: UserAgent, acceptable: Acceptable | None = None) -> tuple[str, Request]:
    call_id = agent.invite("bob@na.gamesdk.test", offer_terms(latency_ms=100), net.now, acceptable=acceptable)
    net.flush()
    invites = requests(net.inbox(SCRIPTED_SERVER), "INVITE")
    assert len(invites) == 1 and invites[0].call_id == call_id
    return call_id, invites[0]


def established(**changes: object) -> tuple[Net, UserAgent, str, Request, Response]:
    net, agent = caller(**changes)
    call_id, invite = sent_invite(net, agent)
    ok = ok_for(invite)
    net.send(SCRIPTED_SERVER, ALICE, ok)
    assert [type(e) for e in net.take(ALICE)] == [SessionEstablished]
    return net, agent, call_id, invite, ok


def test_proxy_challenge_is_answered_once_with_a_new_cseq() -> None:
    net, agent = caller()
    call_id, invite = sent_invite(net, agent)
    challenge = response_for(invite, 407, to_tag="srv", extra=[
        ("Proxy-Authenticate", 'Digest realm="eu.gamesdk.test", nonce="n1", algorithm=MD5, qop="auth"')])
    net.send(SCRIPTED_SERVER, ALICE, challenge)
    got = net.inbox(SCRIPTED_SERVER)
    acks = requests(got, "ACK")
    retry = requests(got, "INVITE")
    # the 407 is acknowledged hop by hop on the INVITE's branch (RFC 3261 17.1.1.3) ...
    assert len(acks) == 1 and acks[0].top_via.branch == invite.top_via.branch
    # ... and the INVITE goes again with credentials, a new branch, CSeq + 1, the same dialog identifiers
    assert len(retry) == 1
    again = retry[0]
    assert (again.headers.get("Proxy-Authorization") or "").startswith("Digest ")
    assert 'username="alice"' in (again.headers.get("Proxy-Authorization") or "")
    assert again.cseq.seq == invite.cseq.seq + 1 and again.top_via.branch != invite.top_via.branch
    assert (again.call_id, again.from_.tag) == (invite.call_id, invite.from_.tag)
    assert again.body == invite.body
    # a second challenge for the retry is answered too, a third one is a failure (no endless loop)
    for _ in range(3):
        net.send(SCRIPTED_SERVER, ALICE, response_for(again, 407, to_tag="srv", extra=[
            ("Proxy-Authenticate", 'Digest realm="eu.gamesdk.test", nonce="n2", algorithm=MD5, qop="auth"')]))
        latest = requests(net.inbox(SCRIPTED_SERVER), "INVITE")
        if not latest:
            break
        again = latest[0]
    failed = of_type(net.take(ALICE), SessionFailed)
    assert len(failed) == 1 and failed[0].status == 407  # type: ignore[attr-defined]
    assert agent.session_state(call_id) is CallState.ENDED


def test_ack_goes_to_the_contact_and_is_repeated_for_every_2xx_retransmission() -> None:
    net, agent, _call_id, invite, ok = established()
    acks = requests(net.inbox(SCRIPTED_PEER), "ACK")
    assert len(acks) == 1
    ack = acks[0]
    assert ack.uri == "sip:peer@127.0.0.1:7001"
    assert ack.cseq.seq == invite.cseq.seq and ack.cseq.method == "ACK"
    assert ack.top_via.branch != invite.top_via.branch  # a new transaction, end to end (RFC 3261 13.2.2.4)
    assert ack.to.tag == "peer-tag" and ack.from_.tag == invite.from_.tag
    assert requests(net.inbox(SCRIPTED_SERVER), "ACK") == []
    first = net.log[-1][2] if False else ack.to_bytes()
    # the 2xx again while the INVITE transaction is still Accepted (RFC 6026) ...
    net.send(SCRIPTED_SERVER, ALICE, ok)
    again = requests(net.inbox(SCRIPTED_PEER), "ACK")
    assert [a.to_bytes() for a in again] == [first]
    # ... and after it ended: the same ACK, no new event, no second session
    net.run(64 * agent.config.timers.t1 + 1)
    net.inbox(SCRIPTED_PEER)
    net.inbox(SCRIPTED_SERVER)
    net.send(SCRIPTED_SERVER, ALICE, ok)
    late = requests(net.inbox(SCRIPTED_PEER), "ACK")
    assert [a.to_bytes() for a in late] == [first]
    assert of_type(net.take(ALICE), SessionEstablished) == []
    assert agent.stats["acks_sent"] == 1


def test_a_late_provisional_after_the_2xx_is_ignored() -> None:
    net, agent = caller()
    call_id, invite = sent_invite(net, agent)
    ringing = response_for(invite, 180, to_tag="peer-tag")
    net.send(SCRIPTED_SERVER, ALICE, ok_for(invite))
    net.send(SCRIPTED_SERVER, ALICE, ringing)  # two proxy workers: the 180 overtaken by the 200 (DESIGN 9)
    assert [type(e) for e in net.take(ALICE)] == [SessionEstablished]
    assert agent.session_state(call_id) is CallState.CONFIRMED
    # in the usual order the 180 is reported
    net2, agent2 = caller()
    _call2, invite2 = sent_invite(net2, agent2)
    net2.send(SCRIPTED_SERVER, ALICE, response_for(invite2, 180, to_tag="peer-tag"))
    net2.send(SCRIPTED_SERVER, ALICE, ok_for(invite2))
    assert [type(e) for e in net2.take(ALICE)] == [Ringing, SessionEstablished]


def test_policy_warning_370_on_the_2xx_gives_ack_then_bye_with_cause_580() -> None:
    net, agent = caller()
    _call_id, invite = sent_invite(net, agent)
    warning = ("Warning", '370 eu.gamesdk.test "insufficient uplink in eu-dsl"')
    net.send(SCRIPTED_SERVER, ALICE, ok_for(invite, extra=[warning]))
    events = net.take(ALICE)
    assert [type(e) for e in events] == [SessionFailed]
    failed = events[0]
    assert isinstance(failed, SessionFailed)
    assert (failed.status, failed.reason, failed.refused_by) == (
        580, "insufficient uplink in eu-dsl", "policy:eu.gamesdk.test")
    got = net.inbox(SCRIPTED_PEER)
    assert [m.method for m in got if isinstance(m, Request)] == ["ACK", "BYE"]  # ACK first, then BYE
    bye = requests(got, "BYE")[0]
    reason = bye.headers.get("Reason") or ""
    assert "cause=580" in reason and "insufficient uplink in eu-dsl" in reason and reason.startswith("SIP")
    assert bye.cseq.seq > invite.cseq.seq and bye.to.tag == "peer-tag"
    net.send(SCRIPTED_PEER, ALICE, response_for(bye, 200))
    assert net.take(ALICE) == []


def test_answer_outside_the_acceptable_bounds_is_refused_with_bye_488() -> None:
    net, agent = caller()
    _call_id, invite = sent_invite(net, agent, acceptable=Acceptable(max_latency_ms=150))
    net.send(SCRIPTED_SERVER, ALICE, ok_for(invite, body=answer_sdp(invite.body, latency_ms=400)))
    failed = of_type(net.take(ALICE), SessionFailed)
    assert len(failed) == 1
    assert (failed[0].status, failed[0].refused_by) == (488, "local")  # type: ignore[attr-defined]
    assert "400" in failed[0].reason or "latency" in failed[0].reason  # type: ignore[attr-defined]
    got = net.inbox(SCRIPTED_PEER)
    assert [m.method for m in got if isinstance(m, Request)] == ["ACK", "BYE"]
    reason = requests(got, "BYE")[0].headers.get("Reason") or ""
    assert "cause=488" in reason and "QoS answer unacceptable" in reason
    # a modified answer inside the bounds is fine and says it was modified
    net2, agent2 = caller()
    _, invite2 = sent_invite(net2, agent2, acceptable=Acceptable(max_latency_ms=150))
    net2.send(SCRIPTED_SERVER, ALICE, ok_for(invite2, body=answer_sdp(invite2.body, latency_ms=140)))
    est = net2.take(ALICE)
    assert [type(e) for e in est] == [SessionEstablished]
    assert est[0].agreement.modified and est[0].agreement.qos.latency_ms == 140  # type: ignore[attr-defined]


def test_unreadable_answer_is_refused_with_bye() -> None:
    net, agent = caller()
    _, invite = sent_invite(net, agent)
    net.send(SCRIPTED_SERVER, ALICE, ok_for(invite, body=b"v=0\r\nthis is not sdp\r\n"))
    failed = of_type(net.take(ALICE), SessionFailed)
    assert len(failed) == 1 and failed[0].status == 488 and failed[0].refused_by == "peer"  # type: ignore[attr-defined]
    assert [m.method for m in net.inbox(SCRIPTED_PEER) if isinstance(m, Request)] == ["ACK", "BYE"]


def test_2xx_crossing_the_cancel_is_acked_and_ended() -> None:
    net, agent = caller()
    call_id, invite = sent_invite(net, agent)
    net.send(SCRIPTED_SERVER, ALICE, response_for(invite, 180, to_tag="peer-tag"))
    agent.cancel(call_id, net.now)
    agent.cancel(call_id, net.now)  # once is enough: no second CANCEL
    net.flush()
    cancels = requests(net.inbox(SCRIPTED_SERVER), "CANCEL")
    assert len(cancels) == 1 and cancels[0].top_via.branch == invite.top_via.branch
    net.send(SCRIPTED_SERVER, ALICE, ok_for(invite))  # the callee accepted just before the CANCEL arrived
    events = net.take(ALICE)
    assert [type(e) for e in events] == [Ringing, SessionFailed]
    assert events[1].status == 487  # type: ignore[attr-defined]
    assert [m.method for m in net.inbox(SCRIPTED_PEER) if isinstance(m, Request)] == ["ACK", "BYE"]
    # The server hears of the end with the BYE's cause, so it bills the session as never established.
    publishes = requests(net.inbox(SCRIPTED_SERVER), "PUBLISH")
    ended = parse_dialog_info_untrusted(publishes[-1].body).dialogs[0]
    assert (ended.state.value, ended.event, ended.code) == ("terminated", "local-bye", 487)


def test_cancel_without_any_answer_gives_up_after_64_t1() -> None:
    net, agent = caller()
    call_id, invite = sent_invite(net, agent)
    net.send(SCRIPTED_SERVER, ALICE, response_for(invite, 100))
    agent.cancel(call_id, net.now)
    with pytest.raises(LocalProtocolError):
        agent.end(call_id, net.now)
    net.run(64 * agent.config.timers.t1 + 1)
    failed = of_type(net.take(ALICE), SessionFailed)
    assert len(failed) == 1 and failed[0].status == 487  # type: ignore[attr-defined]


def test_incoming_bye_ends_the_session_and_is_answered_200() -> None:
    net, _agent, _call_id, invite, _ok = established()
    peer_dialog = dialog_from_invite(invite, "peer-tag", "<sip:peer@127.0.0.1:7001>")
    bye, _ = build_bye(peer_dialog, "z9hG4bK-peer-bye")
    bye.headers.add("Reason", 'SIP;cause=200;text="match won"')
    net.send(SCRIPTED_PEER, ALICE, bye)
    answers = responses(net.inbox(SCRIPTED_PEER), "BYE")
    assert [r.status for r in answers] == [200]
    events = net.take(ALICE)
    assert len(events) == 1 and isinstance(events[0], SessionEnded)
    assert events[0].by_peer and "match won" in events[0].reason
    # the dialog is published terminated to the player's server
    publishes = requests(net.inbox(SCRIPTED_SERVER), "PUBLISH")
    assert parse_dialog_info_untrusted(publishes[-1].body).dialogs[0].state.value == "terminated"
    # the retransmitted BYE gets the same 200 from the transaction, no second event
    net.send(SCRIPTED_PEER, ALICE, bye)
    assert [r.status for r in responses(net.inbox(SCRIPTED_PEER), "BYE")] == [200]
    assert net.take(ALICE) == []


def test_bye_for_an_unknown_dialog_gets_481() -> None:
    net, agent, call_id, invite, _ok = established()
    peer_dialog = dialog_from_invite(invite, "peer-tag", "<sip:peer@127.0.0.1:7001>")
    stranger = replace(peer_dialog, call_id="unknown@elsewhere")
    bye, _ = build_bye(stranger, "z9hG4bK-stranger")
    net.send(SCRIPTED_PEER, ALICE, bye)
    assert [r.status for r in responses(net.inbox(SCRIPTED_PEER), "BYE")] == [481]
    # the right Call-ID with a wrong tag is another dialog too (RFC 3261 12.2.2)
    wrong_tag = replace(peer_dialog, local_tag="not-the-peer")
    bye2, _ = build_bye(wrong_tag, "z9hG4bK-wrong-tag")
    net.send(SCRIPTED_PEER, ALICE, bye2)
    assert [r.status for r in responses(net.inbox(SCRIPTED_PEER), "BYE")] == [481]
    assert net.take(ALICE) == [] and agent.session_state(call_id) is CallState.CONFIRMED


def test_reinvite_is_refused_488_and_its_ack_stops_the_retransmissions() -> None:
    net, agent, call_id, invite, _ok = established()
    peer_dialog = dialog_from_invite(invite, "peer-tag", "<sip:peer@127.0.0.1:7001>")
    reinvite, peer_dialog = build_in_dialog_request(peer_dialog, "INVITE", branch="z9hG4bK-reinv",
                                                    body=invite.body, content_type="application/sdp")
    net.send(SCRIPTED_PEER, ALICE, reinvite)
    refused = responses(net.inbox(SCRIPTED_PEER), "INVITE")
    assert [r.status for r in refused] == [488]
    # the peer ACKs the 488 on the re-INVITE's branch: no more 488 retransmissions after that
    ack = Request("ACK", reinvite.uri, [
        ("Via", reinvite.headers.get("Via") or ""), ("Max-Forwards", "70"),
        ("From", reinvite.headers.get("From") or ""), ("To", refused[0].headers.get("To") or ""),
        ("Call-ID", reinvite.call_id), ("CSeq", f"{reinvite.cseq.seq} ACK"), ("Content-Length", "0")])
    net.send(SCRIPTED_PEER, ALICE, ack)
    net.run(5)
    later = [m for m in net.inbox(SCRIPTED_PEER) if isinstance(m, Response) and m.cseq.method == "INVITE"]
    assert later == []
    assert agent.session_state(call_id) is CallState.CONFIRMED
    assert of_type(net.take(ALICE), SessionEnded) == []


def test_peer_that_stops_answering_the_session_refresh_is_reported() -> None:
    net, agent, call_id, _invite, _ok = established()
    refresh = agent.config.session_refresh_s
    # a peer that answers its refresh keeps the session
    net.run(refresh + 0.1)
    options = requests(net.inbox(SCRIPTED_PEER), "OPTIONS")
    assert len(options) == 1 and options[0].uri == "sip:peer@127.0.0.1:7001"
    assert options[0].to.tag == "peer-tag" and options[0].call_id == call_id
    net.send(SCRIPTED_PEER, ALICE, response_for(options[0], 200))
    assert net.take(ALICE) == []
    # then it crashes: the next refresh times out (Timer F, 64*T1)
    net.run(refresh + 64 * agent.config.timers.t1 + 1)
    events = net.take(ALICE)
    assert len(events) == 1 and isinstance(events[0], SessionEnded)
    # not a hang-up by the peer: our side ended it (as when the channel reports Disconnected)
    assert not events[0].by_peer and events[0].reason == "peer stopped answering"
    assert agent.session_state(call_id) is not CallState.CONFIRMED


def test_peer_that_lost_the_dialog_answers_481_and_the_session_ends() -> None:
    net, agent, _call_id, _invite, _ok = established()
    net.run(agent.config.session_refresh_s + 0.1)
    options = requests(net.inbox(SCRIPTED_PEER), "OPTIONS")
    net.send(SCRIPTED_PEER, ALICE, response_for(options[0], 481))
    events = net.take(ALICE)
    assert len(events) == 1 and isinstance(events[0], SessionEnded) and "481" in events[0].reason


def test_end_sends_bye_to_the_peer_with_reason() -> None:
    net, agent, call_id, invite, _ok = established()
    agent.end(call_id, net.now, reason="rage quit")
    events = net.take(ALICE)
    assert len(events) == 1 and isinstance(events[0], SessionEnded) and not events[0].by_peer
    byes = requests(net.inbox(SCRIPTED_PEER), "BYE")
    assert len(byes) == 1 and "rage quit" in (byes[0].headers.get("Reason") or "")
    # the peer's BYE crossing ours is answered, and reports nothing new
    peer_dialog = dialog_from_invite(invite, "peer-tag", "<sip:peer@127.0.0.1:7001>")
    crossing, _ = build_bye(peer_dialog, "z9hG4bK-crossing")
    net.send(SCRIPTED_PEER, ALICE, crossing)
    assert [r.status for r in responses(net.inbox(SCRIPTED_PEER), "BYE")] in ([200], [481])
    assert net.take(ALICE) == []
    net.send(SCRIPTED_PEER, ALICE, response_for(byes[0], 200))
    assert net.take(ALICE) == []
    with pytest.raises(LocalProtocolError):
        agent.end(call_id, net.now)


def test_2xx_after_giving_up_is_acked_and_ended_without_a_second_event() -> None:
    net, agent = caller()
    call_id, invite = sent_invite(net, agent)
    net.send(SCRIPTED_SERVER, ALICE, response_for(invite, 180, to_tag="peer-tag"))
    agent.cancel(call_id, net.now)
    net.run(64 * agent.config.timers.t1 + 1)
    assert [type(e) for e in net.take(ALICE)] == [Ringing, SessionFailed]
    net.inbox(SCRIPTED_PEER)
    net.send(SCRIPTED_SERVER, ALICE, ok_for(invite))  # the callee answered at last
    assert [m.method for m in net.inbox(SCRIPTED_PEER) if isinstance(m, Request)] == ["ACK", "BYE"]
    assert net.take(ALICE) == []


def test_cancel_waits_for_a_provisional_response() -> None:
    net, agent = caller()
    call_id, invite = sent_invite(net, agent)
    agent.cancel(call_id, net.now)
    # RFC 3261 9.1: no CANCEL before the INVITE got a provisional response
    assert requests(net.inbox(SCRIPTED_SERVER), "CANCEL") == []
    net.send(SCRIPTED_SERVER, ALICE, response_for(invite, 100))
    cancels = requests(net.inbox(SCRIPTED_SERVER), "CANCEL")
    assert len(cancels) == 1 and cancels[0].cseq.seq == invite.cseq.seq
    net.send(SCRIPTED_SERVER, ALICE, response_for(cancels[0], 200))
    net.send(SCRIPTED_SERVER, ALICE, response_for(invite, 487, to_tag="peer-tag"))
    failed = of_type(net.take(ALICE), SessionFailed)
    assert len(failed) == 1 and (failed[0].status, failed[0].refused_by) == (487, "local")  # type: ignore[attr-defined]
    # the 487 is acknowledged hop by hop on the INVITE's branch
    acks = requests(net.inbox(SCRIPTED_SERVER), "ACK")
    assert len(acks) == 1 and acks[0].top_via.branch == invite.top_via.branch


def test_invite_that_no_server_answers_fails_408() -> None:
    net, agent = caller()
    call_id, _ = sent_invite(net, agent)
    net.run(64 * agent.config.timers.t1 + 1)  # Timer B
    failed = of_type(net.take(ALICE), SessionFailed)
    assert len(failed) == 1 and (failed[0].status, failed[0].refused_by) == (408, "network")  # type: ignore[attr-defined]
    assert agent.session_state(call_id) is CallState.ENDED
