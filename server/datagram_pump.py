"""The UDP driver's per-datagram path (server/io.py's ServerProtocol hands each datagram here): read the rest of a
wake-up's datagrams from the socket, feed each to the node with the clock, send what it returns.

A module of its own so the fast build compiles it: the driver's interpreted lines ran for every datagram in and
out (the batch loop, the sends; with asyncio's own lines ~9 % of a login's CPU through sockets under perf).
Compiled, these lines and loops run natively; the node's and the socket's calls stay calls.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from gamesdk.address import Address

__all__ = ["DatagramPump", "is_options"]


def is_options(data: bytes) -> bool:
    """An OPTIONS request, or a response whose CSeq names OPTIONS (header names in any case). Not a response
    whose Allow header ends with OPTIONS (most 200s of an INVITE): those read no kernel receive time."""
    if data.startswith(b"OPTIONS "):
        return True
    if not data.startswith(b"SIP/2.0 "):
        return False
    at = data.find(b" OPTIONS\r\n")
    while at >= 0:
        start = data.rfind(b"\r\n", 0, at) + 2  # the line that ends with " OPTIONS"
        colon = data.find(b":", start, at)
        if colon >= 0 and data[start:colon].strip().lower() == b"cseq":
            return True
        at = data.find(b" OPTIONS\r\n", at + 10)
    return False


class DatagramPump:
    """Datagrams in and out for one UDP socket and its node.

    ``sock`` is the bound socket on the selector loop (read for the rest of a wake-up's datagrams, and sent to
    directly), None on uvloop (which reads in batches and owns its socket). ``on_error`` gets a send's or a read's
    OSError (as the transport's ``error_received``); ``trace`` gets each datagram in and out while ``tracing``;
    ``arrival`` gives the kernel's receive time of the datagram just read from ``stamp_fd`` (OPTIONS only).
    ``node`` is a :class:`server.node.RegionalServer` (typed Any: the driver's tests give stand-ins, which a
    compiled module would refuse; the node's call is a generic one either way)."""

    def __init__(self, node: Any, sock: socket.socket | None, clock: Callable[[], float], batch: int,
                 on_error: Callable[[OSError], None], trace: Callable[[str, bytes, Address], None],
                 arrival: Callable[[int, float], float | None]) -> None:
        self.node = node
        self.sock = sock
        self.clock = clock
        self.batch = batch
        self.on_error = on_error
        self.trace = trace
        self.arrival = arrival
        #: The asyncio transport of the socket (it queues when the kernel's buffer is full).
        self.transport: Any = None
        #: SIP over TLS (server.transport_tls), when the region listens on tls:.
        self.streams: Any = None
        self.tracing = False
        #: The socket whose kernel receive times time the OPTIONS pings (None: not available here).
        self.stamp_fd: int | None = None
        #: Datagrams read here (beyond the first of a wake-up): the batching at work.
        self.batched_reads = 0
        #: The kernel's send buffer was full: the transport queues, and later datagrams go through it in order.
        self.send_backlog = False

    def read(self, data: bytes, addr: Any) -> None:
        """The datagram the loop read, then the socket's others, until it is empty or ``batch`` were read."""
        self.datagram(data, addr)
        sock = self.sock
        if sock is None:
            return
        size = self.node.max_message_bytes + 1
        for _ in range(self.batch - 1):
            try:
                data, addr = sock.recvfrom(size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error queued on the socket: as error_received
                self.on_error(exc)
                return
            self.batched_reads += 1
            self.datagram(data, addr)

    def datagram(self, data: bytes, addr: Any) -> None:
        """One datagram to the node, and what it returns sent."""
        source: Address = (addr[0], addr[1])
        if self.tracing:
            self.trace("in", data, source)
        stamp_fd = self.stamp_fd
        if stamp_fd is not None and is_options(data):
            # The clock read now, not the loop's: uvloop's loop.time() is the start of the loop iteration in
            # whole milliseconds, stale by the batch handled before this datagram (the same monotonic clock).
            now = time.monotonic()
            out = self.node.handle_datagram(data, source, now, received_at=self.arrival(stamp_fd, now))
        else:
            out = self.node.handle_datagram(data, source, self.clock())
        if out:
            self.send(out, source)

    def send(self, out: list[tuple[bytes, Address]], udp_source: Address | None = None) -> None:
        """Send over UDP, or over the TLS flow at the destination; what answers a datagram from ``udp_source``
        goes back over UDP even when a TLS peer is configured at that very address (a forged source)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        tracing = self.tracing
        streams = self.streams
        # On the selector loop: straight to the socket while the transport holds nothing back (its sendto is the
        # same system call behind a dozen interpreted lines). When the kernel's buffer is full, the transport
        # queues the datagram and sends it when the socket is writable; the later ones go through it too until
        # its queue is empty, so they keep their order.
        sock = self.sock
        if sock is not None and self.send_backlog:
            if transport.get_write_buffer_size():
                sock = None
            else:
                self.send_backlog = False
        for data, dest in out:
            if tracing:
                self.trace("out", data, dest)
            if streams is not None and dest != udp_source and streams.send(data, dest):
                continue
            if sock is not None:
                try:
                    sock.sendto(data, dest)
                    continue
                except (BlockingIOError, InterruptedError):
                    self.send_backlog = True
                    sock = None
                except OSError as exc:  # as the transport does: an ICMP error queued on the socket, and the like
                    self.on_error(exc)
                    continue
            transport.sendto(data, dest)
