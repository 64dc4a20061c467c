"""Server transactions: INVITE (RFC 3261 17.2.1 with RFC 6026 7.1) and non-INVITE (RFC 3261 17.2.2).

INVITE server (RFC 6026 figure 7)::

    Proceeding --TU 2xx--> Accepted --Timer L--> Terminated
      |  (1xx from TU sent; INVITE retransmissions get the last 1xx again)
      '--TU 300-699--> Completed --ACK--> Confirmed --Timer I--> Terminated
                          |  Timer G resends the response, Timer H: no ACK --> Terminated (timed out)

In Accepted, INVITE retransmissions are absorbed, 2xx retransmissions from the TU are sent, and an ACK with the
INVITE's branch is passed up (RFC 6026 8.5-8.8). Who retransmits the 2xx? The UAS core (RFC 3261 13.3.1.4), not
the transaction: a UAS enables ``retransmit_2xx=True`` and this class does it for it (T1 doubling to T2 until
the end-to-end ACK is reported, :class:`AckTimedOut` after 64*T1). A proxy leaves it off and forwards the 2xx
retransmissions it receives.

Non-INVITE server (RFC 3261 figure 8)::

    Trying --TU 1xx--> Proceeding --TU 200-699--> Completed --Timer J--> Terminated
      '-----TU 200-699---------------------------^   request retransmissions get the last response again
"""

from __future__ import annotations

from typing import ClassVar

from gamesdk.address import Address
from gamesdk.errors import LocalProtocolError
from gamesdk.sip.message import Request, Response, response_for
from gamesdk.sip.timers import TimerConfig
from gamesdk.sip.transaction import (
    AckReceived,
    AckTimedOut,
    Input,
    ResponseRetransmitted,
    Table,
    Transaction,
    TransactionState,
    TransactionTimedOut,
    response_destination,
    response_input,
    server_key,
    stop_timers,
)

__all__ = ["ServerInviteTransaction", "ServerNonInviteTransaction", "ServerTransaction"]

S = TransactionState
I = Input  # short alias keeps the tables readable


class ServerTransaction(Transaction):
    """A transaction started by a request this element received."""

    ROLE = "server"
    __slots__ = ("_last_bytes", "last_response")

    def __init__(
        self,
        request: Request,
        now: float,
        *,
        source: Address,
        config: TimerConfig | None = None,
        reliable: bool = False,
        initial: TransactionState,
    ) -> None:
        super().__init__(
            server_key(request),
            request,
            initial,
            destination=response_destination(request, source),
            config=config or TimerConfig(),
            reliable=reliable,
        )
        #: The last response the TU sent through this transaction.
        self.last_response: Response | None = None
        #: Its bytes, while a retransmission of the request or a timer may send them again.
        self._last_bytes: bytes | None = None

    def receive_request(self, request: Request, now: float) -> None:
        """Feed a request that matched this transaction: a retransmission, or the ACK of an INVITE."""
        self._input(I.RECV_ACK if request.method == "ACK" else I.RECV_REQUEST, now, request)
        self._changed()

    def send_response(self, response: Response, now: float) -> None:
        """Send a response (from the TU). Raises :class:`LocalProtocolError` when the state forbids it,
        e.g. a second final response."""
        self._tu_input(response_input(response.status, from_tu=True), now, response)

    def _release(self) -> None:
        self._last_bytes = None

    def _resend(self) -> bool:
        if self._last_bytes is None:
            return False
        self._send(self._last_bytes)
        return True

    def _retransmit(self, timer: Input, now: float) -> None:
        self._resend()
        self._start(timer, self.config.backoff(self._interval), now)
        assert self.last_response is not None
        self._emit(ResponseRetransmitted(key=self.key, status=self.last_response.status, count=self._sends))


# --- actions ---------------------------------------------------------------------------------------------


