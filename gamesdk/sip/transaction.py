"""SIP transactions, common part: keys and matching, states, inputs, events and the driving contract.

RFC 3261 section 17 as amended by RFC 6026 (the INVITE Accepted state with Timers L and M). The four state
machines live in :mod:`gamesdk.sip.transaction_client` and :mod:`gamesdk.sip.transaction_server`, the registry
that routes messages to them in :mod:`gamesdk.sip.transaction_table`. The states, the timer names
(:class:`Input`) and the :class:`TimerHeap` here are also those of the regional server's proxy
(:mod:`server.proxy_responses`), which keeps its section 16 transaction pairs in one such heap.

Driving contract (sans-IO, the same for every transaction and for the table)::

    tx = ClientInviteTransaction(invite, now, destination=("127.0.0.1", 5060))
    send(tx.datagrams_to_send())          # list of (bytes, (host, port))
    ...on a datagram:  tx.receive_response(response, now)
    ...on a timer:     tx.handle_timer(now)          # when now >= tx.get_timer()
    ...then:           send(tx.datagrams_to_send()); handle each tx.next_event() until None

Rules the state tables follow:

1. A (state, input) pair missing from a table is absorbed silently, except TU inputs (``send_response``),
   which raise :class:`~gamesdk.errors.LocalProtocolError`: the TU broke the rules.
2. Timers are started and stopped only by the actions named in the table. A timer of zero seconds (D, I, J, K on
   reliable transports) fires at once.
3. Entering Terminated stops every timer and emits :class:`TransactionTerminated` exactly once.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, Protocol, TypeVar

from gamesdk.address import Address
from gamesdk.errors import LocalProtocolError, RemoteProtocolError
from gamesdk.sip.ids import BRANCH_MAGIC_COOKIE
from gamesdk.sip.message import Request, Response
from gamesdk.sip.timers import TimerConfig

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "NO_ENTRY",
    "AckReceived",
    "AckTimedOut",
    "Input",
    "RequestRetransmitted",
    "ResponseReceived",
    "ResponseRetransmitted",
    "TimerHeap",
    "Transaction",
    "TransactionEvent",
    "TransactionKey",
    "TransactionState",
    "TransactionTerminated",
    "TransactionTimedOut",
    "TransportFailed",
    "cancel_target_key",
    "client_key",
    "response_destination",
    "server_key",
]


# --- keys and matching -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransactionKey:
    """Identifies one transaction in a table.

    RFC 3261 17.1.3 (client): branch of the top Via + CSeq method. RFC 3261 17.2.3 (server): branch + sent-by of
    the top Via + request method, with ACK counted as INVITE. ``role`` keeps client and server keys apart (an
    element may talk to itself). ``legacy`` holds the RFC 2543 matching values when the branch lacks the cookie.
    """

    role: str  # "client" or "server"
    method: str
    branch: str
    sent_by: Address | None = None
    legacy: tuple[str, ...] = ()


def client_key(message: Request | Response) -> TransactionKey:
    """Key of the client transaction a response (or the request that starts one) belongs to.

    Raises :class:`RemoteProtocolError` (400) when the top Via has no branch.
    """
    via = message.top_via
    branch = via.branch
    if not branch:
        raise RemoteProtocolError("top Via has no branch", 400)
    return TransactionKey("client", message.cseq.method.upper(), branch)


def server_key(request: Request) -> TransactionKey:
    """Key of the server transaction a request belongs to (ACK maps to its INVITE, RFC 3261 17.2.3)."""
    method = request.method.upper()
    if method == "ACK":
        method = "INVITE"
    via = request.top_via
    branch = via.branch or ""
    if branch.startswith(BRANCH_MAGIC_COOKIE):
        return TransactionKey("server", method, branch, via.sent_by)
    # RFC 2543 peers (17.2.3, second half): match on Request-URI, From tag, Call-ID, CSeq number and top Via.
    # The To tag is left out so the ACK for a non-2xx, which carries the tag we added, still matches.
    legacy = (
        request.uri,
        request.from_.tag or "",
        request.call_id,
        str(request.cseq.seq),
        str(via),
    )
    return TransactionKey("server", method, branch, via.sent_by, legacy)


def cancel_target_key(cancel: Request) -> TransactionKey:
    """Key of the INVITE server transaction a CANCEL refers to (RFC 3261 9.2: same matching, method INVITE)."""
    key = server_key(cancel)
    return TransactionKey("server", "INVITE", key.branch, key.sent_by, key.legacy)


def response_destination(request: Request, source: Address) -> Address:
    """Where responses to ``request`` go (RFC 3261 18.2.2 for unreliable transports, with RFC 3581 rport).

    With ``rport`` in the top Via, the source address and port; otherwise the source address (the ``received``
    value) and the port of the Via sent-by.
    """
    via = request.top_via
    if via.rport is not None:
        return source
    return (source[0], via.port if via.port is not None else via.sent_by[1])


# --- states, inputs, events ------------------------------------------------------------------------------


class TransactionState(enum.Enum):
    """RFC 3261 figures 5-8 and RFC 6026 figures 5 and 7."""

    #: INVITE client: request sent, Timer A retransmitting it.
    CALLING = "Calling"
    #: Non-INVITE client: request sent, Timer E retransmitting it.
    TRYING = "Trying"
    #: A provisional response was received (client) or the request is being worked on (server).
    PROCEEDING = "Proceeding"
    #: A final response was received (client) or sent (server); absorbing retransmissions.
    COMPLETED = "Completed"
    #: INVITE server: the ACK for a non-2xx arrived; absorbing ACK retransmissions (Timer I).
    CONFIRMED = "Confirmed"
    #: INVITE client or server after a 2xx (RFC 6026): 2xx retransmissions pass, Timer L / M running.
    ACCEPTED = "Accepted"
    #: Done; the transaction is removed from its table.
    TERMINATED = "Terminated"


class Input(enum.Enum):
    """What drives a transaction: messages from the wire, responses from the TU, timers."""

    # Members are singletons compared by identity: hash them by identity too (a C slot, where Enum's own
    # __hash__ is a Python call), since timers are dict keys on every message of a proxy's hot path.
    __hash__ = object.__hash__

    #: A provisional response arrived (client).
    RECV_1XX = "1xx received"
    #: A 2xx arrived (client).
    RECV_2XX = "2xx received"
    #: A 300-699 arrived (client).
    RECV_3XX_6XX = "300-699 received"
    #: The request arrived again (server).
    RECV_REQUEST = "request retransmission received"
    #: An ACK matching the INVITE server transaction arrived.
    RECV_ACK = "ACK received"
    #: The TU reports the end-to-end ACK of our 2xx (UAS retransmitting 2xx, RFC 3261 13.3.1.4).
    TU_2XX_ACKED = "TU saw the ACK of the 2xx"
    #: The TU sends a provisional response (server).
    TU_1XX = "TU sends 1xx"
    #: The TU sends a 2xx (server).
    TU_2XX = "TU sends 2xx"
    #: The TU sends a 300-699 (server).
    TU_3XX_6XX = "TU sends 300-699"
    #: The transport reported a failure to send.
    TRANSPORT_ERROR = "transport error"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    #: Proxy INVITE timeout (RFC 3261 16.6 step 11), reset by every provisional response; the proxy arms it.
    TIMER_C = "Timer C"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"
    #: UAS 2xx retransmission timer (RFC 3261 13.3.1.4: T1 doubling to T2), only when enabled.
    TIMER_2XX = "2xx retransmit timer"


def response_input(status: int, *, from_tu: bool) -> Input:
    """The input a response status maps to."""
    if status < 200:
        return Input.TU_1XX if from_tu else Input.RECV_1XX
    if status < 300:
        return Input.TU_2XX if from_tu else Input.RECV_2XX
    return Input.TU_3XX_6XX if from_tu else Input.RECV_3XX_6XX


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionEvent:
    """Base class of what a transaction reports to its TU."""

    #: The transaction that reports it.
    key: TransactionKey


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseReceived(TransactionEvent):
    """A response for the TU (client): every 1xx, the first final response, and 2xx retransmissions while
    Accepted (RFC 6026 7.2: the TU re-sends its ACK for each)."""

    response: Response


@dataclass(frozen=True, slots=True, kw_only=True)
class AckReceived(TransactionEvent):
    """An ACK with the INVITE's branch arrived while Accepted; RFC 6026 8.8 passes it to the TU."""

    request: Request


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRetransmitted(TransactionEvent):
    """Timer A or E fired and the request was sent again (for statistics and traces)."""

    #: How many times the request has now been sent in all.
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseRetransmitted(TransactionEvent):
    """Timer G (or the UAS 2xx timer) fired and the last response was sent again."""

    status: int
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionTimedOut(TransactionEvent):
    """No final response (Timer B, F) or no ACK for a non-2xx (Timer H). Treat as 408 (RFC 3261 8.1.3.1)."""

    #: "B", "F" or "H".
    timer: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AckTimedOut(TransactionEvent):
    """A UAS sent its 2xx for 64*T1 without an ACK: the session SHOULD be ended with BYE (RFC 3261 13.3.1.4)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportFailed(TransactionEvent):
    """The transport could not send; treat as 503 (RFC 3261 8.1.3.1)."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionTerminated(TransactionEvent):
    """The transaction reached Terminated and left its table."""


