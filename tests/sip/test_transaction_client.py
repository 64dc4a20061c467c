"""Client transactions on a fake clock: Timer A/B/D/E/F/K/M, absorbing, the ACK for a non-2xx, CANCEL."""

from __future__ import annotations

import pytest

from gamesdk.errors import LocalProtocolError
from gamesdk.sip.message import Request, Response, response_for
from gamesdk.sip.parser import parse_message_untrusted
from gamesdk.sip.timers import TimerConfig
from gamesdk.sip.transaction import (
    RequestRetransmitted,
    ResponseReceived,
    Transaction,
    TransactionEvent,
    TransactionKey,
    TransactionState,
    TransactionTerminated,
    TransactionTimedOut,
)
from gamesdk.sip.transaction_client import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    build_ack_for_non2xx,
    build_cancel,
)

PEER = ("127.0.0.1", 5060)


def request(method: str = "INVITE", branch: str = "z9hG4bK-c1", *, route: bool = False) -> Request:
    lines = [
        f"{method} sip:bob@na.example SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport",
        *(["Route: <sip:127.0.0.1:5060;lr>"] if route else []),
        "Max-Forwards: 70",
        "From: <sip:alice@eu.example>;tag=a1",
        "To: <sip:bob@na.example>",
        "Call-ID: call-1@test",
        f"CSeq: 7 {method}",
        "Contact: <sip:alice@127.0.0.1:5070>",
        "Content-Length: 0",
        "",
        "",
    ]
    msg = parse_message_untrusted("\r\n".join(lines).encode())
    assert isinstance(msg, Request)
    return msg


def reply(req: Request, status: int) -> Response:
    resp = response_for(req, status, to_tag=None if status == 100 else "b1")
    parsed = parse_message_untrusted(resp.to_bytes())  # what actually comes off the wire
    assert isinstance(parsed, Response)
    return parsed


def drain(tx: Transaction) -> list[TransactionEvent]:
    return list(tx.events())


def run_timers(tx: Transaction, until: float) -> list[float]:
    """Fire every timer up to ``until``; returns the times at which a timer fired."""
    fired: list[float] = []
    while (t := tx.get_timer()) is not None and t <= until:
        fired.append(t)
        tx.handle_timer(t)
    return fired


def sent_times(tx: Transaction, until: float) -> list[float]:
    """Times at which the transaction sent a datagram, timers fired up to ``until``."""
    times = [0.0] * len(tx.datagrams_to_send())
    while (t := tx.get_timer()) is not None and t <= until:
        tx.handle_timer(t)
        times += [t] * len(tx.datagrams_to_send())
    return times


# --- INVITE client ---------------------------------------------------------------------------------------


def test_invite_timer_a_doubles_without_cap_then_timer_b_times_out() -> None:
    invite = request()
    tx = ClientInviteTransaction(invite, 0.0, destination=PEER)
    assert tx.state is TransactionState.CALLING
    assert tx.key == TransactionKey("client", "INVITE", "z9hG4bK-c1")
    times = sent_times(tx, 100.0)
    # RFC 3261 17.1.1.2: A = T1, 2T1, 4T1, ... (no T2 cap for INVITE); B = 64*T1 ends it: 7 transmissions.
    assert times == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    events = drain(tx)
    retransmits = [e for e in events if isinstance(e, RequestRetransmitted)]
    assert [e.count for e in retransmits] == [2, 3, 4, 5, 6, 7]
    assert events[-2:] == [
        TransactionTimedOut(key=tx.key, timer="B"),
        TransactionTerminated(key=tx.key),
    ]
    assert tx.terminated and tx.get_timer() is None


def test_invite_datagrams_are_the_request_bytes_to_the_destination() -> None:
    invite = request()
    tx = ClientInviteTransaction(invite, 0.0, destination=PEER)
    assert tx.datagrams_to_send() == [(invite.to_bytes(), PEER)]
    assert tx.datagrams_to_send() == []
    tx.handle_timer(0.5)
    assert tx.datagrams_to_send() == [(invite.to_bytes(), PEER)]


