"""Client transactions: INVITE (RFC 3261 17.1.1 with RFC 6026 7.2) and non-INVITE (RFC 3261 17.1.2).

INVITE client (RFC 6026 figure 5)::

    Calling --1xx--> Proceeding --2xx--> Accepted --Timer M--> Terminated
       |  \\----------------2xx--------------^
       |--300-699 (send ACK)--> Completed --Timer D--> Terminated
       '--Timer B--> Terminated (timed out)

The ACK for a 300-699 belongs to this transaction and goes hop by hop (17.1.1.3); the ACK for a 2xx does not:
it is a new request built by :func:`gamesdk.sip.dialog.build_ack_for_2xx` and sent end to end.

Non-INVITE client (RFC 3261 figure 6)::

    Trying --1xx--> Proceeding --200-699--> Completed --Timer K--> Terminated
      '--200-699---------------------------^        Timer F in Trying/Proceeding --> Terminated (timed out)
"""

from __future__ import annotations

from typing import ClassVar

from gamesdk.address import Address
from gamesdk.errors import LocalProtocolError
from gamesdk.sip.headers import CSeq
from gamesdk.sip.message import Headers, Request, Response
from gamesdk.sip.timers import TimerConfig
from gamesdk.sip.transaction import (
    Action,
    Input,
    RequestRetransmitted,
    Table,
    Transaction,
    TransactionState,
    TransactionTimedOut,
    client_key,
    pass_up,
    response_input,
    stop_timers,
)

__all__ = [
    "ClientInviteTransaction",
    "ClientNonInviteTransaction",
    "ClientTransaction",
    "build_ack_for_non2xx",
    "build_cancel",
]

S = TransactionState
I = Input  # short alias keeps the tables readable


def build_ack_for_non2xx(invite: Request, response: Response) -> Request:
    """The ACK for a 300-699 final response (RFC 3261 17.1.1.3).

    Same Request-URI, Call-ID, From, CSeq number and top Via (so the same branch) as the INVITE, the To of the
    response (with its tag), and the INVITE's Route headers.
    """
    return _same_transaction_request(invite, "ACK", to=response.headers.get("To") or "")


def build_cancel(invite: Request) -> Request:
    """A CANCEL for a pending INVITE (RFC 3261 9.1): same Request-URI, Call-ID, To, From, CSeq number and top
    Via as the INVITE, CSeq method CANCEL, the INVITE's Route headers. Send it in its own non-INVITE client
    transaction, and only after a provisional response arrived."""
    return _same_transaction_request(invite, "CANCEL", to=invite.headers.get("To") or "")


def _same_transaction_request(invite: Request, method: str, *, to: str) -> Request:
    # ACK for a non-2xx and CANCEL share the INVITE's top Via (its branch), Request-URI, Route set, From,
    # Call-ID and CSeq number (RFC 3261 17.1.1.3 and 9.1); only the method and, for the ACK, the To differ.
    headers = Headers()
    headers.add("Via", invite.headers.values("Via")[0])
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", to)
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", str(CSeq(invite.cseq.seq, method)))
    return Request(method, invite.uri, headers)


class ClientTransaction(Transaction):
    """A transaction this element started by sending a request."""

    ROLE = "client"
    __slots__ = ("_ack_bytes", "_request_bytes", "final_response")

    def __init__(
        self,
        request: Request,
        now: float,
        *,
        destination: Address,
        config: TimerConfig | None = None,
        reliable: bool = False,
        initial: TransactionState,
    ) -> None:
        super().__init__(
            client_key(request),
            request,
            initial,
            destination=destination,
            config=config or TimerConfig(),
            reliable=reliable,
        )
        #: The request as sent, while Timer A/E may retransmit it (dropped after: see :func:`_drop_request`).
        self._request_bytes: bytes | None = request.to_bytes()
        self._ack_bytes: bytes | None = None
        #: The first final response received, once there is one.
        self.final_response: Response | None = None
        self._send(self._request_bytes)

    def receive_response(self, response: Response, now: float) -> None:
        """Feed a response that matched this transaction (see :func:`gamesdk.sip.transaction.client_key`)."""
        self._input(response_input(response.status, from_tu=False), now, response)
        self._changed()

    def _release(self) -> None:
        self._request_bytes = None
        self._ack_bytes = None

    def _retransmit(self, timer: Input, interval: float, now: float) -> None:
        assert self._request_bytes is not None  # only Calling/Trying/Proceeding retransmit, which keep them
        self._send(self._request_bytes)
        self._start(timer, interval, now)
        self._emit(RequestRetransmitted(key=self.key, count=self._sends))


