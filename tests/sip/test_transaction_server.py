"""Server transactions on a fake clock: Timer G/H/I/J/L, RFC 6026 Accepted, UAS 2xx retransmission, TU misuse."""

from __future__ import annotations

import pytest

from gamesdk.errors import LocalProtocolError
from gamesdk.sip.message import Request, Response, response_for
from gamesdk.sip.parser import parse_message_untrusted
from gamesdk.sip.transaction import (
    AckReceived,
    AckTimedOut,
    ResponseRetransmitted,
    Transaction,
    TransactionEvent,
    TransactionKey,
    TransactionState,
    TransactionTerminated,
    TransactionTimedOut,
)
from gamesdk.sip.transaction_server import ServerInviteTransaction, ServerNonInviteTransaction

SOURCE = ("127.0.0.1", 40000)


def request(method: str = "INVITE", branch: str = "z9hG4bK-s1", *, to_tag: str | None = None) -> Request:
    to = "<sip:bob@na.example>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:bob@127.0.0.1:5080 SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport",
        "Max-Forwards: 70",
        "From: <sip:alice@eu.example>;tag=a1",
        f"To: {to}",
        "Call-ID: call-2@test",
        f"CSeq: 3 {method}",
        "Contact: <sip:alice@127.0.0.1:5070>",
        "Content-Length: 0",
        "",
        "",
    ]
    msg = parse_message_untrusted("\r\n".join(lines).encode())
    assert isinstance(msg, Request)
    return msg


def answer(req: Request, status: int) -> Response:
    return response_for(req, status, to_tag=None if status == 100 else "b2")


def drain(tx: Transaction) -> list[TransactionEvent]:
    return list(tx.events())


def sends(tx: Transaction) -> list[int]:
    """Status codes of the datagrams sent since the last call."""
    out = []
    for data, dest in tx.datagrams_to_send():
        assert dest == SOURCE  # rport in the Via: answer the source address (RFC 3581)
        msg = parse_message_untrusted(data)
        assert isinstance(msg, Response)
        out.append(msg.status)
    return out


def fire_until(tx: Transaction, until: float) -> list[tuple[object, list[int]]]:
    fired: list[tuple[object, list[int]]] = []
    while (t := tx.get_timer()) is not None and t <= until:
        tx.handle_timer(t)
        fired.append((t, sends(tx)))
    return fired


# --- INVITE server ---------------------------------------------------------------------------------------


def test_invite_server_key_and_trying() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, 0.0, source=SOURCE, send_trying=True)
    assert tx.key == TransactionKey("server", "INVITE", "z9hG4bK-s1", ("127.0.0.1", 5070))
    assert tx.state is TransactionState.PROCEEDING
    assert sends(tx) == [100]
    # A retransmitted INVITE gets the latest provisional again, and is not passed up.
    tx.receive_request(invite, 0.3)
    assert sends(tx) == [100]
    tx.send_response(answer(invite, 180), 0.4)
    tx.receive_request(invite, 0.6)
    assert sends(tx) == [180, 180]
    assert drain(tx) == []
    assert tx.get_timer() is None


def test_invite_server_without_trying_absorbs_retransmission_silently() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, 0.0, source=SOURCE)
    tx.receive_request(invite, 0.5)
    assert sends(tx) == []


def test_invite_failure_timer_g_doubles_to_t2_and_timer_h_times_out() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, 0.0, source=SOURCE)
    tx.send_response(answer(invite, 486), 0.0)
    assert tx.state is TransactionState.COMPLETED
    assert sends(tx) == [486]
    fired = fire_until(tx, 100.0)
    # G = 0.5, 1, 2, 4, 4, ... until H = 64*T1 = 32 s.
    assert [t for t, _ in fired] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5, 32.0]
    assert all(statuses == [486] for _, statuses in fired[:-1])
    assert fired[-1][1] == []
    events = drain(tx)
    assert isinstance(events[0], ResponseRetransmitted) and events[0].status == 486
    assert events[-2:] == [TransactionTimedOut(key=tx.key, timer="H"), TransactionTerminated(key=tx.key)]


def test_invite_failure_ack_confirms_then_timer_i_absorbs_acks() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, 0.0, source=SOURCE)
    tx.send_response(answer(invite, 404), 0.0)
    sends(tx)
    tx.receive_request(invite, 0.2)  # INVITE retransmission in Completed: the 404 again
    assert sends(tx) == [404]
    ack = request("ACK", to_tag="b2")
    tx.receive_request(ack, 0.3)
    assert tx.state is TransactionState.CONFIRMED
    assert drain(tx) == []  # the ACK for a non-2xx stays in the transaction (RFC 3261 17.2.1)
    tx.receive_request(ack, 1.0)
    tx.receive_request(invite, 1.1)
    assert sends(tx) == []
    assert fire_until(tx, 100.0) == [(pytest.approx(5.3), [])]  # I = T4
    assert drain(tx) == [TransactionTerminated(key=tx.key)]


def test_invite_failure_on_reliable_transport() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, 0.0, source=SOURCE, reliable=True)
    tx.send_response(answer(invite, 486), 0.0)
    assert tx.get_timer() == pytest.approx(32.0)  # no G, only H
    tx.receive_request(request("ACK", to_tag="b2"), 0.1)
    assert tx.terminated  # I = 0