def _send_response(tx: Transaction, now: float, message: Request | Response | None) -> None:
    assert isinstance(tx, ServerTransaction) and isinstance(message, Response)
    tx.last_response = message
    data = message.to_bytes()
    tx._send(data)
    # An INVITE's 2xx is sent again only by a UAS that retransmits it (Accepted absorbs the INVITE's
    # retransmissions, RFC 6026): otherwise its bytes are not kept for the 64*T1 of Timer L.
    unused = isinstance(tx, ServerInviteTransaction) and 200 <= message.status < 300 and not tx.retransmit_2xx
    tx._last_bytes = None if unused else data


def _resend_last(tx: Transaction, now: float, message: Request | Response | None) -> None:
    # 17.2.1 / 17.2.2: a retransmitted request gets the most recent response again (none yet: absorbed).
    assert isinstance(tx, ServerTransaction)
    tx._resend()


def _start_g_h(tx: Transaction, now: float, message: Request | Response | None) -> None:
    if not tx.reliable:
        tx._start(I.TIMER_G, tx.config.g, now)
    tx._start(I.TIMER_H, tx.config.h, now)


def _retransmit_g(tx: Transaction, now: float, message: Request | Response | None) -> None:
    assert isinstance(tx, ServerTransaction)
    tx._retransmit(I.TIMER_G, now)


def _report_h(tx: Transaction, now: float, message: Request | Response | None) -> None:
    tx._emit(TransactionTimedOut(key=tx.key, timer="H"))


def _start_i(tx: Transaction, now: float, message: Request | Response | None) -> None:
    tx._start(I.TIMER_I, tx.config.wait_i(tx.reliable), now)


def _start_l(tx: Transaction, now: float, message: Request | Response | None) -> None:
    tx._start(I.TIMER_L, tx.config.l, now)
    if isinstance(tx, ServerInviteTransaction) and tx.retransmit_2xx:
        tx._start(I.TIMER_2XX, tx.config.t1, now)


def _retransmit_2xx(tx: Transaction, now: float, message: Request | Response | None) -> None:
    assert isinstance(tx, ServerTransaction)
    tx._retransmit(I.TIMER_2XX, now)


def _ack_of_2xx(tx: Transaction, now: float, message: Request | Response | None) -> None:
    assert isinstance(tx, ServerInviteTransaction)
    tx.acked = True
    tx._stop(I.TIMER_2XX)


def _pass_up_ack(tx: Transaction, now: float, message: Request | Response | None) -> None:
    assert isinstance(message, Request)
    tx._emit(AckReceived(key=tx.key, request=message))


def _end_accepted(tx: Transaction, now: float, message: Request | Response | None) -> None:
    assert isinstance(tx, ServerInviteTransaction)
    if tx.retransmit_2xx and not tx.acked:
        tx._emit(AckTimedOut(key=tx.key))


def _start_j(tx: Transaction, now: float, message: Request | Response | None) -> None:
    tx._start(I.TIMER_J, tx.config.wait_j(tx.reliable), now)


