"""The proxy's transaction state (RFC 3261 section 17 as amended by RFC 6026) and its timer heap. Pure.

A stateful proxy is a server transaction facing upstream plus one client transaction facing downstream
(section 16.2; no forking, so one branch). The states carry their RFC names. Only what a UDP proxy needs is
kept: the last response (to answer retransmissions), the forwarded request (Timer A/E retransmissions, until
a response arrives) and the deadlines; the bytes are dropped as soon as they cannot be needed again, because
at 1,000 calls/s some 60,000 completed transactions wait out their 32 s.

Timers live in one heap of ``(when, seq, tx, name)`` with lazy deletion: a popped entry fires only if
``tx.timers[name]`` still holds that time, so re-arming or cancelling a timer never searches the heap.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from gamesdk.address import Address
from gamesdk.sip.message import Request

__all__ = ["ClientState", "ClientTx", "ServerState", "ServerTx", "TimerHeap"]


class ServerState(Enum):
    """Server transaction states (RFC 3261 figures 7 and 8, RFC 6026 figure 5)."""

    #: INVITE received, 100 sent, waiting for a final response from downstream.
    PROCEEDING = "Proceeding"
    #: Non-2xx final sent (INVITE: waiting for the ACK, Timer G/H) or non-INVITE final sent (Timer J).
    COMPLETED = "Completed"
    #: RFC 6026: a 2xx was sent; INVITE retransmissions are absorbed until Timer L.
    ACCEPTED = "Accepted"
    #: ACK received for a non-2xx; absorbs ACK retransmissions until Timer I.
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class ClientState(Enum):
    """Client transaction states (RFC 3261 figures 5 and 6, RFC 6026 figure 4)."""

    #: Request sent, no response yet (INVITE: Calling, non-INVITE: Trying); Timer A/E retransmit.
    CALLING = "Calling"
    #: A provisional response arrived.
    PROCEEDING = "Proceeding"
    #: A non-2xx final arrived (INVITE: ACK sent, retransmitted per final retransmission until Timer D).
    COMPLETED = "Completed"
    #: RFC 6026: a 2xx arrived; later 2xx retransmissions are forwarded until Timer M.
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


@dataclass(eq=False, slots=True)
class ServerTx:
    """Upstream side: the request as received and what we answered."""

    key: tuple[str, ...]
    method: str
    request: Request
    source: Address
    state: ServerState = ServerState.PROCEEDING
    #: Bytes of the last response sent upstream (answers retransmissions of the request).
    last_response: bytes | None = None
    final_status: int = 0
    client: ClientTx | None = None
    timers: dict[str, float] = field(default_factory=dict)
    #: Timer G interval (doubles up to T2).
    g_interval: float = 0.0
    #: Facts for the policy hooks (who called whom, which side is local); set by the proxy.
    call: Any = None
    #: The Via values responses go upstream with (the request's, marked), made at the first spliced response.
    upstream_vias: list[str] | None = None


@dataclass(eq=False, slots=True)
class ClientTx:
    """Downstream side: the request as forwarded."""

    branch: str
    method: str
    request: Request
    dest: Address
    state: ClientState = ClientState.CALLING
    #: Bytes of the forwarded request while Timer A/E may retransmit them.
    request_bytes: bytes | None = None
    #: Bytes of the ACK we sent for a non-2xx final (re-sent when the final is retransmitted).
    ack_bytes: bytes | None = None
    server: ServerTx | None = None
    timers: dict[str, float] = field(default_factory=dict)
    interval: float = 0.0
    got_provisional: bool = False
    #: A CANCEL arrived before any provisional: send it as soon as one arrives (RFC 3261 section 9.1).
    cancel_pending: bool = False
    cancelled: bool = False
    #: Headers added to a forwarded 2xx, cached per To tag so retransmissions get identical ones.
    added_2xx_headers: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    #: Who sent this request: "proxy" (forwarded), "cancel" (our CANCEL), "ping" (federation OPTIONS).
    origin: str = "proxy"


class TimerHeap:
    """Deadlines of many transactions in one heap, with lazy deletion."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any, str]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def arm(self, tx: ServerTx | ClientTx, name: str, when: float) -> None:
        tx.timers[name] = when
        heapq.heappush(self._heap, (when, next(self._seq), tx, name))

    @staticmethod
    def cancel(tx: ServerTx | ClientTx, name: str) -> None:
        tx.timers.pop(name, None)

    def next_deadline(self) -> float | None:
        heap = self._heap
        # Drop dead entries from the top so the driver does not wake up for nothing.
        while heap:
            when, _, tx, name = heap[0]
            if tx.timers.get(name) == when:
                return when
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> list[tuple[Any, str]]:
        """Every live ``(tx, name)`` whose time has come, earliest first; each is disarmed."""
        due: list[tuple[Any, str]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, tx, name = heapq.heappop(heap)
            if tx.timers.get(name) == when:
                del tx.timers[name]
                due.append((tx, name))
        return due
