"""gamesdk/io/channel_asyncio: drive a ``Channel`` with an asyncio datagram endpoint.

Thin on purpose (aioquic's ``asyncio/protocol.py`` shape): ``datagram_received`` feeds the core with the
loop's clock, hands events out, transmits, and re-arms one timer. Datagrams are handled in the callback,
never with an ``await`` per packet (that doubled the round trip, DESIGN section 9), and the transport's
read size is lowered from CPython's 256 KiB to 2 KiB (5.9x more datagrams/s, DESIGN section 9).

:func:`attach_channel` opens the channel at once, with no loop round trip (``create_datagram_endpoint`` takes
two, and the setup measured in ``bench/bench_setup.py`` waits for them): a socket reader registered with
``loop.add_reader`` on selector event loops; :func:`open_channel` is the general, awaitable way.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import cast

from gamesdk.address import Address
from gamesdk.channel.config import ChannelConfig, ChannelParams, Lane
from gamesdk.channel.connection import Channel
from gamesdk.channel.events import ChannelClosed, ChannelEvent, Disconnected, SecurityError
from gamesdk.channel.lanes import message_and_lane
from gamesdk.channel.simulator import NetworkSimulator
from gamesdk.channel.stats import ChannelStats
from gamesdk.io.datagram_mux import DatagramMux

__all__ = ["AsyncChannel", "attach_channel", "open_channel"]

#: Read size for the datagram transport: above the 1200-byte channel maximum, below glibc's mmap threshold.
TRANSPORT_MAX_SIZE = 2048


class AsyncChannel(asyncio.DatagramProtocol):
    """A ``Channel`` on an asyncio datagram transport.

    Events go to ``on_event`` if given, else into a queue read with ``await next_event()``.
    """

    def __init__(
        self,
        channel: Channel,
        *,
        on_event: Callable[[ChannelEvent], None] | None = None,
        outbound: NetworkSimulator | None = None,
        inbound: NetworkSimulator | None = None,
        mux: DatagramMux | None = None,
    ) -> None:
        self.channel = channel
        self.outbound = outbound
        self.inbound = inbound
        self.mux = mux
        self._on_event = on_event
        self._queue: asyncio.Queue[ChannelEvent] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.closed = asyncio.Event()

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # the selector loop's datagram transport does not subclass DatagramTransport; it has its methods
        self._transport = cast(asyncio.DatagramTransport, transport)
        if hasattr(transport, "max_size"):
            transport.max_size = TRANSPORT_MAX_SIZE
        self._process(self._loop.time())

    def datagram_received(self, data: bytes, addr: Address) -> None:
        now = self._loop.time()
        self._feed(data, addr, now)
        self._process(now)

    def datagrams_received(self, batch: list[tuple[bytes, Address]]) -> None:
        """Several datagrams read in one wake-up: fed to the core one by one, then one round of timers,
        sending and events, so a flood costs the core's per-datagram checks and little more."""
        now = self._loop.time()
        for data, addr in batch:
            self._feed(data, addr, now)
        self._process(now)

    def _feed(self, data: bytes, addr: Address, now: float) -> None:
        if self.mux is not None:
            mine = self.mux.receive(data, (addr[0], addr[1]), now)
            if mine is None:
                return
            data, addr = mine
        if self.inbound is None:
            self.channel.receive_datagram(data, addr, now)
        else:
            self.inbound.submit(data, addr, now)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable and friends: UDP, the timeouts decide

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self.closed.set()

    # -- application API

    @property
    def stats(self) -> ChannelStats:
        return self.channel.stats

    @property
    def local_addr(self) -> Address:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return host, port

    def send(self, data: bytes, lane: Lane | int = Lane.RELIABLE, *, flush: bool = True) -> None:
        """Queue a message on ``lane`` and (by default) transmit at once. See ``Channel.send`` for the exceptions."""
        data, lane = message_and_lane(data, lane)
        self.channel.send(data, lane)
        if flush:
            self._process(self._loop.time())

    def flush(self) -> None:
        """Transmit what ``send(..., flush=False)`` queued."""
        self._process(self._loop.time())

    async def next_event(self) -> ChannelEvent:
        """Wait for the next event (only when no ``on_event`` callback was given)."""
        return await self._queue.get()

    def close(self, reason: str = "closed by application", *, linger_s: float = 0.0, by_peer: bool = False) -> None:
        """Send what is queued, then CLOSE redundantly, and close the transport.

        With ``linger_s > 0`` the channel first waits (at most that long) until the peer acknowledged every
        reliable message; ``await closed.wait()`` to know when the CLOSE has left. ``by_peer``: the peer ended
        the session by other means (see ``Channel.close``).
        """
        now = self._loop.time()
        self.channel.close(reason, now=now, linger_s=linger_s, by_peer=by_peer)
        self._process(now)
        if not self.channel.is_open:
            self._shut()

    def drain(self) -> None:
        """Read what already waits in the socket (before a close the signalling decided on)."""
        transport = self._transport
        if isinstance(transport, _ReaderTransport):
            transport.read_ready()

    def _shut(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self.outbound is not None:
            # a simulated link would hold the CLOSE copies back; send them now, the socket is going away
            for data, addr in self.outbound.due(float("inf")):
                transport.sendto(data, addr)
        transport.close()

    # -- the driver loop: feed, drain events, transmit, re-arm

    def _process(self, now: float) -> None:
        channel = self.channel
        if self.inbound is not None:
            for data, addr in self.inbound.due(now):
                channel.receive_datagram(data, addr, now)
        timer = channel.get_timer()
        if timer is not None and timer <= now:
            channel.handle_timer(now)
        mux = self.mux
        if mux is not None and (mux_timer := mux.get_timer()) is not None and mux_timer <= now:
            mux.handle_timer(now)
        transport = self._transport
        if transport is not None and not transport.is_closing():
            outbound = self.outbound
            datagrams = channel.datagrams_to_send(now)
            if mux is not None:
                datagrams = [mux.wrap(data, addr) for data, addr in datagrams]
                datagrams += mux.datagrams_to_send(now)
            for data, addr in datagrams:
                if outbound is None:
                    transport.sendto(data, addr)
                else:
                    outbound.submit(data, addr, now)
            if outbound is not None:
                for data, addr in outbound.due(now):
                    transport.sendto(data, addr)
        ended = False
        for event in channel.events():
            if isinstance(event, (ChannelClosed, Disconnected, SecurityError)):
                ended = True
            if self._on_event is not None:
                self._on_event(event)
            else:
                self._queue.put_nowait(event)
        if ended and transport is not None and not channel.is_open:
            self._shut()
            return
        self._arm(channel.get_timer())

    def _arm(self, at: float | None) -> None:
        if self.mux is not None and (t := self.mux.get_timer()) is not None and (at is None or t < at):
            at = t
        for sim in (self.outbound, self.inbound):
            if sim is not None and (t := sim.next_time()) is not None and (at is None or t < at):
                at = t
        if at == self._timer_at and self._timer is not None:
            return
        self._cancel_timer()
        if at is not None:
            self._timer_at = at
            self._timer = self._loop.call_at(max(at, self._loop.time()), self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._process(self._loop.time())


class _ReaderTransport:
    """The datagram transport subset ``AsyncChannel`` uses, on ``loop.add_reader`` over a non-blocking socket.

    Created and connected synchronously. A datagram the kernel will not take at once (full socket buffer) is
    dropped, as the network would drop it; the channel's reliable lane retransmits (DESIGN section 6).
    """

    #: Datagrams read per wake-up at most, so one busy channel (or a flood of unauthenticated datagrams)
    #: cannot starve the loop's other callbacks; the rest wait in the kernel buffer for the next wake-up.
    BURST = 64

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: AsyncChannel) -> None:
        self._loop = loop
        self._sock = sock
        self._protocol = protocol
        self._closing = False
        self.max_size = TRANSPORT_MAX_SIZE
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self.read_ready)  # NotImplementedError on the proactor loop

    def read_ready(self) -> None:
        recvfrom, protocol = self._sock.recvfrom, self._protocol
        batch: list[tuple[bytes, Address]] = []
        for _ in range(self.BURST):
            try:
                data, addr = recvfrom(self.max_size)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                protocol.error_received(exc)
                break
            batch.append((data, (addr[0], addr[1])))
        if batch and not self._closing:
            if len(batch) == 1:
                protocol.datagram_received(*batch[0])
            else:
                protocol.datagrams_received(batch)

    def sendto(self, data: bytes, addr: Address | None = None) -> None:
        if self._closing:
            return
        try:
            if addr is None:
                self._sock.send(data)
            else:
                self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            pass  # see the class docstring
        except OSError as exc:
            self._protocol.error_received(exc)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "sockname":
            return self._sock.getsockname()
        if name == "socket":
            return self._sock
        return default