# --- INVITE client actions -------------------------------------------------------------------------------


def _retransmit_a(tx: Transaction, now: float, message: Request | Response | None) -> None:
    # 17.1.1.2: Timer A doubles on every firing, without the T2 cap that non-INVITE requests have.
    assert isinstance(tx, ClientTransaction)
    tx._retransmit(I.TIMER_A, 2 * tx._interval, now)


def _drop_request(tx: Transaction, now: float, message: Request | Response | None) -> None:
    # The request is never sent again from here (an INVITE once answered, a non-INVITE once final): an element
    # with thousands of transactions waiting out Timers D, K or M must not hold their bytes.
    assert isinstance(tx, ClientTransaction)
    tx._request_bytes = None


def _timed_out(timer: str) -> Action:
    def action(tx: Transaction, now: float, message: Request | Response | None) -> None:
        tx._emit(TransactionTimedOut(key=tx.key, timer=timer))

    action.__name__ = f"report_timer_{timer}"
    return action


def _record_final(tx: Transaction, now: float, message: Request | Response | None) -> None:
    assert isinstance(tx, ClientTransaction) and isinstance(message, Response)
    tx.final_response = message


def _send_ack(tx: Transaction, now: float, message: Request | Response | None) -> None:
    assert isinstance(tx, ClientTransaction) and isinstance(message, Response)
    tx._ack_bytes = build_ack_for_non2xx(tx.request, message).to_bytes()
    tx._send(tx._ack_bytes)


def _resend_ack(tx: Transaction, now: float, message: Request | Response | None) -> None:
    # 17.1.1.2: each retransmission of the final response is answered with the same ACK.
    assert isinstance(tx, ClientTransaction) and tx._ack_bytes is not None
    tx._send(tx._ack_bytes)


def _start_d(tx: Transaction, now: float, message: Request | Response | None) -> None:
    tx._start(I.TIMER_D, tx.config.wait_d(tx.reliable), now)


def _start_m(tx: Transaction, now: float, message: Request | Response | None) -> None:
    tx._start(I.TIMER_M, tx.config.m, now)


_report_b = _timed_out("B")
_report_f = _timed_out("F")
_FIRST_2XX = (stop_timers, _drop_request, _record_final, pass_up, _start_m)
_FIRST_FAILURE = (stop_timers, _drop_request, _record_final, pass_up, _send_ack, _start_d)