def test_invite_provisional_stops_retransmission_and_timer_b() -> None:
    invite = request()
    tx = ClientInviteTransaction(invite, 0.0, destination=PEER)
    tx.datagrams_to_send()
    trying = reply(invite, 100)
    tx.receive_response(trying, 0.2)
    assert tx.state is TransactionState.PROCEEDING
    assert drain(tx) == [ResponseReceived(key=tx.key, response=trying)]
    assert tx.get_timer() is None  # no A, no B: the TU (or Timer C at a proxy) decides from here
    ringing = reply(invite, 180)
    tx.receive_response(ringing, 1.0)
    assert drain(tx) == [ResponseReceived(key=tx.key, response=ringing)]
    assert tx.datagrams_to_send() == []


def test_invite_2xx_enters_accepted_passes_retransmissions_until_timer_m() -> None:
    invite = request()
    tx = ClientInviteTransaction(invite, 0.0, destination=PEER)
    tx.datagrams_to_send()
    ok = reply(invite, 200)
    tx.receive_response(ok, 1.0)
    assert tx.state is TransactionState.ACCEPTED
    assert tx.final_response is ok
    assert drain(tx) == [ResponseReceived(key=tx.key, response=ok)]
    # No ACK from the transaction: the ACK for a 2xx is the TU's (RFC 3261 17.1.1.3, 13.2.2.4).
    assert tx.datagrams_to_send() == []
    assert tx.get_timer() == pytest.approx(1.0 + 32.0)  # Timer M = 64*T1 (RFC 6026)
    tx.receive_response(ok, 2.0)  # retransmitted 2xx: passed up so the TU ACKs it again
    assert drain(tx) == [ResponseReceived(key=tx.key, response=ok)]
    tx.receive_response(reply(invite, 180), 2.5)  # late provisional (DESIGN 9): ignored
    tx.receive_response(reply(invite, 486), 2.6)
    assert drain(tx) == []
    assert run_timers(tx, 100.0) == [pytest.approx(33.0)]
    assert drain(tx) == [TransactionTerminated(key=tx.key)]


def test_invite_failure_is_acked_by_the_transaction_and_retransmissions_absorbed() -> None:
    invite = request(route=True)
    tx = ClientInviteTransaction(invite, 0.0, destination=PEER)
    tx.datagrams_to_send()
    tx.receive_response(reply(invite, 180), 0.1)
    busy = reply(invite, 486)
    tx.receive_response(busy, 0.4)
    assert tx.state is TransactionState.COMPLETED
    assert drain(tx) == [
        ResponseReceived(key=tx.key, response=reply(invite, 180)),
        ResponseReceived(key=tx.key, response=busy),
    ]
    [(ack_bytes, dest)] = tx.datagrams_to_send()
    assert dest == PEER
    ack = parse_message_untrusted(ack_bytes)
    assert isinstance(ack, Request)
    assert (ack.method, ack.uri) == ("ACK", "sip:bob@na.example")
    assert ack.top_via.branch == "z9hG4bK-c1" and len(ack.vias) == 1
    assert (ack.cseq.seq, ack.cseq.method) == (7, "ACK")
    assert ack.to.tag == "b1" and ack.from_.tag == "a1"
    assert ack.headers.get_all("Route") == ["<sip:127.0.0.1:5060;lr>"]
    # A retransmitted 486 gets the same ACK and is not passed up again.
    tx.receive_response(busy, 0.9)
    assert tx.datagrams_to_send() == [(ack_bytes, PEER)]
    assert drain(tx) == []
    # Timer D: 32 s on UDP.
    assert run_timers(tx, 100.0) == [pytest.approx(32.4)]
    assert drain(tx) == [TransactionTerminated(key=tx.key)]


def test_invite_on_reliable_transport_has_no_timer_a_and_zero_timer_d() -> None:
    invite = request()
    tx = ClientInviteTransaction(invite, 0.0, destination=PEER, reliable=True)
    tx.datagrams_to_send()
    assert tx.get_timer() == pytest.approx(32.0)  # only B
    tx.receive_response(reply(invite, 603), 1.0)
    assert tx.terminated  # D = 0 fires at once
    events = drain(tx)
    assert isinstance(events[0], ResponseReceived)
    assert events[-1] == TransactionTerminated(key=tx.key)
    assert len(tx.datagrams_to_send()) == 1  # the ACK