def attach_channel(
    params: ChannelParams,
    config: ChannelConfig | None = None,
    *,
    sock: socket.socket,
    on_event: Callable[[ChannelEvent], None] | None = None,
    outbound: NetworkSimulator | None = None,
    inbound: NetworkSimulator | None = None,
    mux: DatagramMux | None = None,
) -> AsyncChannel:
    """Like :func:`open_channel` on an already bound ``sock``, but open when it returns (no ``await``).

    Raises:
        NotImplementedError: the running loop has no ``add_reader`` (the proactor loop on Windows): use
            :func:`open_channel` there.
    """
    loop = asyncio.get_running_loop()
    channel = Channel(params, config, now=loop.time())
    protocol = AsyncChannel(channel, on_event=on_event, outbound=outbound, inbound=inbound, mux=mux)
    transport = _ReaderTransport(loop, sock, protocol)
    protocol.connection_made(cast(asyncio.BaseTransport, transport))
    return protocol


async def open_channel(
    params: ChannelParams,
    config: ChannelConfig | None = None,
    *,
    local_addr: Address | None = None,
    sock: socket.socket | None = None,
    on_event: Callable[[ChannelEvent], None] | None = None,
    outbound: NetworkSimulator | None = None,
    inbound: NetworkSimulator | None = None,
    mux: DatagramMux | None = None,
) -> AsyncChannel:
    """Create the core on the loop's clock and an asyncio datagram endpoint for it.

    Pass the already bound socket the SDP advertised (``sock``) or an address to bind (``local_addr``).
    """
    loop = asyncio.get_running_loop()
    channel = Channel(params, config, now=loop.time())
    kwargs: dict[str, object] = (
        {"sock": sock} if sock is not None else {"local_addr": local_addr or ("127.0.0.1", 0)}
    )
    _, protocol = await loop.create_datagram_endpoint(
        lambda: AsyncChannel(channel, on_event=on_event, outbound=outbound, inbound=inbound, mux=mux),
        **kwargs,  # type: ignore[arg-type]
    )
    return protocol
