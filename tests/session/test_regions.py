"""Two sans-IO user agents talking through two real regional server nodes (eu, na) in memory, fake clock."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agent_kit import (
    ALICE,
    BOB,
    EU_SERVER,
    NA_SERVER,
    Net,
    of_type,
    offer_terms,
    regions,
    requests,
    responses,
)

from gamesdk.address import Address
from gamesdk.channel.config import ChannelParams
from gamesdk.events import (
    InviteCancelled,
    InviteReceived,
    Registered,
    ReservationConfirmed,
    Ringing,
    SessionEnded,
    SessionEstablished,
    SessionFailed,
    Unregistered,
)
from gamesdk.session.agent import CallState, UserAgent
from gamesdk.session.core import LOGOUT_PUBLISH_WAIT_S
from gamesdk.sip.dialog_info import parse_dialog_info_untrusted
from gamesdk.sip.message import Request, Response
from gamesdk.sip.parser import parse_message_untrusted
from server.policy.cli_support import billing_rows


def logged_in(tmp: Path) -> tuple[Net, UserAgent, UserAgent]:
    net, alice, bob = regions(tmp)
    alice.register(net.now)
    bob.register(net.now)
    assert [type(e) for e in net.take(ALICE)] == [Registered]
    assert [type(e) for e in net.take(BOB)] == [Registered]
    return net, alice, bob


def invited(tmp: Path) -> tuple[Net, UserAgent, UserAgent, str]:
    net, alice, bob = logged_in(tmp)
    call_id = alice.invite("bob@na.gamesdk.test", offer_terms(latency_ms=120), net.now)
    net.flush()
    received = net.take(BOB)
    assert [type(e) for e in received] == [InviteReceived], received
    assert received[0].call_id == call_id  # type: ignore[attr-defined]
    assert received[0].caller == "sip:alice@eu.gamesdk.test"  # type: ignore[attr-defined]
    return net, alice, bob, call_id


def test_session_through_both_servers_with_a_direct_ack_and_published_dialogs(tmp_path: Path) -> None:
    net, alice, bob, call_id = invited(tmp_path)
    # the INVITE was challenged (407) by alice's server and sent again with credentials, CSeq + 1
    invites = requests(net.sent(ALICE, EU_SERVER), "INVITE")
    assert [i.headers.get("Proxy-Authorization") is None for i in invites] == [True, False]
    assert invites[1].cseq.seq == invites[0].cseq.seq + 1
    assert invites[1].headers.get("From") == invites[0].headers.get("From")
    assert [type(e) for e in net.take(ALICE)] == [Ringing]
    answer = bob.accept(call_id, net.now)
    assert answer.qos.latency_ms == 120
    a_events, b_events = net.take(ALICE), net.take(BOB)
    assert [type(e) for e in a_events] == [SessionEstablished]
    # bob, the callee, learns his own region's reservation from the answer to his "confirmed" PUBLISH
    assert [type(e) for e in b_events] == [SessionEstablished, ReservationConfirmed]
    a_est, b_est = a_events[0], b_events[0]
    assert isinstance(a_est, SessionEstablished) and isinstance(b_est, SessionEstablished)
    assert a_est.agreement.is_caller and not b_est.agreement.is_caller
    assert a_est.agreement.format == b_est.agreement.format and a_est.agreement.suite == b_est.agreement.suite
    assert not a_est.agreement.modified
    a_params, b_params = a_est.channel_params, b_est.channel_params
    assert isinstance(a_params, ChannelParams) and isinstance(b_params, ChannelParams)
    # both sides derive the same transcript and see each other's channel session ids crosswise
    assert a_params.transcript_hash == b_params.transcript_hash
    assert (a_params.local_session_id, a_params.remote_session_id) == (
        b_params.remote_session_id, b_params.local_session_id)
    assert (a_params.role, b_params.role) == ("offer", "answer")
    # the ACK went straight to bob's contact, never through a server (DESIGN section 2)
    assert len(requests(net.sent(ALICE, BOB), "ACK")) == 1
    for server in (EU_SERVER, NA_SERVER):
        assert [a for a in requests(net.sent(dst=server), "ACK") if a.cseq.seq == invites[1].cseq.seq] == []
    assert alice.session_state(call_id) is CallState.CONFIRMED
    assert bob.session_state(call_id) is CallState.CONFIRMED
    # each side published "confirmed" to its own server, which accepted it
    for agent, server in ((ALICE, EU_SERVER), (BOB, NA_SERVER)):
        publishes = requests(net.sent(agent, server), "PUBLISH")
        assert publishes, f"{agent} published nothing"
        info = parse_dialog_info_untrusted(publishes[-1].body)
        assert info.dialogs[0].state.value == "confirmed" and info.dialogs[0].call_id == call_id
        assert responses(net.sent(server, agent), "PUBLISH")[-1].status == 200
    # a minute of play: session refreshes (OPTIONS) answered directly, no event
    net.run(60)
    assert net.take(ALICE) == [] and net.take(BOB) == []
    assert requests(net.sent(ALICE, BOB), "OPTIONS") and requests(net.sent(BOB, ALICE), "OPTIONS")
    # alice hangs up with a BYE straight to bob
    alice.end(call_id, net.now, reason="game over")
    ended_a, ended_b = net.take(ALICE), net.take(BOB)
    assert [(type(e), e.by_peer) for e in ended_a] == [(SessionEnded, False)]  # type: ignore[attr-defined]
    assert [(type(e), e.by_peer) for e in ended_b] == [(SessionEnded, True)]  # type: ignore[attr-defined]
    assert "game over" in ended_b[0].reason  # type: ignore[attr-defined]
    assert responses(net.sent(BOB, ALICE), "BYE")[-1].status == 200
    for agent, server in ((ALICE, EU_SERVER), (BOB, NA_SERVER)):
        info = parse_dialog_info_untrusted(requests(net.sent(agent, server), "PUBLISH")[-1].body)
        assert info.dialogs[0].state.value == "terminated"
    # quiet afterwards: no refreshes or publications for a dead session, and the calls are forgotten
    net.run(120)
    count = len(net.log)
    net.run(120)
    later = net.sent()[count:]
    assert [m for m in later if m.call_id == call_id] == [] and requests(later, "PUBLISH") == []
    assert alice.session_state(call_id) is None and bob.session_state(call_id) is None


def test_cancel_before_the_answer(tmp_path: Path) -> None:
    net, alice, _bob, call_id = invited(tmp_path)
    alice.cancel(call_id, net.now)
    cancelled = net.take(BOB)
    assert [type(e) for e in cancelled] == [InviteCancelled]
    failed = of_type(net.take(ALICE), SessionFailed)
    assert len(failed) == 1 and failed[0].status == 487, failed  # type: ignore[attr-defined]
    assert "cancel" in failed[0].reason  # type: ignore[attr-defined]
    assert 487 in [r.status for r in responses(net.sent(BOB), "INVITE")]
    assert [r.status for r in responses(net.sent(BOB), "CANCEL")] == [200]
    assert alice.session_state(call_id) is CallState.ENDED
    net.run(60)
    assert net.take(ALICE) == [] and net.take(BOB) == []


def test_callee_that_never_decides_answers_480(tmp_path: Path) -> None:
    net, _alice, bob, _call_id = invited(tmp_path)
    assert [type(e) for e in net.take(ALICE)] == [Ringing]
    net.run(bob.config.answer_timeout_s + 1)
    assert [type(e) for e in net.take(BOB)] == [InviteCancelled]
    failed = net.take(ALICE)
    assert [type(e) for e in failed] == [SessionFailed]
    assert failed[0].status == 480  # type: ignore[attr-defined]
    assert 480 in [r.status for r in responses(net.sent(BOB), "INVITE")]


def test_decline_reaches_the_caller_with_the_reason(tmp_path: Path) -> None:
    net, _alice, bob, call_id = invited(tmp_path)
    bob.decline(call_id, net.now, status=486, reason="already in a match")
    failed = of_type(net.take(ALICE), SessionFailed)
    assert len(failed) == 1
    assert (failed[0].status, failed[0].reason, failed[0].refused_by) == (  # type: ignore[attr-defined]
        486, "already in a match", "peer")
    assert net.take(BOB) == []


def test_caller_stops_waiting_after_the_invite_timeout(tmp_path: Path) -> None:
    net, alice, _bob, _call_id = invited(tmp_path)
    net.drop = lambda src, dst, msg: dst == ALICE and getattr(msg, "status", 0) >= 400  # the 487 gets lost
    net.run(alice.config.invite_timeout_s + 60)
    failed = of_type(net.take(ALICE), SessionFailed)
    assert len(failed) == 1 and failed[0].status == 408, failed  # type: ignore[attr-defined]
    assert requests(net.sent(ALICE, EU_SERVER), "CANCEL")


def test_second_invitation_carries_credentials_at_once(tmp_path: Path) -> None:
    net, alice, bob, first = invited(tmp_path)
    bob.decline(first, net.now)
    net.take(ALICE)
    before = len(requests(net.sent(ALICE, EU_SERVER), "INVITE"))
    second = alice.invite("bob@na.gamesdk.test", offer_terms(), net.now)
    net.flush()
    invites = requests(net.sent(ALICE, EU_SERVER), "INVITE")[before:]
    # the cached challenge answers the new INVITE: no 407 round trip (RFC 3261 22.3)
    assert len(invites) == 1 and invites[0].call_id == second
    credentials = invites[0].headers.get("Proxy-Authorization") or ""
    assert 'uri="sip:bob@na.gamesdk.test"' in credentials
    assert [type(e) for e in net.take(BOB)] == [InviteReceived]


def established(tmp: Path) -> tuple[Net, UserAgent, UserAgent, str]:
    net, alice, bob, call_id = invited(tmp)
    bob.accept(call_id, net.now)
    assert of_type(net.take(ALICE), SessionEstablished) and of_type(net.take(BOB), SessionEstablished)
    net.run(5)
    return net, alice, bob, call_id


def lose_first_terminated_publish() -> Callable[[Address, Address, Request | Response], bool]:
    """A drop rule: alice's first ``terminated`` PUBLISH to eu is lost on the wire (its retransmission is not)."""
    lost: list[Request] = []

    def drop(src: Address, dst: Address, message: Request | Response) -> bool:
        if lost or src != ALICE or dst != EU_SERVER or not isinstance(message, Request) or message.method != "PUBLISH":
            return False
        if parse_dialog_info_untrusted(message.body).dialogs[0].state.value != "terminated":
            return False
        lost.append(message)
        return True

    return drop


