"""A registry of live transactions: routes incoming messages to them and merges their timers and output.

The server and the SDK keep one :class:`TransactionTable` each. Messages that match no transaction are the TU's
business (a new request, a stray response a proxy forwards statelessly, an ACK for a 2xx)::

    table = TransactionTable()
    msg = parse_message_untrusted(data)
    if isinstance(msg, Response):
        if table.receive_response(msg, now) is None: ...   # stray: forward statelessly or drop
    elif table.receive_request(msg, now) is None:
        tx = table.add(ServerInviteTransaction(msg, now, source=addr))   # new request
    send(table.datagrams_to_send()); handle table.next_event() until None; re-arm at table.get_timer()

Once added, a transaction reports through the table: its datagrams and events are collected here (drive it
through the table's ``datagrams_to_send`` / ``next_event``), and it leaves the table when it terminates.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, TypeVar

from gamesdk.address import Address
from gamesdk.errors import LocalProtocolError, RemoteProtocolError
from gamesdk.sip.message import Request, Response
from gamesdk.sip.transaction import (
    TimerHeap,
    Transaction,
    TransactionEvent,
    TransactionKey,
    TransactionState,
    cancel_target_key,
    client_key,
    server_key,
)
from gamesdk.sip.transaction_client import ClientTransaction
from gamesdk.sip.transaction_server import ServerInviteTransaction, ServerTransaction

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["TransactionTable"]

_Tx = TypeVar("_Tx", bound=Transaction)

# Server transactions by Call-ID, From tag, CSeq number and method: recognises the end-to-end ACK of a 2xx (its
# branch is new, RFC 3261 17.1.1.3) and merged requests (8.2.2.2).
_RequestIndex = tuple[str, str, int, str]


class TransactionTable:
    """Live client and server transactions, keyed per RFC 3261 17.1.3 / 17.2.3."""

    def __init__(self) -> None:
        self._transactions: dict[TransactionKey, Transaction] = {}
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[TransactionEvent] = deque()
        #: Every armed timer of every transaction, one entry each (see :class:`TimerHeap`).
        self._heap: TimerHeap[Transaction] = TimerHeap()
        self._requests: dict[_RequestIndex, ServerTransaction] = {}

    # -- registry --

    def add(self, tx: _Tx) -> _Tx:
        """Adopt a new transaction (its first datagram is already queued). Raises :class:`LocalProtocolError`
        when a live transaction has the same key."""
        if tx.key in self._transactions:
            raise LocalProtocolError(f"a transaction with key {tx.key} already exists", 500)
        if tx._owner is not None:
            raise LocalProtocolError("transaction already belongs to a table", 500)
        self._transactions[tx.key] = tx
        if isinstance(tx, ServerTransaction):
            index = self._request_index(tx.request)
            if index is not None:
                self._requests[index] = tx
        # From now on the transaction reports here: hand over what it produced so far and share the queues.
        self._out.extend(tx._out)
        self._events.extend(tx._events)
        tx._out = self._out
        tx._events = self._events
        tx._owner = self
        tx.use_heap(self._heap)
        self._transaction_changed(tx)
        return tx

    def get(self, key: TransactionKey) -> Transaction | None:
        return self._transactions.get(key)

    def __len__(self) -> int:
        return len(self._transactions)

    def __iter__(self) -> Iterator[Transaction]:
        return iter(list(self._transactions.values()))

    # -- routing --

    def receive_response(self, response: Response, now: float) -> ClientTransaction | None:
        """Give a response to its client transaction (RFC 3261 17.1.3); None when nothing matches."""
        try:
            key = client_key(response)
        except RemoteProtocolError:
            return None
        tx = self._transactions.get(key)
        if not isinstance(tx, ClientTransaction):
            return None
        tx.receive_response(response, now)
        return tx

    def receive_request(self, request: Request, now: float) -> ServerTransaction | None:
        """Give a request to the server transaction it belongs to (RFC 3261 17.2.3).

        Returns the transaction that absorbed it, or None when the TU must handle it: a new request, or an ACK
        for a 2xx. For the latter, the INVITE server transaction that sent the 2xx is told (it stops
        retransmitting), and the ACK is still returned to the TU as unmatched (it confirms the dialog).
        """
        try:
            key = server_key(request)
        except RemoteProtocolError:
            return None
        tx = self._transactions.get(key)
        if isinstance(tx, ServerTransaction):
            tx.receive_request(request, now)
            return tx
        if request.method == "ACK":
            invite_tx = self.find_invite_for_2xx_ack(request)
            if invite_tx is not None:
                invite_tx.ack_2xx_received(now)
        return None

    def find_invite_for_2xx_ack(self, ack: Request) -> ServerInviteTransaction | None:
        """The INVITE server transaction in Accepted whose 2xx this ACK acknowledges (same Call-ID, CSeq
        number, From tag, and the To tag of the 2xx), or None."""
        index = self._request_index(ack, "INVITE")
        try:
            to_tag = ack.to.tag
        except RemoteProtocolError:
            return None
        tx = self._requests.get(index) if index is not None else None
        if (
            not isinstance(tx, ServerInviteTransaction)
            or tx.state is not TransactionState.ACCEPTED
            or tx.last_response is None
        ):
            return None
        try:
            sent_tag = tx.last_response.to.tag
        except RemoteProtocolError:
            return None
        return tx if sent_tag == to_tag else None

    def find_cancel_target(self, cancel: Request) -> ServerInviteTransaction | None:
        """The INVITE server transaction a CANCEL refers to (RFC 3261 9.2), or None (answer 481)."""
        try:
            key = cancel_target_key(cancel)
        except RemoteProtocolError:
            return None
        tx = self._transactions.get(key)
        return tx if isinstance(tx, ServerInviteTransaction) else None

    def find_merged(self, request: Request) -> ServerTransaction | None:
        """The live server transaction this request duplicates under another branch, or None.

        RFC 3261 8.2.2.2: a request without a To tag whose Call-ID, From tag and CSeq match a transaction in
        progress arrived twice over different paths (e.g. forked upstream); the UAS answers it 482 (Loop
        Detected). A proxy does not apply this rule.
        """
        try:
            if request.method == "ACK" or request.to.tag is not None:
                return None
        except RemoteProtocolError:
            return None
        index = self._request_index(request)
        tx = self._requests.get(index) if index is not None else None
        if tx is None or tx.terminated:
            return None
        try:
            same = tx.key == server_key(request)
        except RemoteProtocolError:
            return None
        return None if same else tx

    @staticmethod
    def _request_index(request: Request, method: str | None = None) -> _RequestIndex | None:
        try:
            tag = request.from_.tag
            if tag is None:
                return None
            return (request.call_id, tag, request.cseq.seq, method or request.method)
        except RemoteProtocolError:
            return None

    # -- driving contract --

    def get_timer(self) -> float | None:
        """The earliest timer of all transactions, or None."""
        return self._heap.next_deadline()

    def handle_timer(self, now: float) -> None:
        """Fire every due timer of every transaction, earliest first."""
        heap = self._heap
        while (due := heap.pop_due(now)) is not None:
            tx, timer = due
            if tx._owner is self:
                tx.fire(timer, now)  # calls back _transaction_changed

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Datagrams of every transaction, in the order they were produced."""
        out = list(self._out)
        self._out.clear()  # the list object is shared with the transactions: empty it in place
        return out

    def next_event(self) -> TransactionEvent | None:
        return self._events.popleft() if self._events else None

    def events(self) -> Iterator[TransactionEvent]:
        while self._events:
            yield self._events.popleft()

    # -- called by transactions --

    def _transaction_changed(self, tx: Transaction) -> None:
        if tx.terminated:
            self._remove(tx)

    def _remove(self, tx: Transaction) -> None:
        if self._transactions.get(tx.key) is tx:
            del self._transactions[tx.key]
        if isinstance(tx, ServerTransaction):
            index = self._request_index(tx.request)
            if index is not None and self._requests.get(index) is tx:
                del self._requests[index]
        # Detach: the transaction keeps its own (now empty) queues for anyone still holding it.
        tx._owner = None
        tx._out = []
        tx._events = deque()
        tx._heap = None