# --- one timer heap for many transactions ----------------------------------------------------------------


class Timed:
    """Anything with armed timers: their deadlines by name (an armed timer is one with an entry), and the deadline
    of its one entry in a :class:`TimerHeap` (``NO_ENTRY`` when it has none there). Subclasses set both. (A base
    class rather than a protocol: compiled, the heap reads and writes a base class's attributes natively, a
    protocol's by name through the interpreter's generic lookup.)"""

    __slots__ = ("heap_at", "timers")

    timers: dict[Input, float]
    heap_at: float


#: :attr:`Timed.heap_at` of a transaction with no entry in a heap.
NO_ENTRY: Final = float("inf")

_T = TypeVar("_T", bound=Timed)


class TimerHeap(Generic[_T]):
    """The deadlines of many transactions in one heap: one entry per transaction, at its earliest timer.

    A transaction's timers are its ``timers`` dict; the heap holds ``(when, seq, tx)`` for the earliest of them
    (``tx.heap_at``). Arming a timer later than that entry pushes nothing (a client transaction's Timer B/F, K, D
    or M, a server transaction's H, J or L wait behind its first one); arming an earlier one pushes a new entry
    (the old one goes stale). Stopping a timer only removes it from the dict: an entry whose transaction's
    earliest timer moved later is put back at that deadline when it comes up (lazy deletion, never a search).
    Timers fire one at a time in deadline order, as with one entry per timer.
    """

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _T]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        """Entries in the heap, live or stale."""
        return len(self._heap)

    def arm(self, tx: _T, timer: Input, when: float) -> None:
        """Arm (or re-arm) ``timer`` of ``tx`` for ``when``."""
        tx.timers[timer] = when
        if when < tx.heap_at:
            tx.heap_at = when
            heapq.heappush(self._heap, (when, next(self._seq), tx))

    def track(self, tx: _T, timer: Input, when: float) -> None:
        """Put a timer already recorded in ``tx.timers`` on the heap."""
        if when < tx.heap_at:
            tx.heap_at = when
            heapq.heappush(self._heap, (when, next(self._seq), tx))

    @staticmethod
    def stop(tx: _T, timer: Input) -> None:
        tx.timers.pop(timer, None)

    def next_deadline(self) -> float | None:
        """The earliest live deadline, or None; stale entries on top are dropped (or put back later) on the way."""
        heap = self._heap
        while heap:
            when, _, tx = heap[0]
            if when == tx.heap_at:
                timers = tx.timers
                if timers:
                    first = min(timers.values())
                    if first <= when:
                        return first
                    tx.heap_at = first  # its earliest timer was stopped or re-armed later
                    heapq.heapreplace(heap, (first, next(self._seq), tx))
                    continue
                tx.heap_at = NO_ENTRY
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> tuple[_T, Input] | None:
        """The earliest live timer due at ``now`` (disarmed), or None. One at a time: a timer that fires may stop
        others due at the same time (the transaction ended), and those must not fire after it."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, tx = heap[0]
            timers = tx.timers
            if when != tx.heap_at or not timers:
                if when == tx.heap_at:
                    tx.heap_at = NO_ENTRY
                heapq.heappop(heap)
                continue
            timer = min(timers, key=timers.__getitem__)  # the first armed of equal deadlines
            first = timers[timer]
            if first > when:
                tx.heap_at = first  # its earliest timer was stopped or re-armed later: back at its deadline
                heapq.heapreplace(heap, (first, next(self._seq), tx))
                continue
            del timers[timer]
            if timers:
                following = min(timers.values())
                tx.heap_at = following
                heapq.heapreplace(heap, (following, next(self._seq), tx))
            else:
                tx.heap_at = NO_ENTRY
                heapq.heappop(heap)
            return tx, timer
        return None


# --- the state machine engine -----------------------------------------------------------------------------

#: Timers that resend a message and double their interval (one at most runs in a transaction at a time).
_RETRANSMIT_TIMERS: Final = frozenset({Input.TIMER_A, Input.TIMER_E, Input.TIMER_G, Input.TIMER_2XX})

#: An action run on a transition: ``action(transaction, now, message)``.
Action = Callable[["Transaction", float, "Request | Response | None"], None]
#: (state, input) -> (next state, actions in order)
Table = dict[tuple[TransactionState, Input], tuple[TransactionState, tuple[Action, ...]]]


class _Owner(Protocol):
    def _transaction_changed(self, tx: Transaction) -> None: ...


class Transaction(Timed):
    """Shared engine of the four state machines: timers, outgoing datagrams, events, table lookup.

    Subclasses set ``TABLE`` (their transitions) and call :meth:`_input` for everything that happens.
    """

    TABLE: ClassVar[Table]
    #: "client" or "server".
    ROLE: ClassVar[str]

    __slots__ = (
        "_events",
        "_heap",
        "_interval",
        "_out",
        "_owner",
        "_sends",
        "_zero",
        "config",
        "destination",
        "key",
        "reliable",
        "request",
        "state",
    )

    def __init__(
        self,
        key: TransactionKey,
        request: Request,
        state: TransactionState,
        *,
        destination: Address,
        config: TimerConfig,
        reliable: bool,
    ) -> None:
        self.key = key
        #: The request that created the transaction.
        self.request = request
        self.state = state
        self.config = config
        #: True on TCP/TLS: no retransmissions, zero-length D, I, J, K (RFC 3261 17).
        self.reliable = reliable
        #: Where this transaction's datagrams go.
        self.destination = destination
        #: Armed timers and their deadlines.
        self.timers = {}
        #: The current interval of the one retransmission timer a transaction runs at a time (A, E, G or the
        #: UAS 2xx timer), which the next firing doubles.
        self._interval = 0.0
        #: A zero-length timer started by the transition under way (D, I, J, K on reliable transports, rule 2).
        self._zero: Input | None = None
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[TransactionEvent] = deque()
        self._owner: _Owner | None = None
        self._heap: TimerHeap[Any] | None = None  # where its timers are kept besides, if anywhere
        #: The deadline of its entry in that heap (:class:`TimerHeap`), NO_ENTRY while it has none.
        self.heap_at = NO_ENTRY
        self._sends = 0

    # -- driving contract --

    def get_timer(self) -> float | None:
        """The earliest time :meth:`handle_timer` must be called, or None."""
        timers = self.timers
        return min(timers.values()) if timers else None

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``, earliest first."""
        while self.timers:
            name, deadline = min(self.timers.items(), key=lambda item: item[1])
            if deadline > now:
                break
            del self.timers[name]
            self._input(name, now, None)
        self._changed()

    def use_heap(self, heap: TimerHeap[Any]) -> None:
        """Keep this transaction's timers in ``heap`` too (its table's, or an element's that holds other
        transactions as well): the timers armed already and every one armed later get an entry there. Whoever
        pops them from the heap runs each with :meth:`fire`."""
        self._heap = heap
        self.heap_at = NO_ENTRY
        for timer, when in self.timers.items():
            heap.track(self, timer, when)

    def fire(self, timer: Input, now: float) -> None:
        """Run one timer that :meth:`TimerHeap.pop_due` handed out (and disarmed)."""
        self._input(timer, now, None)
        self._changed()

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Datagrams produced since the last call, in order, each with its destination."""
        out = list(self._out)
        self._out.clear()  # in place: a table may share this list
        return out

    def next_event(self) -> TransactionEvent | None:
        """The next event for the TU, or None."""
        return self._events.popleft() if self._events else None

    def events(self) -> Iterator[TransactionEvent]:
        """Drain every pending event."""
        while self._events:
            yield self._events.popleft()

    def transport_error(self, now: float, reason: str = "send failed") -> None:
        """Tell the transaction its last send failed (RFC 3261 17.1.1.2 / 17.2.1 / 17.2.2)."""
        if self.state is not TransactionState.TERMINATED:
            self._emit(TransportFailed(key=self.key, reason=reason))
            self._enter_terminated()
        self._changed()

    @property
    def terminated(self) -> bool:
        return self.state is TransactionState.TERMINATED

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key.method} {self.key.branch} {self.state.value}>"

    # -- engine --

    def _input(self, what: Input, now: float, message: Request | Response | None) -> bool:
        """Run the table for one input. Returns False when the table has no entry (absorbed)."""
        entry = self.TABLE.get((self.state, what))
        if entry is None:
            return False
        next_state, actions = entry
        for action in actions:
            action(self, now, message)
        if next_state is TransactionState.TERMINATED:
            self._enter_terminated()
        else:
            self.state = next_state
        # A zero-length timer fires now (rule 2), after the transition that started it.
        zero = self._zero
        if zero is not None:
            self._zero = None
            self._input(zero, now, None)
        return True

    def _tu_input(self, what: Input, now: float, message: Response) -> None:
        if not self._input(what, now, message):
            raise LocalProtocolError(
                f"cannot send {message.status} in state {self.state.value} of {self.key.method} transaction",
                500,
            )
        self._changed()

    def _enter_terminated(self) -> None:
        self.state = TransactionState.TERMINATED
        self.timers.clear()
        self._zero = None
        self._release()
        self._emit(TransactionTerminated(key=self.key))

    def _release(self) -> None:
        """Drop what a terminated transaction no longer needs (its message bytes); subclasses extend it."""

    def _start(self, timer: Input, interval: float, now: float) -> None:
        if interval == 0.0:
            self._zero = timer  # never armed: fired at the end of this transition
            return
        if timer in _RETRANSMIT_TIMERS:
            self._interval = interval
        when = self.timers[timer] = now + interval
        if self._heap is not None:
            self._heap.track(self, timer, when)

    def _stop(self, *timers: Input) -> None:
        for timer in timers:
            self.timers.pop(timer, None)
            if timer is self._zero:
                self._zero = None

    def _send(self, data: bytes) -> None:
        self._sends += 1
        self._out.append((data, self.destination))

    def _emit(self, event: TransactionEvent) -> None:
        self._events.append(event)

    def _changed(self) -> None:
        if self._owner is not None:
            self._owner._transaction_changed(self)


# Actions shared by several tables.


def stop_timers(tx: Transaction, now: float, message: Request | Response | None) -> None:
    """Stop every running timer."""
    tx.timers.clear()
    tx._zero = None


def pass_up(tx: Transaction, now: float, message: Request | Response | None) -> None:
    """Hand the response to the TU."""
    assert isinstance(message, Response)
    tx._emit(ResponseReceived(key=tx.key, response=message))
