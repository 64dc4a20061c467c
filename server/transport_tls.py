"""SIP over TLS for the regional server (RFC 3261 sections 18.3 and 26, RFC 5630, RFC 5626 flows).

One listener for players and peer regions, and outgoing mutual-TLS connections to peer regions. Every TLS
connection is a *flow* named by its remote ``(host, port)``; the node sees a message from a flow exactly as a
datagram from that address, and anything the node sends to that address goes back over the flow. That is how a
player behind a NAT is reached over its own connection (RFC 5626): its binding's target is the flow's address.

Bounded like the UDP side: at most ``[tls] max_connections`` flows, idle ones closed after
``idle_timeout_s``, a handshake deadline, at most one message being framed per flow (``limits.max_message_bytes``)
and ``max_write_buffer_bytes`` queued toward a peer that does not read.

A flow that presented a certificate chaining to a configured CA is *authenticated as* every name the
certificate holds; :meth:`TlsTransport.peer_of` answers which configured peer region a flow is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from gamesdk.address import Address
from gamesdk.errors import RemoteProtocolError
from gamesdk.sip.parser import StreamParser
from server.config import PeerConfig, ServerConfig

__all__ = ["Flow", "TlsTransport", "client_context", "server_context"]

log = logging.getLogger(__name__)

#: The node's entry point: (data, source, now) -> datagrams to send.
Handler = Callable[[bytes, Address, float], list[tuple[bytes, Address]]]
Sender = Callable[[list[tuple[bytes, Address]]], None]


def server_context(config: ServerConfig) -> ssl.SSLContext:
    """The listener's context: the region's certificate; a client certificate is asked for (peers present one,
    players do not) and, when presented, must chain to a configured CA or the handshake fails."""
    tls = config.tls
    if tls.certificate is None or tls.key is None:
        raise ValueError("[tls] certificate and key are needed to listen on tls:")
    # create_default_context honours SSLKEYLOGFILE, so tshark can decode what the tests capture.
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.certificate, tls.key)
    cas = _peer_cas(config)
    if cas:
        for ca in cas:
            ctx.load_verify_locations(cafile=str(ca))
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(config: ServerConfig, peer: PeerConfig) -> ssl.SSLContext:
    """A connection to ``peer``: it must present a certificate for its name from its CA; we present ours."""
    tls = config.tls
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(peer.ca or tls.ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.certificate is not None and tls.key is not None:
        ctx.load_cert_chain(tls.certificate, tls.key)
    return ctx


def _peer_cas(config: ServerConfig) -> list[Any]:
    cas = [p.ca for p in config.peers if p.ca is not None]
    if config.tls.ca is not None:
        cas.append(config.tls.ca)
    return list(dict.fromkeys(cas))


def certificate_names(cert: dict[str, Any] | None) -> frozenset[str]:
    """DNS names and ``sip:`` URI hosts of a verified peer certificate (``SSLObject.getpeercert()``)."""
    if not cert:
        return frozenset()
    names: set[str] = set()
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "DNS":
            names.add(str(value).lower())
        elif kind == "URI" and str(value).lower().startswith("sip:"):
            names.add(str(value)[4:].lower())
    return frozenset(names)


@dataclass(eq=False)
class Flow(asyncio.Protocol):
    """One TLS connection: frames messages with :class:`StreamParser` and hands them to the node."""

    owner: TlsTransport
    outgoing_peer: PeerConfig | None = None
    transport: asyncio.Transport | None = None
    address: Address = ("", 0)
    names: frozenset[str] = frozenset()
    parser: StreamParser = field(default_factory=StreamParser)
    last_seen: float = 0.0
    _idle: asyncio.TimerHandle | None = None
    pending: list[bytes] = field(default_factory=list)
    ready: bool = False

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's SSL transport has the Transport methods without the base class.
        transport = cast(asyncio.Transport, base)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.address = (peer[0], peer[1]) if peer else ("", 0)
        owner = self.owner
        if self.outgoing_peer is None and len(owner.flows) >= owner.max_connections:
            owner.stats["refused_full"] += 1
            log.warning("tls: %d connections open, refusing %s:%d", len(owner.flows), *self.address)
            transport.abort()
            return
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.names = certificate_names(ssl_object.getpeercert())
        self.parser = StreamParser(owner.max_message_bytes)
        owner.flows[self.address] = self
        owner.stats["accepted"] += 1
        self.ready = True
        self.last_seen = owner.loop.time()
        self._arm_idle()
        for data in self.pending:
            transport.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        self.last_seen = owner.loop.time()
        parser = self.parser
        try:
            parser.feed(data)
            while True:
                frame = parser.next_frame()
                if parser.pings:
                    parser.pings = 0
                    self.write(b"\r\n")  # pong (RFC 5626 section 3.5.1)
                if frame is None:
                    break
                owner.deliver(frame, self.address)
            if parser.buffered > owner.max_message_bytes:
                raise RemoteProtocolError("Message Too Large", 513)
        except RemoteProtocolError as exc:
            # A stream whose framing is lost cannot be resynchronised: close it (RFC 3261 section 18.3).
            owner.stats["framing_errors"] += 1
            log.info("tls: closing %s:%d: %s", self.address[0], self.address[1], exc.message)
            self.close()

    def write(self, data: bytes) -> None:
        transport = self.transport
        if not self.ready or transport is None:
            self.pending.append(data)
            return
        if transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > self.owner.max_write_buffer:
            self.owner.stats["write_overflow"] += 1
            log.warning("tls: %s:%d does not read, closing", *self.address)
            transport.abort()

    def close(self) -> None:
        # abort, not a TLS close_notify exchange: asyncio's graceful SSL shutdown waits for the peer (up to its
        # 30 s shutdown timeout), and an idle or misbehaving flow must free its slot now
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        owner = self.owner
        if owner.flows.get(self.address) is self:
            del owner.flows[self.address]
        if self.outgoing_peer is not None:
            owner.forget_outgoing(self.outgoing_peer, self)

    def _arm_idle(self) -> None:
        owner = self.owner
        self._idle = owner.loop.call_at(self.last_seen + owner.idle_timeout_s, self._check_idle)

    def _check_idle(self) -> None:
        if self.owner.loop.time() >= self.last_seen + self.owner.idle_timeout_s - 0.001:
            self.owner.stats["idle_closed"] += 1
            log.info("tls: %s:%d idle, closing", *self.address)
            self.close()
            return
        self._arm_idle()


class TlsTransport:
    """The region's TLS listener and its outgoing connections to peer regions."""

    def __init__(self, config: ServerConfig, loop: asyncio.AbstractEventLoop, handler: Handler,
                 sender: Sender) -> None:
        tls = config.tls
        self.config = config
        self.loop = loop
        self._handler = handler
        self._sender = sender
        self.max_connections = tls.max_connections
        self.idle_timeout_s = tls.idle_timeout_s
        self.max_write_buffer = tls.max_write_buffer_bytes
        self.max_message_bytes = config.limits.max_message_bytes
        self.flows: dict[Address, Flow] = {}
        self._current: Address | None = None
        self._outgoing: dict[str, Flow] = {}
        self._peers_by_addr = {p.address.addr: p for p in config.peers if p.address.transport == "tls"}
        self._server: asyncio.base_events.Server | None = None
        self.address: Address | None = None
        self.stats = {"accepted": 0, "refused_full": 0, "framing_errors": 0, "write_overflow": 0, "idle_closed": 0,
                      "connect_failed": 0}

    async def listen(self, host: str, port: int) -> Address:
        ctx = server_context(self.config)
        self._server = await self.loop.create_server(
            lambda: Flow(self), host, port, ssl=ctx, ssl_handshake_timeout=self.config.tls.handshake_timeout_s,
            reuse_address=True)
        sock = self._server.sockets[0]
        self.address = sock.getsockname()[:2]
        return self.address

    def set_peer_address(self, domain: str, address: Address) -> None:
        """A TLS peer moved (tests start regions on free ports): connect to ``address`` from now on."""
        for old_addr, peer in list(self._peers_by_addr.items()):
            if peer.domain == domain:
                del self._peers_by_addr[old_addr]
                moved = dataclasses.replace(peer, address=dataclasses.replace(peer.address, host=address[0],
                                                                              port=address[1]))
                self._peers_by_addr[address] = moved
        # a connection made (or being made) to the old address is of no use any more
        flow = self._outgoing.pop(domain, None)
        if flow is not None and flow.transport is not None:
            flow.transport.close()

    # -- the node's view -----------------------------------------------------------------------------------

    def deliver(self, frame: bytes, source: Address) -> None:
        # While the node works on it, this message is known to have come over the flow at ``source``: a UDP
        # datagram from the same (host, port) must not pass for it (UDP and TCP ports are separate spaces).
        self._current = source
        try:
            out = self._handler(frame, source, self.loop.time())
        finally:
            self._current = None
        if out:
            self._sender(out)

    def is_flow(self, addr: Address) -> bool:
        """A TLS connection is open with ``addr`` (where the node's messages to ``addr`` go)."""
        return addr in self.flows

    def came_over_flow(self, addr: Address) -> bool:
        """The message the node is handling now came over the TLS flow at ``addr`` (not as a UDP datagram)."""
        return self._current == addr

    def peer_of(self, addr: Address) -> PeerConfig | None:
        """The configured peer region the flow at ``addr`` authenticated as, or None."""
        flow = self.flows.get(addr)
        if flow is None:
            return None
        if flow.outgoing_peer is not None:
            return flow.outgoing_peer  # we checked its certificate's name when connecting
        for peer in self.config.peers:
            if peer.certificate_name in flow.names:
                return peer
        return None

    def send(self, data: bytes, dest: Address) -> bool:
        """Send over the flow at ``dest`` or to the TLS peer listening there; False when ``dest`` is neither."""
        flow = self.flows.get(dest)
        if flow is not None:
            flow.write(data)
            return True
        peer = self._peers_by_addr.get(dest)
        if peer is None:
            return False
        self._to_peer(peer).write(data)
        return True

    # -- outgoing connections to peers -----------------------------------------------------------------------

    def _to_peer(self, peer: PeerConfig) -> Flow:
        flow = self._outgoing.get(peer.domain)
        if flow is not None:
            return flow
        flow = Flow(self, outgoing_peer=peer)
        self._outgoing[peer.domain] = flow
        task = self.loop.create_task(self._connect(peer, flow))
        task.add_done_callback(lambda t: None if t.cancelled() else t.exception())
        return flow

    async def _connect(self, peer: PeerConfig, flow: Flow) -> None:
        host, port = peer.address.addr
        try:
            ctx = client_context(self.config, peer)
            await self.loop.create_connection(lambda: flow, host, port, ssl=ctx,
                                              server_hostname=peer.certificate_name,
                                              ssl_handshake_timeout=self.config.tls.handshake_timeout_s)
        except (TimeoutError, OSError, ssl.SSLError, ValueError) as exc:
            self.stats["connect_failed"] += 1
            log.warning("tls: cannot reach peer %s at %s: %s", peer.domain, peer.address, exc)
            self.forget_outgoing(peer, flow)

    def forget_outgoing(self, peer: PeerConfig, flow: Flow) -> None:
        if self._outgoing.get(peer.domain) is flow:
            del self._outgoing[peer.domain]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for flow in list(self.flows.values()) + list(self._outgoing.values()):
            if flow.transport is not None:
                flow.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
        self.flows.clear()
        self._outgoing.clear()