def test_invite_2xx_accepted_absorbs_invites_sends_tu_retransmissions_until_timer_l() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, 0.0, source=SOURCE)
    ok = answer(invite, 200)
    tx.send_response(ok, 1.0)
    assert tx.state is TransactionState.ACCEPTED
    assert sends(tx) == [200]
    tx.receive_request(invite, 1.2)  # RFC 6026 8.7: absorbed, not answered, not passed up
    assert sends(tx) == [] and drain(tx) == []
    tx.send_response(ok, 1.5)  # the TU's own 2xx retransmission passes through
    assert sends(tx) == [200]
    ack = request("ACK", to_tag="b2")  # same branch: an RFC 2543-style ACK, passed up (RFC 6026 8.8)
    tx.receive_request(ack, 1.6)
    assert drain(tx) == [AckReceived(key=tx.key, request=ack)]
    with pytest.raises(LocalProtocolError):
        tx.send_response(answer(invite, 486), 1.7)
    assert fire_until(tx, 100.0) == [(pytest.approx(33.0), [])]  # L = 64*T1
    assert drain(tx) == [TransactionTerminated(key=tx.key)]


def test_uas_2xx_retransmission_until_ack() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, 0.0, source=SOURCE, retransmit_2xx=True)
    tx.send_response(answer(invite, 200), 0.0)
    assert sends(tx) == [200]
    fired = fire_until(tx, 8.0)
    # RFC 3261 13.3.1.4: T1, doubling to T2.
    assert fired == [(0.5, [200]), (1.5, [200]), (3.5, [200]), (7.5, [200])]
    tx.ack_2xx_received(8.0)
    assert tx.acked
    assert fire_until(tx, 100.0) == [(pytest.approx(32.0), [])]  # only L is left
    events = drain(tx)
    assert not any(isinstance(e, AckTimedOut) for e in events)
    assert events[-1] == TransactionTerminated(key=tx.key)


def test_uas_2xx_without_ack_reports_ack_timeout() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, 0.0, source=SOURCE, retransmit_2xx=True)
    tx.send_response(answer(invite, 200), 0.0)
    fired = fire_until(tx, 100.0)
    assert [t for t, _ in fired] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5, 32.0]
    assert drain(tx)[-2:] == [AckTimedOut(key=tx.key), TransactionTerminated(key=tx.key)]


def test_tu_misuse_is_a_local_error() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, 0.0, source=SOURCE)
    tx.send_response(answer(invite, 486), 0.0)
    with pytest.raises(LocalProtocolError, match="cannot send 180 in state Completed"):
        tx.send_response(answer(invite, 180), 0.1)
    with pytest.raises(LocalProtocolError):
        tx.send_response(answer(invite, 200), 0.1)
    with pytest.raises(LocalProtocolError):
        ServerInviteTransaction(request("OPTIONS"), 0.0, source=SOURCE)
    with pytest.raises(LocalProtocolError):
        ServerNonInviteTransaction(request("INVITE"), 0.0, source=SOURCE)


def test_responses_go_to_via_port_without_rport() -> None:
    text = request().to_bytes().replace(b";rport", b"")
    invite = parse_message_untrusted(text)
    assert isinstance(invite, Request)
    tx = ServerInviteTransaction(invite, 0.0, source=("127.0.0.1", 40000))
    assert tx.destination == ("127.0.0.1", 5070)  # RFC 3261 18.2.2: received address, sent-by port


# --- non-INVITE server -----------------------------------------------------------------------------------


def test_non_invite_trying_absorbs_then_final_and_timer_j() -> None:
    register = request("REGISTER")
    tx = ServerNonInviteTransaction(register, 0.0, source=SOURCE)
    assert tx.state is TransactionState.TRYING
    tx.receive_request(register, 0.5)  # Trying: absorbed, nothing to resend yet
    assert sends(tx) == []
    tx.send_response(answer(register, 200), 0.6)
    assert tx.state is TransactionState.COMPLETED
    assert sends(tx) == [200]
    tx.receive_request(register, 1.0)
    assert sends(tx) == [200]
    with pytest.raises(LocalProtocolError):
        tx.send_response(answer(register, 500), 1.1)
    assert fire_until(tx, 100.0) == [(pytest.approx(32.6), [])]  # J = 64*T1
    assert drain(tx) == [TransactionTerminated(key=tx.key)]


def test_non_invite_proceeding_resends_provisional() -> None:
    publish = request("PUBLISH")
    tx = ServerNonInviteTransaction(publish, 0.0, source=SOURCE)
    tx.send_response(answer(publish, 100), 0.1)
    assert tx.state is TransactionState.PROCEEDING
    tx.receive_request(publish, 0.5)
    assert sends(tx) == [100, 100]
    tx.send_response(answer(publish, 412), 0.6)
    assert sends(tx) == [412]


def test_non_invite_reliable_terminates_after_final() -> None:
    bye = request("BYE", to_tag="b2")
    tx = ServerNonInviteTransaction(bye, 0.0, source=SOURCE, reliable=True)
    tx.send_response(answer(bye, 200), 0.0)
    assert tx.terminated
    assert [type(e).__name__ for e in drain(tx)] == ["TransactionTerminated"]