def test_invite_timers_scale_with_t1() -> None:
    invite = request()
    tx = ClientInviteTransaction(invite, 10.0, destination=PEER, config=TimerConfig(t1=0.1, t2=0.8))
    assert sent_times(tx, 1000.0)[1:] == pytest.approx([10.1, 10.3, 10.7, 11.5, 13.1, 16.3])


def test_wrong_method_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        ClientInviteTransaction(request("OPTIONS"), 0.0, destination=PEER)
    with pytest.raises(LocalProtocolError):
        ClientNonInviteTransaction(request("INVITE"), 0.0, destination=PEER)


# --- non-INVITE client -----------------------------------------------------------------------------------


def test_non_invite_timer_e_doubles_to_t2_then_timer_f() -> None:
    register = request("REGISTER")
    tx = ClientNonInviteTransaction(register, 0.0, destination=PEER)
    assert tx.state is TransactionState.TRYING
    times = sent_times(tx, 100.0)
    # E = 0.5, 1, 2, 4, then 4 (T2) ... ; F = 64*T1 = 32 s.
    assert times == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    events = drain(tx)
    assert events[-2:] == [TransactionTimedOut(key=tx.key, timer="F"), TransactionTerminated(key=tx.key)]


def test_non_invite_proceeding_retransmits_every_t2() -> None:
    bye = request("BYE")
    tx = ClientNonInviteTransaction(bye, 0.0, destination=PEER)
    tx.datagrams_to_send()
    tx.receive_response(reply(bye, 100), 0.2)
    assert tx.state is TransactionState.PROCEEDING
    times = sent_times(tx, 13.0)
    assert times == [0.5, 4.5, 8.5, 12.5]


def test_non_invite_final_then_timer_k_absorbs_retransmissions() -> None:
    options = request("OPTIONS")
    tx = ClientNonInviteTransaction(options, 0.0, destination=PEER)
    tx.datagrams_to_send()
    ok = reply(options, 200)
    tx.receive_response(ok, 0.7)
    assert tx.state is TransactionState.COMPLETED
    assert drain(tx) == [ResponseReceived(key=tx.key, response=ok)]
    tx.receive_response(ok, 1.0)
    tx.receive_response(reply(options, 500), 1.1)
    assert drain(tx) == []
    assert tx.datagrams_to_send() == []
    assert run_timers(tx, 100.0) == [pytest.approx(5.7)]  # K = T4
    assert drain(tx) == [TransactionTerminated(key=tx.key)]


def test_non_invite_reliable_terminates_on_final_response() -> None:
    options = request("OPTIONS")
    tx = ClientNonInviteTransaction(options, 0.0, destination=PEER, reliable=True)
    assert tx.get_timer() == pytest.approx(32.0)
    tx.receive_response(reply(options, 404), 0.3)
    assert tx.terminated


def test_transport_error_terminates() -> None:
    tx = ClientNonInviteTransaction(request("OPTIONS"), 0.0, destination=PEER)
    tx.transport_error(0.1, "ICMP port unreachable")
    events = drain(tx)
    assert [type(e).__name__ for e in events] == ["TransportFailed", "TransactionTerminated"]
    assert tx.get_timer() is None


# --- builders --------------------------------------------------------------------------------------------


def test_build_cancel_matches_the_invite() -> None:
    invite = request(route=True)
    cancel = build_cancel(invite)
    parsed = parse_message_untrusted(cancel.to_bytes())
    assert isinstance(parsed, Request)
    assert (parsed.method, parsed.uri) == ("CANCEL", invite.uri)
    assert parsed.top_via.branch == invite.top_via.branch
    assert (parsed.cseq.seq, parsed.cseq.method) == (7, "CANCEL")
    assert parsed.to.tag is None and parsed.from_.tag == "a1"
    assert parsed.headers.get_all("Route") == invite.headers.get_all("Route")
    # Its own transaction: same branch, method CANCEL.
    tx = ClientNonInviteTransaction(cancel, 0.0, destination=PEER)
    assert tx.key == TransactionKey("client", "CANCEL", "z9hG4bK-c1")


def test_build_ack_for_non2xx_keeps_invite_fields() -> None:
    invite = request()
    ack = build_ack_for_non2xx(invite, reply(invite, 404))
    assert ack.headers.get("Call-ID") == "call-1@test"
    assert ack.headers.get("From") == invite.headers.get("From")
    assert "tag=b1" in (ack.headers.get("To") or "")
    assert ack.body == b""
