"""gamesdk/io/channel_poll: drive a ``Channel`` from a game loop with a non-blocking UDP socket.

No threads, no asyncio: once per frame call ``poll(now)`` (receive everything waiting, run timers, send
acks and keepalives, return events), ``send(lane, data)`` while simulating, and ``flush(now)`` at the end of
the frame so the frame's messages leave in as few packets as possible (yojimbo's receive -> update -> send
order; research/channel.md (d)).
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from collections.abc import Iterable

from gamesdk.address import Address
from gamesdk.channel.config import ChannelConfig, ChannelParams, Lane
from gamesdk.channel.connection import Channel
from gamesdk.channel.events import ChannelEvent
from gamesdk.channel.lanes import message_and_lane
from gamesdk.channel.simulator import NetworkSimulator
from gamesdk.channel.stats import ChannelStats
from gamesdk.errors import LocalProtocolError
from gamesdk.io.datagram_mux import DatagramMux

__all__ = ["PollChannel", "bind_udp"]

#: Datagrams read per ``poll()`` at most, so one call stays bounded under a flood of unauthenticated
#: datagrams (about 1-2 ms of work at 3-8 us each, a tenth of a 60 Hz frame); what is left waits in the
#: kernel buffer for the next poll, and what overflows that buffer the kernel drops, as the network would.
#: Four times the largest reliable burst (64 fragments), so a real peer is never the limit.
MAX_READS_PER_POLL = 256
#: Receive buffer: room for a 64-fragment reliable burst (64 x ~2.3 KiB kernel truesize) with margin.
RCVBUF_BYTES = 1 << 20

#: Linux's SO_TIMESTAMPNS (= SCM_TIMESTAMPNS; the socket module does not export it): the kernel stamps each
#: datagram with its arrival time, so a datagram that waited in the socket for the next frame is timed at
#: its arrival, not at the poll that read it (an honest RTT in game loops).
_SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@ll")
_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0


def enable_arrival_stamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp arriving datagrams (Linux); False where it cannot."""
    if sys.platform != "linux" or not _CMSG_SPACE:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def bind_udp(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A non-blocking UDP socket bound to ``(host, port)`` (port 0 = any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
    except OSError:
        pass  # the kernel caps it; the default still works, bursts just lose more
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


class PollChannel:
    """A ``Channel`` on a non-blocking UDP socket, for game loops.

    Args:
        channel: the sans-IO core (build it with ``Channel(params, config, now=...)``).
        sock: a bound UDP socket (see ``bind_udp``); it is made non-blocking. The driver owns it.
        outbound / inbound: optional ``NetworkSimulator``s in the send and receive paths.
        mux: optional neighbour on the socket (an ICE agent, see ``DatagramMux``).
        max_reads: datagrams read per ``poll()`` at most (``MAX_READS_PER_POLL``).
    """

    def __init__(
        self,
        channel: Channel,
        sock: socket.socket,
        *,
        outbound: NetworkSimulator | None = None,
        inbound: NetworkSimulator | None = None,
        mux: DatagramMux | None = None,
        max_reads: int = MAX_READS_PER_POLL,
    ) -> None:
        if max_reads < 1:
            raise LocalProtocolError(f"max_reads must be >= 1, got {max_reads}")
        sock.setblocking(False)
        self.channel = channel
        self.sock = sock
        self.outbound = outbound
        self.inbound = inbound
        self.mux = mux
        self.max_reads = max_reads
        self._recvfrom = sock.recvfrom
        self._sendto = sock.sendto
        self._sock_closed = False
        self._lingering = False
        #: True when datagrams carry their kernel arrival time (``poll`` then times them at arrival).
        self.arrival_stamps = enable_arrival_stamps(sock)

    @classmethod
    def open(
        cls,
        params: ChannelParams,
        config: ChannelConfig | None = None,
        *,
        now: float,
        sock: socket.socket | None = None,
        local_addr: Address = ("127.0.0.1", 0),
        outbound: NetworkSimulator | None = None,
        inbound: NetworkSimulator | None = None,
        mux: DatagramMux | None = None,
    ) -> PollChannel:
        """Build the core and bind (or adopt) the socket in one call."""
        channel = Channel(params, config, now=now)
        return cls(
            channel,
            sock if sock is not None else bind_udp(*local_addr),
            outbound=outbound,
            inbound=inbound,
            mux=mux,
        )

    @property
    def local_addr(self) -> Address:
        host, port = self.sock.getsockname()[:2]
        return host, port

    @property
    def stats(self) -> ChannelStats:
        return self.channel.stats

    def fileno(self) -> int:
        """The socket's descriptor, for ``select``/``selectors`` if the loop wants to sleep until data."""
        return self.sock.fileno()

    def poll(self, now: float) -> list[ChannelEvent]:
        """Receive what is waiting, run due timers, send what is due; return the events, oldest first."""
        channel = self.channel
        if self._sock_closed:
            return channel.events()
        if self.arrival_stamps:
            self._read_stamped(now)
        else:
            self._read(now)
        mux = self.mux
        if mux is not None:
            mux_timer = mux.get_timer()
            if mux_timer is not None and mux_timer <= now:
                mux.handle_timer(now)
        if self.inbound is not None:
            for data, addr in self.inbound.due(now):
                channel.receive_datagram(data, addr, now)
        timer = channel.get_timer()
        if timer is not None and timer <= now:
            channel.handle_timer(now)
        self.flush(now)
        if self._lingering and not channel.is_open:
            self._shut()  # the lingering close() finished: the socket goes as close() promised
        return channel.events()

    def _read_stamped(self, now: float) -> None:
        """Read what waits, each datagram timed at its arrival: ``now`` minus its age by the kernel's stamp
        (ages measured on the wall clock, so ``now`` may be on any clock the game uses)."""
        channel = self.channel
        recvmsg = self.sock.recvmsg
        inbound = self.inbound
        mux = self.mux
        wall = time.time()
        for _ in range(self.max_reads):
            try:
                data, ancillary, _flags, src = recvmsg(2048, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # ICMP errors surface on the next recv (ECONNREFUSED): UDP, ignore
            at = now
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
                    sec, nsec = _TIMESPEC.unpack_from(payload)
                    age = wall - (sec + nsec * 1e-9)
                    if age > 0:
                        at = now - age
            addr: Address = (src[0], src[1])
            if mux is not None:
                mine = mux.receive(data, addr, at)
                if mine is None:
                    continue
                data, addr = mine
            if inbound is None:
                channel.receive_datagram(data, addr, at)
            else:
                inbound.submit(data, addr, at)

    def _read(self, now: float) -> None:
        channel = self.channel
        recvfrom = self._recvfrom
        inbound = self.inbound
        mux = self.mux
        for _ in range(self.max_reads):
            try:
                data, addr = recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # ICMP errors surface on the next recv (ECONNREFUSED): UDP, ignore
            if mux is not None:
                mine = mux.receive(data, (addr[0], addr[1]), now)
                if mine is None:
                    continue
                data, addr = mine
            if inbound is None:
                channel.receive_datagram(data, addr, now)
            else:
                inbound.submit(data, addr, now)

    def send(self, data: bytes, lane: Lane | int = Lane.RELIABLE) -> None:
        """Queue a message on ``lane``; it leaves on the next ``flush()`` or ``poll()``. See ``Channel.send``."""
        data, lane = message_and_lane(data, lane)
        self.channel.send(data, lane)

    def flush(self, now: float) -> int:
        """Send everything due now; returns the number of datagrams handed to the socket or simulator."""
        if self._sock_closed:
            return 0
        datagrams = self.channel.datagrams_to_send(now)
        mux = self.mux
        if mux is not None:
            datagrams = [mux.wrap(data, addr) for data, addr in datagrams]
            datagrams += mux.datagrams_to_send(now)
        self._transmit(datagrams, now)
        if self.outbound is not None:
            self._transmit_simulated(now)
        return len(datagrams)

    def _transmit(self, datagrams: Iterable[tuple[bytes, Address]], now: float) -> None:
        outbound = self.outbound
        sendto = self._sendto
        for data, addr in datagrams:
            if outbound is not None:
                outbound.submit(data, addr, now)
                continue
            try:
                sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                pass  # socket buffer full: same as loss on the wire; reliability repairs it
            except OSError:
                pass  # e.g. ECONNREFUSED from an earlier ICMP: UDP gives no guarantee anyway

    def _transmit_simulated(self, now: float) -> None:
        assert self.outbound is not None
        for data, addr in self.outbound.due(now):
            try:
                self._sendto(data, addr)
            except OSError:
                pass

    def next_wakeup(self) -> float | None:
        """The earliest time ``poll()`` has work even without incoming data (timers, simulated links)."""
        times = [t for t in (self.channel.get_timer(),) if t is not None]
        if self.mux is not None and (t := self.mux.get_timer()) is not None:
            times.append(t)
        for sim in (self.outbound, self.inbound):
            if sim is not None and (t := sim.next_time()) is not None:
                times.append(t)
        return min(times) if times else None

    def close(
        self, now: float, reason: str = "closed by application", *, linger_s: float = 0.0, by_peer: bool = False
    ) -> list[ChannelEvent]:
        """Send what is queued, then CLOSE (redundantly), close the socket, and return the last events.

        With ``linger_s > 0`` the channel first waits (at most that long) until the peer acknowledged every
        reliable message: keep calling ``poll(now)``; the socket closes when ``channel.is_open`` turns false.
        ``by_peer``: the peer ended the session by other means (see ``Channel.close``).
        """
        self.channel.close(reason, now=now, linger_s=linger_s, by_peer=by_peer)
        self.flush(now)
        if self.channel.is_open:
            self._lingering = True
        else:
            self._shut()
        return self.channel.events()

    def _shut(self) -> None:
        if self._sock_closed:
            return
        self._sock_closed = True
        if self.outbound is not None:
            # a simulated link would hold the CLOSE copies back; send them now, the socket is going away
            self._transmit_simulated(float("inf"))
        self.sock.close()