class ClientInviteTransaction(ClientTransaction):
    """INVITE client transaction. Created with the INVITE, which it sends at once (state Calling)."""

    TABLE: ClassVar[Table] = {
        (S.CALLING, I.TIMER_A): (S.CALLING, (_retransmit_a,)),
        (S.CALLING, I.TIMER_B): (S.TERMINATED, (_report_b,)),
        (S.CALLING, I.RECV_1XX): (S.PROCEEDING, (stop_timers, _drop_request, pass_up)),
        (S.CALLING, I.RECV_2XX): (S.ACCEPTED, _FIRST_2XX),
        (S.CALLING, I.RECV_3XX_6XX): (S.COMPLETED, _FIRST_FAILURE),
        (S.PROCEEDING, I.RECV_1XX): (S.PROCEEDING, (pass_up,)),
        (S.PROCEEDING, I.RECV_2XX): (S.ACCEPTED, _FIRST_2XX),
        (S.PROCEEDING, I.RECV_3XX_6XX): (S.COMPLETED, _FIRST_FAILURE),
        (S.COMPLETED, I.RECV_3XX_6XX): (S.COMPLETED, (_resend_ack,)),
        (S.COMPLETED, I.TIMER_D): (S.TERMINATED, ()),
        # RFC 6026 7.2: 2xx retransmissions (and 2xx from other forks) go up so the TU ACKs each one.
        (S.ACCEPTED, I.RECV_2XX): (S.ACCEPTED, (pass_up,)),
        (S.ACCEPTED, I.TIMER_M): (S.TERMINATED, ()),
    }

    def __init__(
        self,
        request: Request,
        now: float,
        *,
        destination: Address,
        config: TimerConfig | None = None,
        reliable: bool = False,
    ) -> None:
        if request.method != "INVITE":
            raise LocalProtocolError(f"ClientInviteTransaction needs an INVITE, not {request.method}", 500)
        super().__init__(
            request, now, destination=destination, config=config, reliable=reliable, initial=S.CALLING
        )
        if not reliable:
            self._start(I.TIMER_A, self.config.a, now)
        self._start(I.TIMER_B, self.config.b, now)


# --- non-INVITE client actions ---------------------------------------------------------------------------


def _retransmit_e(tx: Transaction, now: float, message: Request | Response | None) -> None:
    # 17.1.2.2: in Trying, E doubles up to T2; in Proceeding it fires every T2.
    assert isinstance(tx, ClientTransaction)
    if tx.state is S.TRYING:
        interval = tx.config.backoff(tx._interval)
    else:
        interval = tx.config.t2
    tx._retransmit(I.TIMER_E, interval, now)


def _start_k(tx: Transaction, now: float, message: Request | Response | None) -> None:
    tx._start(I.TIMER_K, tx.config.wait_k(tx.reliable), now)


_NON_INVITE_FINAL = (stop_timers, _drop_request, _record_final, pass_up, _start_k)


class ClientNonInviteTransaction(ClientTransaction):
    """Non-INVITE client transaction (REGISTER, BYE, CANCEL, PUBLISH, OPTIONS, ...). Starts in Trying."""

    TABLE: ClassVar[Table] = {
        (S.TRYING, I.TIMER_E): (S.TRYING, (_retransmit_e,)),
        (S.TRYING, I.TIMER_F): (S.TERMINATED, (_report_f,)),
        (S.TRYING, I.RECV_1XX): (S.PROCEEDING, (pass_up,)),
        (S.TRYING, I.RECV_2XX): (S.COMPLETED, _NON_INVITE_FINAL),
        (S.TRYING, I.RECV_3XX_6XX): (S.COMPLETED, _NON_INVITE_FINAL),
        (S.PROCEEDING, I.TIMER_E): (S.PROCEEDING, (_retransmit_e,)),
        (S.PROCEEDING, I.TIMER_F): (S.TERMINATED, (_report_f,)),
        (S.PROCEEDING, I.RECV_1XX): (S.PROCEEDING, (pass_up,)),
        (S.PROCEEDING, I.RECV_2XX): (S.COMPLETED, _NON_INVITE_FINAL),
        (S.PROCEEDING, I.RECV_3XX_6XX): (S.COMPLETED, _NON_INVITE_FINAL),
        (S.COMPLETED, I.TIMER_K): (S.TERMINATED, ()),
    }

    def __init__(
        self,
        request: Request,
        now: float,
        *,
        destination: Address,
        config: TimerConfig | None = None,
        reliable: bool = False,
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise LocalProtocolError(f"{request.method} cannot use a non-INVITE client transaction", 500)
        super().__init__(
            request, now, destination=destination, config=config, reliable=reliable, initial=S.TRYING
        )
        if not reliable:
            self._start(I.TIMER_E, self.config.e, now)
        self._start(I.TIMER_F, self.config.f, now)
