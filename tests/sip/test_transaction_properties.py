"""Hypothesis: any order of responses, requests, TU answers and timer firings keeps the transaction rules."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gamesdk.errors import LocalProtocolError
from gamesdk.sip.message import Request, response_for
from gamesdk.sip.parser import parse_message_untrusted
from gamesdk.sip.transaction import (
    ResponseReceived,
    Transaction,
    TransactionEvent,
    TransactionState,
    TransactionTerminated,
    TransactionTimedOut,
)
from gamesdk.sip.transaction_client import ClientInviteTransaction, ClientNonInviteTransaction
from gamesdk.sip.transaction_server import ServerInviteTransaction, ServerNonInviteTransaction

STATUSES = st.sampled_from([100, 180, 183, 200, 202, 302, 404, 486, 500, 603])
# Each step: wait this long (firing due timers), then do something.
STEP = st.tuples(
    st.floats(min_value=0.0, max_value=10.0), st.sampled_from(["msg", "ack", "nothing"]), STATUSES
)
# The longest any transaction can live after its last input: 64*T1 plus Timer D (32 s) or T4, with margin.
SETTLE = 200.0


def request(method: str) -> Request:
    text = (
        f"{method} sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-p;rport\r\n"
        "From: <sip:a@x>;tag=a\r\nTo: <sip:b@y>\r\nCall-ID: p@test\r\n"
        f"CSeq: 1 {method}\r\nContact: <sip:a@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n"
    )
    msg = parse_message_untrusted(text.encode())
    assert isinstance(msg, Request)
    return msg


def advance(tx: Transaction, now: float, until: float, events: list[TransactionEvent]) -> None:
    for _ in range(1000):  # bounded: each firing moves a timer forward or ends the transaction
        t = tx.get_timer()
        if t is None or t > until:
            break
        assert t >= now - 1e-9, "a timer fired in the past"
        tx.handle_timer(t)
        events.extend(tx.events())
        tx.datagrams_to_send()


def check_common(tx: Transaction, events: list[TransactionEvent]) -> None:
    terminated = [e for e in events if isinstance(e, TransactionTerminated)]
    assert len(terminated) <= 1
    if terminated:
        assert events[-1] == terminated[0] and tx.terminated and tx.get_timer() is None


@settings(max_examples=150, deadline=None)
@given(invite=st.booleans(), reliable=st.booleans(), steps=st.lists(STEP, max_size=25))
def test_client_transaction_rules(invite: bool, reliable: bool, steps: list[tuple[float, str, int]]) -> None:
    req = request("INVITE" if invite else "OPTIONS")
    cls = ClientInviteTransaction if invite else ClientNonInviteTransaction
    tx = cls(req, 0.0, destination=("127.0.0.1", 5060), reliable=reliable)
    tx.datagrams_to_send()
    events: list[TransactionEvent] = []
    now = 0.0
    for wait, kind, status in steps:
        advance(tx, now, now + wait, events)
        now += wait
        if kind == "msg":
            tx.receive_response(response_for(req, status, to_tag="b"), now)
            events.extend(tx.events())
    advance(tx, now, now + SETTLE, events)
    check_common(tx, events)
    finals = [
        e.response.status for e in events if isinstance(e, ResponseReceived) and e.response.status >= 200
    ]
    provisional = any(isinstance(e, ResponseReceived) and e.response.status < 200 for e in events)
    if invite and provisional and not finals:
        # RFC 3261 17.1.1.2: after a 1xx an INVITE waits for its final response with no timer of its own
        # (the TU CANCELs, a proxy runs Timer C).
        assert tx.state is TransactionState.PROCEEDING and tx.get_timer() is None
    else:
        assert tx.terminated  # B, D, F, K or M ended it
    timed_out = any(isinstance(e, TransactionTimedOut) for e in events)
    assert timed_out == (not finals and not (invite and provisional))
    if invite:
        # One non-2xx at most, never mixed with 2xx; 2xx may repeat (RFC 6026 Accepted passes them up).
        failures = [s for s in finals if s >= 300]
        assert len(failures) <= 1
        assert not (failures and len(finals) > 1)
    else:
        assert len(finals) <= 1


@settings(max_examples=150, deadline=None)
@given(invite=st.booleans(), reliable=st.booleans(), steps=st.lists(STEP, max_size=25))
def test_server_transaction_rules(invite: bool, reliable: bool, steps: list[tuple[float, str, int]]) -> None:
    req = request("INVITE" if invite else "OPTIONS")
    ack = request("ACK")
    tx: ServerInviteTransaction | ServerNonInviteTransaction
    if invite:
        tx = ServerInviteTransaction(req, 0.0, source=("127.0.0.1", 5070), reliable=reliable)
    else:
        tx = ServerNonInviteTransaction(req, 0.0, source=("127.0.0.1", 5070), reliable=reliable)
    events: list[TransactionEvent] = []
    sent_final: list[int] = []
    now = 0.0
    for wait, kind, status in steps:
        advance(tx, now, now + wait, events)
        now += wait
        if kind == "msg":
            before = tx.state
            try:
                tx.send_response(response_for(req, status, to_tag="b"), now)
            except LocalProtocolError:
                # Only a response the state forbids is refused: after a final (2xx retransmissions of an
                # INVITE excepted) or once terminated.
                assert sent_final or tx.terminated, (before, status)
            else:
                if status >= 200:
                    sent_final.append(status)
        elif kind == "ack" and invite:
            tx.receive_request(ack, now)
        else:
            tx.receive_request(req, now)
        events.extend(tx.events())
        tx.datagrams_to_send()
    advance(tx, now, now + SETTLE, events)
    check_common(tx, events)
    # A server transaction ends by itself only once a final response went out; until then it waits for the TU.
    assert tx.terminated == bool(sent_final)
    if sent_final:
        assert len({s >= 300 for s in sent_final}) == 1  # never both a 2xx and a failure
        if sent_final[0] >= 300 or not invite:
            assert len(sent_final) == 1