class ServerInviteTransaction(ServerTransaction):
    """INVITE server transaction, created with the received INVITE (state Proceeding).

    ``send_trying=True`` sends 100 Trying at once (RFC 3261 17.2.1: required unless the TU answers within
    200 ms; a proxy should). ``retransmit_2xx=True`` makes it do the UAS core's 2xx retransmissions.
    """

    __slots__ = ("acked", "retransmit_2xx")

    TABLE: ClassVar[Table] = {
        (S.PROCEEDING, I.RECV_REQUEST): (S.PROCEEDING, (_resend_last,)),
        (S.PROCEEDING, I.TU_1XX): (S.PROCEEDING, (_send_response,)),
        (S.PROCEEDING, I.TU_2XX): (S.ACCEPTED, (_send_response, _start_l)),
        (S.PROCEEDING, I.TU_3XX_6XX): (S.COMPLETED, (_send_response, _start_g_h)),
        (S.COMPLETED, I.RECV_REQUEST): (S.COMPLETED, (_resend_last,)),
        (S.COMPLETED, I.TIMER_G): (S.COMPLETED, (_retransmit_g,)),
        (S.COMPLETED, I.TIMER_H): (S.TERMINATED, (_report_h,)),
        (S.COMPLETED, I.RECV_ACK): (S.CONFIRMED, (stop_timers, _start_i)),
        (S.CONFIRMED, I.TIMER_I): (S.TERMINATED, ()),
        # RFC 6026 8.5-8.8: absorb INVITE retransmissions, send the TU's 2xx retransmissions, pass ACKs up.
        (S.ACCEPTED, I.RECV_REQUEST): (S.ACCEPTED, ()),
        (S.ACCEPTED, I.TU_2XX): (S.ACCEPTED, (_send_response,)),
        (S.ACCEPTED, I.RECV_ACK): (S.ACCEPTED, (_ack_of_2xx, _pass_up_ack)),
        (S.ACCEPTED, I.TU_2XX_ACKED): (S.ACCEPTED, (_ack_of_2xx,)),
        (S.ACCEPTED, I.TIMER_2XX): (S.ACCEPTED, (_retransmit_2xx,)),
        (S.ACCEPTED, I.TIMER_L): (S.TERMINATED, (_end_accepted,)),
    }

    def __init__(
        self,
        request: Request,
        now: float,
        *,
        source: Address,
        config: TimerConfig | None = None,
        reliable: bool = False,
        send_trying: bool = False,
        retransmit_2xx: bool = False,
    ) -> None:
        if request.method != "INVITE":
            raise LocalProtocolError(f"ServerInviteTransaction needs an INVITE, not {request.method}", 500)
        super().__init__(request, now, source=source, config=config, reliable=reliable, initial=S.PROCEEDING)
        #: True when this transaction retransmits its 2xx until :meth:`ack_2xx_received` (UAS behaviour).
        self.retransmit_2xx = retransmit_2xx
        #: True once the ACK for the 2xx was seen.
        self.acked = False
        if send_trying:
            self.send_response(response_for(request, 100), now)

    def ack_2xx_received(self, now: float) -> None:
        """The TU received the end-to-end ACK for the 2xx (a new transaction, RFC 3261 17.1.1.3): stop the
        2xx retransmissions. :class:`~gamesdk.sip.transaction_table.TransactionTable` calls this itself."""
        self._input(I.TU_2XX_ACKED, now, None)
        self._changed()


class ServerNonInviteTransaction(ServerTransaction):
    """Non-INVITE server transaction, created with the received request (state Trying)."""

    __slots__ = ()

    TABLE: ClassVar[Table] = {
        (S.TRYING, I.TU_1XX): (S.PROCEEDING, (_send_response,)),
        (S.TRYING, I.TU_2XX): (S.COMPLETED, (_send_response, _start_j)),
        (S.TRYING, I.TU_3XX_6XX): (S.COMPLETED, (_send_response, _start_j)),
        (S.PROCEEDING, I.RECV_REQUEST): (S.PROCEEDING, (_resend_last,)),
        (S.PROCEEDING, I.TU_1XX): (S.PROCEEDING, (_send_response,)),
        (S.PROCEEDING, I.TU_2XX): (S.COMPLETED, (_send_response, _start_j)),
        (S.PROCEEDING, I.TU_3XX_6XX): (S.COMPLETED, (_send_response, _start_j)),
        (S.COMPLETED, I.RECV_REQUEST): (S.COMPLETED, (_resend_last,)),
        (S.COMPLETED, I.TIMER_J): (S.TERMINATED, ()),
    }

    def __init__(
        self,
        request: Request,
        now: float,
        *,
        source: Address,
        config: TimerConfig | None = None,
        reliable: bool = False,
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise LocalProtocolError(f"{request.method} cannot use a non-INVITE server transaction", 500)
        super().__init__(request, now, source=source, config=config, reliable=reliable, initial=S.TRYING)
