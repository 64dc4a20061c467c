"""Transaction matching (RFC 3261 17.1.3 / 17.2.3, CANCEL 9.2) and the table: routing, merged timers, removal,
and two tables exchanging datagrams over a lossy in-memory wire."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gamesdk.errors import LocalProtocolError
from gamesdk.sip.dialog import build_ack_for_2xx, build_bye, dialog_from_2xx
from gamesdk.sip.ids import SequentialIdFactory
from gamesdk.sip.message import Request, Response, response_for
from gamesdk.sip.parser import parse_message_untrusted
from gamesdk.sip.transaction import (
    AckTimedOut,
    Input,
    ResponseReceived,
    TransactionKey,
    TransactionTerminated,
    TransactionTimedOut,
    cancel_target_key,
    client_key,
    server_key,
)
from gamesdk.sip.transaction_client import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    build_cancel,
)
from gamesdk.sip.transaction_server import ServerInviteTransaction, ServerNonInviteTransaction
from gamesdk.sip.transaction_table import TransactionTable

ALICE = ("127.0.0.1", 5070)
BOB = ("127.0.0.1", 5080)


def request(
    method: str = "INVITE",
    branch: str = "z9hG4bK-m1",
    *,
    sent_by: str = "127.0.0.1:5070",
    cseq: int = 1,
    to_tag: str | None = None,
    call_id: str = "call-3@test",
) -> Request:
    to = "<sip:bob@na.example>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:bob@127.0.0.1:5080 SIP/2.0",
        f"Via: SIP/2.0/UDP {sent_by};branch={branch};rport",
        "Max-Forwards: 70",
        "From: <sip:alice@eu.example>;tag=a1",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        "Contact: <sip:alice@127.0.0.1:5070>",
        "Content-Length: 0",
        "",
        "",
    ]
    msg = parse_message_untrusted("\r\n".join(lines).encode())
    assert isinstance(msg, Request)
    return msg


# --- keys ------------------------------------------------------------------------------------------------


def test_server_key_follows_rfc3261_17_2_3() -> None:
    invite = request()
    assert server_key(invite) == TransactionKey("server", "INVITE", "z9hG4bK-m1", ("127.0.0.1", 5070))
    # The ACK for a non-2xx matches the INVITE's server transaction.
    assert server_key(request("ACK", to_tag="x")) == server_key(invite)
    # Same branch from another sent-by, or another method, is another transaction.
    assert server_key(request(sent_by="127.0.0.2:5070")) != server_key(invite)
    assert server_key(request("OPTIONS")) != server_key(invite)
    # Sent-by port defaults to 5060 and the host compares case-insensitively.
    assert server_key(request(sent_by="Example.COM")) == server_key(request(sent_by="example.com:5060"))
    # CANCEL has its own transaction but points at the INVITE's.
    cancel = build_cancel(invite)
    assert server_key(cancel) != server_key(invite)
    assert cancel_target_key(cancel) == server_key(invite)


def test_rfc2543_fallback_key() -> None:
    old = request(branch="1234")
    key = server_key(old)
    assert key.legacy and key.legacy[2] == "call-3@test"
    assert server_key(request("ACK", branch="1234", to_tag="x")) == key
    assert server_key(request(branch="1234", cseq=2)) != key
    assert server_key(request(branch="1234", call_id="other@test")) != key


def test_client_key_of_response() -> None:
    invite = request()
    resp = response_for(invite, 180, to_tag="b")
    assert client_key(resp) == client_key(invite) == TransactionKey("client", "INVITE", "z9hG4bK-m1")
    cancel_resp = response_for(build_cancel(invite), 200)
    assert client_key(cancel_resp) == TransactionKey("client", "CANCEL", "z9hG4bK-m1")


# --- table -----------------------------------------------------------------------------------------------


def test_table_routes_responses_and_requests() -> None:
    table = TransactionTable()
    invite = request()
    client = table.add(ClientInviteTransaction(invite, 0.0, destination=BOB))
    assert table.datagrams_to_send() == [(invite.to_bytes(), BOB)]
    # A response for another branch is a stray: the TU decides (a proxy forwards it statelessly).
    stray = response_for(request(branch="z9hG4bK-other"), 200, to_tag="b")
    assert table.receive_response(stray, 0.1) is None
    ringing = response_for(invite, 180, to_tag="b")
    assert table.receive_response(ringing, 0.2) is client
    assert table.next_event() == ResponseReceived(key=client.key, response=ringing)
    assert table.next_event() is None
    # Requests: a new one is not matched; once its transaction exists, retransmissions are absorbed.
    options = request("OPTIONS", branch="z9hG4bK-o1")
    assert table.receive_request(options, 0.3) is None
    server = table.add(ServerNonInviteTransaction(options, 0.3, source=ALICE))
    assert table.receive_request(options, 0.4) is server
    assert len(table) == 2
    with pytest.raises(LocalProtocolError):
        table.add(ServerNonInviteTransaction(options, 0.5, source=ALICE))


def test_table_merges_timers_and_removes_terminated() -> None:
    table = TransactionTable()
    invite = table.add(ClientInviteTransaction(request(), 0.0, destination=BOB))
    register = table.add(ClientNonInviteTransaction(request("REGISTER", "z9hG4bK-r1"), 0.25, destination=BOB))
    table.datagrams_to_send()
    assert table.get_timer() == 0.5  # Timer A of the INVITE
    table.handle_timer(0.5)
    assert table.get_timer() == 0.75  # Timer E of the REGISTER
    table.handle_timer(0.75)
    assert [dest for _, dest in table.datagrams_to_send()] == [BOB, BOB]
    # Final response to REGISTER: Completed, then K; the INVITE keeps retransmitting.
    table.receive_response(response_for(register.request, 200, to_tag="r"), 1.0)
    fired = []
    while (t := table.get_timer()) is not None and t <= 40.0:
        table.handle_timer(t)
        fired.append(t)
    assert 6.0 in fired  # K = T4 after the 200 at 1.0
    assert 32.0 in fired  # B of the INVITE
    events = list(table.events())
    assert TransactionTimedOut(key=invite.key, timer="B") in events
    assert TransactionTerminated(key=register.key) in events
    assert TransactionTerminated(key=invite.key) in events
    assert len(table) == 0 and table.get_timer() is None
    # A late response for a finished transaction is now a stray.
    assert table.receive_response(response_for(invite.request, 200, to_tag="b"), 41.0) is None


def test_table_recognises_2xx_ack_and_cancel_target() -> None:
    table = TransactionTable()
    invite = request()
    tx = table.add(ServerInviteTransaction(invite, 0.0, source=ALICE, retransmit_2xx=True))
    assert isinstance(tx, ServerInviteTransaction)
    cancel = build_cancel(invite)
    assert table.find_cancel_target(cancel) is tx
    assert table.find_cancel_target(build_cancel(request(branch="z9hG4bK-nope"))) is None
    ok = response_for(invite, 200, to_tag="b9", extra=[("Contact", "<sip:bob@127.0.0.1:5080>")])
    tx.send_response(ok, 1.0)
    table.handle_timer(1.5)  # one 2xx retransmission
    assert len(table.datagrams_to_send()) == 2
    # The end-to-end ACK has a new branch: unmatched for the TU, but it stops the 2xx retransmissions.
    dialog = dialog_from_2xx(invite, ok)
    ack = build_ack_for_2xx(dialog, invite, "z9hG4bK-ack")
    wrong_tag = build_ack_for_2xx(replace(dialog, remote_tag="zz"), invite, "z9hG4bK-a2")
    assert table.receive_request(wrong_tag, 1.6) is None
    assert not tx.acked
    assert table.receive_request(ack, 1.7) is None
    assert tx.acked
    table.handle_timer(10.0)
    assert table.datagrams_to_send() == []  # no more 2xx retransmissions
    while (t := table.get_timer()) is not None:
        table.handle_timer(t)
    events = list(table.events())
    assert not any(isinstance(e, AckTimedOut) for e in events)
    assert events[-1] == TransactionTerminated(key=tx.key)


class LossyWire:
    """Delivers datagrams between two tables after a fixed delay, dropping the ones listed by index."""

    def __init__(self, delay: float, drop: set[int]) -> None:
        self.delay = delay
        self.drop = drop
        self.sent = 0
        self.in_flight: list[tuple[float, bytes, tuple[str, int]]] = []

    def send(self, datagrams: list[tuple[bytes, tuple[str, int]]], now: float) -> None:
        for data, dest in datagrams:
            if self.sent not in self.drop:
                self.in_flight.append((now + self.delay, data, dest))
            self.sent += 1

    def due(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        ready = [(d, dest) for t, d, dest in self.in_flight if t <= now]
        self.in_flight = [item for item in self.in_flight if item[0] > now]
        return ready

    def next_time(self) -> float | None:
        return min((t for t, _, _ in self.in_flight), default=None)


def test_invite_and_bye_across_a_lossy_wire() -> None:
    """A UAC and a UAS table; the first INVITE, the first 200, the first ACK and the first BYE are lost."""
    ids = SequentialIdFactory()
    wire = LossyWire(delay=0.01, drop={0, 3, 5, 6})
    uac, uas = TransactionTable(), TransactionTable()
    invite = request(branch=ids.branch())
    uac.add(ClientInviteTransaction(invite, 0.0, destination=BOB))
    log: list[str] = []
    trace: list[str] = []
    now = 0.0
    for _ in range(200):  # bounded: every step advances to the next timer or delivery
        uac.handle_timer(now)
        uas.handle_timer(now)
        for data, dest in wire.due(now):
            msg = parse_message_untrusted(data)
            table = uas if dest == BOB else uac
            if isinstance(msg, Response):
                table.receive_response(msg, now)
            elif table.receive_request(msg, now) is not None:
                continue  # a retransmission, absorbed
            elif msg.method == "INVITE":
                tx = table.add(ServerInviteTransaction(msg, now, source=ALICE, retransmit_2xx=True))
                assert isinstance(tx, ServerInviteTransaction)
                tx.send_response(response_for(msg, 180, to_tag="b1"), now)
                contact = [("Contact", "<sip:bob@127.0.0.1:5080>")]
                tx.send_response(response_for(msg, 200, to_tag="b1", extra=contact), now)
            elif msg.method == "BYE":
                bye_tx = table.add(ServerNonInviteTransaction(msg, now, source=ALICE))
                assert isinstance(bye_tx, ServerNonInviteTransaction)
                bye_tx.send_response(response_for(msg, 200), now)
                log.append("bye received")
            elif msg.method == "ACK":
                log.append("ack received")
        for event in uac.events():
            if isinstance(event, ResponseReceived) and event.response.status == 200:
                if event.key.method == "INVITE":
                    log.append("200 received")
                    dialog = dialog_from_2xx(invite, event.response)
                    # Every 2xx, also a retransmission, gets the ACK again (RFC 3261 13.2.2.4).
                    wire.send([(build_ack_for_2xx(dialog, invite, ids.branch()).to_bytes(), BOB)], now)
                    if log.count("200 received") == 1:
                        bye, dialog = build_bye(dialog, ids.branch())
                        uac.add(ClientNonInviteTransaction(bye, now, destination=BOB))
                else:
                    log.append("bye answered")
        list(uas.events())
        for data, dest in uac.datagrams_to_send() + uas.datagrams_to_send():
            trace.append(f"{now:.2f} {data.split(b' ', 2)[:2]!r}")
            wire.send([(data, dest)], now)
        candidates = [t for t in (uac.get_timer(), uas.get_timer(), wire.next_time()) if t is not None]
        if not candidates:
            break
        now = min(candidates)
    assert log.count("200 received") == 2, trace  # the lost ACK made the UAS retransmit its 2xx
    assert log.count("ack received") == 1, trace
    assert "bye received" in log and "bye answered" in log, trace
    assert len(uac) == 0 and len(uas) == 0  # every transaction ended
    assert now < 70.0


def test_merged_request_is_detected() -> None:
    table = TransactionTable()
    invite = request()
    table.add(ServerInviteTransaction(invite, 0.0, source=ALICE))
    # The same INVITE (Call-ID, From tag, CSeq) under another branch: merged, answer 482 (RFC 3261 8.2.2.2).
    forked = request(branch="z9hG4bK-fork", sent_by="127.0.0.1:5071")
    assert table.receive_request(forked, 0.1) is None
    merged = table.find_merged(forked)
    assert merged is not None and merged.request is invite
    # A retransmission is not a merge, nor another CSeq, nor an in-dialog request, nor the CANCEL.
    assert table.find_merged(invite) is None
    assert table.find_merged(request(branch="z9hG4bK-x", cseq=2)) is None
    assert table.find_merged(request(branch="z9hG4bK-x", to_tag="b1")) is None
    assert table.find_merged(build_cancel(invite)) is None


# --- lean state: one heap, bytes dropped -----------------------------------------------------------------


def test_transactions_drop_message_bytes_once_they_cannot_be_sent_again() -> None:
    """An INVITE answered, a non-INVITE's final, a proxy's 2xx in Accepted and every terminated transaction: no
    timer and no retransmission can send those bytes any more, so they are not held for Timers D, K, L or M."""
    table = TransactionTable()
    invite = table.add(ClientInviteTransaction(request(), 0.0, destination=BOB))
    bye = table.add(ClientNonInviteTransaction(request("BYE", "z9hG4bK-b1", cseq=2), 0.0, destination=BOB))
    assert invite._request_bytes is not None and bye._request_bytes is not None
    table.receive_response(response_for(invite.request, 180, to_tag="t"), 0.1)
    table.receive_response(response_for(bye.request, 100), 0.1)
    assert invite._request_bytes is None  # Proceeding: Timer A is over
    assert bye._request_bytes is not None  # Proceeding: Timer E still retransmits every T2
    table.handle_timer(4.6)
    assert table.datagrams_to_send()[-1] == (bye.request.to_bytes(), BOB)
    table.receive_response(response_for(bye.request, 200), 5.0)
    assert bye._request_bytes is None
    table.receive_response(response_for(invite.request, 486, to_tag="t"), 5.0)
    assert invite._ack_bytes is not None  # Completed: a retransmitted 486 gets the ACK again
    table.handle_timer(100.0)
    assert invite.terminated and invite._ack_bytes is None and len(table) == 0

    proxy_side = table.add(ServerInviteTransaction(request(branch="z9hG4bK-p1"), 0.0, source=ALICE))
    uas_side = table.add(ServerInviteTransaction(request(branch="z9hG4bK-u1"), 0.0, source=ALICE,
                                                 retransmit_2xx=True))
    for tx in (proxy_side, uas_side):
        tx.send_response(response_for(tx.request, 200, to_tag="b"), 0.0)
    assert proxy_side._last_bytes is None  # Accepted absorbs INVITE retransmissions: nothing to resend
    assert uas_side._last_bytes is not None  # the UAS core retransmits its 2xx until the ACK
    table.handle_timer(100.0)
    assert uas_side.terminated and uas_side._last_bytes is None


def test_table_keeps_one_heap_entry_per_transaction() -> None:
    """One heap for every timer of every transaction (:class:`TimerHeap`), one entry per transaction at its
    earliest timer: Timer B waits behind Timer A without an entry of its own; stopping timers leaves a stale entry
    that is dropped when it comes up, never searched for. (Before: one entry per armed timer, 2 here.)"""
    table = TransactionTable()
    tx = table.add(ClientInviteTransaction(request(), 0.0, destination=BOB))
    assert set(tx.timers) == {Input.TIMER_A, Input.TIMER_B} and len(table._heap) == 1
    assert table.get_timer() == tx.timers[Input.TIMER_A]
    table.receive_response(response_for(tx.request, 180, to_tag="t"), 0.1)
    assert tx.timers == {} and table.get_timer() is None and len(table._heap) == 0


def test_timers_behind_the_first_fire_in_order_from_one_entry() -> None:
    """The timers that wait behind a transaction's entry fire at their own deadlines, in order across
    transactions: Timer A's retransmissions, then Timer B's timeout at 64*T1, as with one entry per timer."""
    table = TransactionTable()
    first = table.add(ClientInviteTransaction(request(), 0.0, destination=BOB))
    second = table.add(ClientInviteTransaction(request(branch="z9hG4bK-m2"), 0.2, destination=BOB))
    assert len(table._heap) == 2
    t1 = first.config.t1
    assert len(table.datagrams_to_send()) == 2  # the two INVITEs
    sent: list[float] = []
    while (deadline := table.get_timer()) is not None and deadline < 64 * t1:
        table.handle_timer(deadline)
        sent.extend(deadline for _ in table.datagrams_to_send())
    # Timer A of each at T1, 3T1, 7T1, ... (the second's 0.2 later), all before 64T1.
    expected = sorted([t1 * (2 ** k - 1) for k in range(1, 7)] + [0.2 + t1 * (2 ** k - 1) for k in range(1, 7)])
    assert sent == pytest.approx(expected)
    table.handle_timer(64 * t1)
    assert first.terminated and not second.terminated
    table.handle_timer(64 * t1 + 0.2)
    assert second.terminated and table.get_timer() is None