def test_logout_right_after_the_hang_up_bills_the_bye_not_the_registration(tmp_path: Path) -> None:
    """The game ends and the player logs out at once (a client closing): the ``terminated`` PUBLISH is lost once
    and retransmitted, so the logout's REGISTER would reach the region first, which then ends the reservation
    as a registration gone (``reg-expired``). The SDK holds the logout until the PUBLISH is answered."""
    net, alice, _bob, call_id = established(tmp_path)
    net.drop = lose_first_terminated_publish()
    count = len(net.log)
    alice.end(call_id, net.now, reason="game over")
    alice.unregister(net.now)
    net.run(10)
    assert [type(e) for e in net.take(ALICE)] == [SessionEnded, Unregistered]
    rows = {r.player: r for r in billing_rows(tmp_path / "eu.sqlite3")}
    assert rows["sip:alice@eu.gamesdk.test"].end_reason == "bye-local"
    assert [r.end_reason for r in billing_rows(tmp_path / "na.sqlite3")] == ["bye-remote"]
    # alice -> eu from the hang-up on, and eu's answers: the PUBLISH (lost once, retransmitted) is answered
    # before the logout's REGISTER leaves
    wire = [parse_message_untrusted(data) for s, d, data in net.log[count:] if {s, d} == {EU_SERVER, ALICE}]
    seen = [f"{m.method} {'terminated' if b'terminated' in m.body else ''}".strip() if isinstance(m, Request)
            else f"{m.status} {m.cseq.method}" for m in wire]
    assert seen[:3] == ["PUBLISH terminated", "PUBLISH terminated", "200 PUBLISH"], seen
    assert seen[3:].count("REGISTER") >= 1 and "REGISTER" not in seen[:3], seen


