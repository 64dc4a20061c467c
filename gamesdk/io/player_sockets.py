"""The sockets of one player: the SIP socket its user agent speaks on, and a channel socket per session.

Shared by both client façades (:mod:`gamesdk.client` for asyncio, :mod:`gamesdk.polling` for game loops).
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from gamesdk.address import Address
from gamesdk.channel.config import ChannelConfig
from gamesdk.channel.crypto import generate_keypair
from gamesdk.config import ClientConfig
from gamesdk.errors import LocalProtocolError
from gamesdk.events import (
    Agreement,
    InviteCancelled,
    SessionEnded,
    SessionEstablished,
    SessionEvent,
    SessionFailed,
)
from gamesdk.identity import IdentityVerifier, load_pem_chain
from gamesdk.io.channel_poll import bind_udp
from gamesdk.io.paths import GamePath, is_sip, sip_call_id
from gamesdk.io.sip_tls import SipTlsFlow, player_tls_context
from gamesdk.sdp.ice import IceParameters
from gamesdk.session.agent import UserAgent
from gamesdk.sip.ids import IdFactory, RandomIdFactory

__all__ = ["PlayerSockets", "channel_config_for"]


log = logging.getLogger(__name__)


class PlayerSockets:
    """What both client façades share: the user agent, its SIP socket and one channel socket per session."""

    def __init__(
        self,
        config: ClientConfig,
        bind: Address,
        random_bytes: Callable[[int], bytes],
        ids: IdFactory | None,
    ) -> None:
        self.config = config
        family = socket.AF_INET6 if ":" in bind[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind(bind)
        self.sock.setblocking(False)
        local = self.sock.getsockname()[:2]
        self.channel_socks: dict[str, socket.socket] = {}
        #: Over TLS, the one connection to the server (RFC 5626 outbound); the UDP socket stays for the direct
        #: in-dialog traffic with the peer (ACK, BYE, OPTIONS) and the channel sockets' address family.
        self.flow: SipTlsFlow | None = None
        if config.transport == "tls":
            self.flow = SipTlsFlow(config.server_address, config.server_name or config.domain,
                                   player_tls_context(config.ca), keepalive_s=config.keepalive_s)
        self._random = random_bytes
        #: X25519 key pairs made ahead (:meth:`prepare`), so no INVITE or 200 waits for one (~80 us each).
        self._keypairs: deque[tuple[bytes, bytes]] = deque()
        self.agent = UserAgent(
            config,
            (local[0], local[1]),
            ids=ids or RandomIdFactory(random_bytes, call_id_host=local[0]),
            random_bytes=random_bytes,
            channel_addr=self._channel_addr,
            keypairs=self._keypair,
        )
        trust = config.identity_trust
        if config.checks_identity and trust is not None:
            self.agent.identity = IdentityVerifier(load_pem_chain(trust.read_bytes()), time.time)
        #: NAT traversal (ICE): one path per call, and one gathered ahead for the next call.
        self.paths: dict[str, GamePath] = {}
        self._spare: GamePath | None = None
        self._owned: set[str] = set()  # paths whose socket a channel driver reads
        #: SessionEstablished events held until the call's path has a nominated pair.
        self._held: dict[str, SessionEstablished] = {}
        self._swallow_end: set[str] = set()
        self._ended: list[str] = []
        self._now = time.monotonic()
        if config.ice:
            self.agent.paths = self

    #: Key pairs :meth:`prepare` keeps ready.
    SPARE_KEYPAIRS = 2

    def prepare(self) -> None:
        """Make the spare key pairs for the next sessions; the façades call it when the player is idle."""
        while len(self._keypairs) < self.SPARE_KEYPAIRS:
            self._keypairs.append(generate_keypair(self._random))

    def _keypair(self) -> tuple[bytes, bytes]:
        # each pair serves one session only (ephemeral keys, DESIGN section 6)
        return self._keypairs.popleft() if self._keypairs else generate_keypair(self._random)

    # -- NAT traversal ---------------------------------------------------------------------------------------

    def _new_path(self, now: float) -> GamePath:
        config = self.config
        stun = [config.server_address] if config.transport == "udp" else []
        relays = [r for r in self.agent.relays if r.expires_at > now]
        return GamePath(self.agent.local_addr[0], now=now, random_bytes=self._random, stun_servers=stun,
                        turn_servers=relays, relay_only=config.relay_only, on_sip=self._sip_from_path)

    def prepare_path(self, now: float) -> None:
        """Start gathering the next call's candidates (after login, when the relay credentials are known)."""
        self._now = now
        if self.config.ice and self._spare is None and self.agent.registered:
            self._spare = self._new_path(now)

    @property
    def path_ready(self) -> bool:
        """The next call's candidates are gathered (always true without ICE)."""
        return not self.config.ice or (self._spare is not None and self._spare.gathered)

    def _sip_from_path(self, data: bytes, src: Address, now: float) -> None:
        self.agent.receive_datagram(data, src, now)

    def local_ice(self, call_id: str) -> IceParameters | None:
        path = self.paths.get(call_id)
        return path.local_ice() if path is not None else None

    def remote_ice(self, call_id: str, ice: IceParameters | None, *, controlling: bool) -> None:
        path = self.paths.get(call_id)
        if path is not None:
            path.set_remote(ice, controlling, self._now)
            path.flush(self._now)

    def take_path(self, call_id: str) -> GamePath | None:
        """The call's path, for the channel driver that reads its socket from now on (None without ICE)."""
        path = self.paths.get(call_id)
        if path is None or not path.uses_ice:
            return None
        self._owned.add(call_id)
        return path

    def pump_paths(self, now: float) -> None:
        """Run the paths no channel driver reads yet (gathering, checks, the ACK)."""
        self._now = now
        for call_id, path in list(self.paths.items()):
            channel = path.channel
            if path.uses_ice and (call_id not in self._owned or (channel is not None and not channel.is_open)):
                path.pump(now)
        if self._spare is not None:
            self._spare.pump(now)

    def path_sockets(self) -> list[socket.socket]:
        """Sockets of the paths :meth:`pump_paths` serves (for loops that wait in ``select``/``add_reader``)."""
        socks = [p.sock for c, p in self.paths.items()
                 if p.uses_ice and (c not in self._owned or (p.channel is not None and not p.channel.is_open))]
        return socks + ([self._spare.sock] if self._spare is not None else [])

    def _drop_path(self, call_id: str) -> None:
        path = self.paths.pop(call_id, None)
        self._owned.discard(call_id)
        if path is not None:
            path.close(self._now)

    def _channel_addr(self, call_id: str) -> Address:
        if self.config.ice:
            now = self._now
            path = self._spare or self._new_path(now)
            self._spare = None
            path.call_id = call_id
            if self.config.relay_only and not any(c.kind == "relay" for c in path.agent.local_candidates):
                path.close(now)
                why = ("no relay was gathered yet (wait for client.path_ready after login)" if self.agent.relays
                       else "the server offered no TURN relay at login")
                raise LocalProtocolError(f"relay_only: no relayed candidate to offer: {why}")
            self.paths[call_id] = path
            self.channel_socks[call_id] = path.sock
            return path.sdp_address
        sock = bind_udp(self.agent.local_addr[0], 0)
        self.channel_socks[call_id] = sock
        host, port = sock.getsockname()[:2]
        return host, port

    def take_channel_socket(self, call_id: str) -> socket.socket:
        sock = self.channel_socks.pop(call_id)
        if call_id in self.paths:
            # the channel driver closes its socket when the channel closes; the path keeps the original for
            # the SIP that follows (BYE and its 200 go over the nominated pair too)
            return sock.dup()
        return sock

    def drop_channel_socket(self, call_id: str) -> None:
        sock = self.channel_socks.pop(call_id, None)
        if call_id in self.paths:
            self._drop_path(call_id)
        elif sock is not None:
            sock.close()

    def transmit(self, send: Callable[[bytes, Address], object] | None = None) -> None:
        """Send what the agent has queued: to the server over the TLS flow when there is one, else over UDP
        (``send``, e.g. an asyncio transport's ``sendto``, or the SIP socket); SIP for a peer whose call has a
        nominated pair goes over that pair."""
        flow = self.flow
        server = self.config.server_address
        for data, addr in self.agent.datagrams_to_send():
            if flow is not None and addr == server:
                flow.send(data)
                continue
            if addr != server and self.paths and self._via_path(data, addr):
                continue
            if send is not None:
                send(data, addr)
                continue
            try:
                self.sock.sendto(data, addr)
            except OSError as exc:
                log.debug("SIP send to %s failed: %s", addr, exc)

    def _via_path(self, data: bytes, addr: Address) -> bool:
        """Send a SIP datagram for the peer (ACK, BYE, ...) over the call's nominated pair, if it has one.

        Not when it is for a proxy on the way: a request with a route set (a record-routing proxy the operator
        put there) goes to its first Route (RFC 3261 section 12.2.1.1), and a response goes back to where its
        request came from (its Via), unless that was the peer over this very pair."""
        call_id = sip_call_id(data) if is_sip(data) else None
        path = self.paths.get(call_id) if call_id is not None else None
        if path is None or not path.uses_ice or not path.remote_known:
            return False
        if data.startswith(b"SIP/2.0 ") and addr != path.peer_address:
            return False
        if _has_route(data):
            return False
        path.send_sip(data)
        path.flush(self._now)
        return True

    def receive_flow(self, now: float) -> None:
        """Feed what arrived on the TLS flow to the agent (as datagrams from the server's address)."""
        flow = self.flow
        if flow is None:
            return
        server = self.config.server_address
        was_up = flow.established
        for frame in flow.pump(now):
            self.agent.receive_datagram(frame, server, now)
        if was_up and flow.sock is None and self.agent.registered and not self.agent.logging_out:
            # RFC 5626 section 4.4.1: a lost flow is replaced at once by registering again (which opens a new
            # connection), so the server can reach the player before the next refresh would have come
            log.info("SIP over TLS: connection to the server lost (%s); registering again", flow.error)
            self.agent.register(now)

    def next_timer(self) -> float | None:
        """The agent's next deadline, or the flow's keep-alive or a path's timer if sooner."""
        when = self.agent.get_timer()
        for call_id, path in [*self.paths.items(), ("", self._spare)]:
            if path is None or not path.uses_ice or (call_id in self._owned and path.channel is not None
                                                      and path.channel.is_open):
                continue
            due = path.get_timer()
            if due is not None and (when is None or due < when):
                when = due
        flow = self.flow
        keepalive = flow.keepalive_due() if flow is not None else None
        if keepalive is not None and (when is None or keepalive < when):
            return keepalive
        return when

    def events(self) -> list[SessionEvent]:
        out: list[SessionEvent] = []
        while self._ended:
            self._drop_path(self._ended.pop())
        for call_id, held in list(self._held.items()):
            path = self.paths.get(call_id)
            if path is None:
                del self._held[call_id]
            elif path.connected:
                del self._held[call_id]
                out.append(held)
            elif path.failure is not None:
                del self._held[call_id]
                out.append(self._no_path(call_id, path.failure))
        while (event := self.agent.next_event()) is not None:
            if isinstance(event, (SessionFailed, InviteCancelled)):
                self._held.pop(event.call_id, None)
                self.drop_channel_socket(event.call_id)
            if isinstance(event, SessionEnded):
                established = self._held.pop(event.call_id, None)
                if established is not None:
                    out.append(established)  # ended (BYE) before a pair was nominated: established, then ended
                self._ended.append(event.call_id)  # its path goes once the façade has seen the end
                if event.call_id in self._swallow_end:
                    self._swallow_end.discard(event.call_id)
                    continue
            if isinstance(event, SessionEstablished):
                path = self.paths.get(event.call_id)
                if path is not None and path.uses_ice and not path.connected:
                    if path.failure is None:
                        self._held[event.call_id] = event  # the channel waits for a nominated pair
                        continue
                    event = self._no_path(event.call_id, path.failure)
            out.append(event)
        return out

    def _no_path(self, call_id: str, reason: str) -> SessionFailed:
        """Signalling succeeded but no path works: hang up (BYE) and report the session as failed."""
        self._swallow_end.add(call_id)
        try:
            self.agent.end(call_id, self._now, reason=f"no network path: {reason}")
        except LocalProtocolError:
            self._swallow_end.discard(call_id)
        self.drop_channel_socket(call_id)
        return SessionFailed(call_id=call_id, status=503, reason=f"no network path to the peer: {reason}",
                             refused_by="network")

    def close(self) -> None:
        for call_id in list(self.channel_socks):
            self.drop_channel_socket(call_id)
        for call_id in list(self.paths):
            self._drop_path(call_id)
        if self._spare is not None:
            self._spare.close(self._now)
            self._spare = None
        if self.flow is not None:
            self.flow.close()
        self.sock.close()


def channel_config_for(base: ChannelConfig | None, agreement: Agreement) -> ChannelConfig:
    """The channel watches the negotiated QoS (QosViolation events) unless the application set bounds, and
    paces what it sends to the peer's ``b=AS`` (what the peer's region reserved for its downlink) unless the
    application set ``send_kbps``."""
    config = base or ChannelConfig()
    if config.max_rtt_ms is None and config.max_jitter_ms is None and config.max_loss_ppm is None:
        qos = agreement.qos
        config = replace(config, max_rtt_ms=qos.latency_ms, max_jitter_ms=qos.jitter_ms, max_loss_ppm=qos.loss_ppm)
    if config.send_kbps is None:
        peer_terms = agreement.answer if agreement.is_caller else agreement.offer
        config = replace(config, send_kbps=float(peer_terms.receive_kbps))
    return config


def _has_route(data: bytes) -> bool:
    """Whether a SIP request carries a Route header (it follows a route set)."""
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    return b"\r\nroute:" in head or b"\r\nroute " in head