def test_logout_waits_for_the_terminated_publish_only_so_long(tmp_path: Path) -> None:
    """A region that never answers the ``terminated`` PUBLISH does not keep the player logged in: the logout
    leaves at most LOGOUT_PUBLISH_WAIT_S later."""
    net, alice, _bob, call_id = established(tmp_path)
    net.drop = lambda src, dst, m: src == ALICE and isinstance(m, Request) and m.method == "PUBLISH"
    alice.end(call_id, net.now, reason="game over")
    start = net.now
    alice.unregister(net.now)
    net.flush()
    assert not any(data.startswith(b"REGISTER") for s, d, data in net.log if s == ALICE and d == EU_SERVER
                   and data.find(b"Expires: 0") >= 0)
    net.run(LOGOUT_PUBLISH_WAIT_S - 0.5)
    assert not [e for e in net.take(ALICE) if isinstance(e, Unregistered)]
    net.run(1.0)
    assert [type(e) for e in net.take(ALICE)][-1:] == [Unregistered]
    assert net.now - start <= LOGOUT_PUBLISH_WAIT_S + 0.5


def test_logout_without_a_session_ending_is_sent_at_once(tmp_path: Path) -> None:
    net, alice, _bob = logged_in(tmp_path)
    alice.unregister(net.now)
    assert [type(e) for e in net.take(ALICE)] == [Unregistered]
