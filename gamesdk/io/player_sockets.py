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

from gamesdk.channel.config import ChannelConfig
from gamesdk.channel.crypto import generate_keypair
from gamesdk.config import ClientConfig
from gamesdk.events import Agreement, InviteCancelled, SessionEvent, SessionFailed
from gamesdk.identity import IdentityVerifier, load_pem_chain
from gamesdk.io.channel_poll import bind_udp
from gamesdk.io.sip_tls import SipTlsFlow, player_tls_context
from gamesdk.session.agent import UserAgent
from gamesdk.sip.ids import IdFactory, RandomIdFactory

__all__ = ["Address", "PlayerSockets", "channel_config_for"]

Address = tuple[str, int]

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

    #: Key pairs :meth:`prepare` keeps ready.
    SPARE_KEYPAIRS = 2

    def prepare(self) -> None:
        """Make the spare key pairs for the next sessions; the façades call it when the player is idle."""
        while len(self._keypairs) < self.SPARE_KEYPAIRS:
            self._keypairs.append(generate_keypair(self._random))

    def _keypair(self) -> tuple[bytes, bytes]:
        # each pair serves one session only (ephemeral keys, DESIGN section 6)
        return self._keypairs.popleft() if self._keypairs else generate_keypair(self._random)

    def _channel_addr(self, call_id: str) -> Address:
        sock = bind_udp(self.agent.local_addr[0], 0)
        self.channel_socks[call_id] = sock
        host, port = sock.getsockname()[:2]
        return host, port

    def take_channel_socket(self, call_id: str) -> socket.socket:
        return self.channel_socks.pop(call_id)

    def drop_channel_socket(self, call_id: str) -> None:
        sock = self.channel_socks.pop(call_id, None)
        if sock is not None:
            sock.close()

    def transmit(self) -> None:
        """Send what the agent has queued: to the server over the TLS flow when there is one, else over UDP."""
        flow = self.flow
        server = self.config.server_address
        for data, addr in self.agent.datagrams_to_send():
            if flow is not None and addr == server:
                flow.send(data)
                continue
            try:
                self.sock.sendto(data, addr)
            except OSError as exc:
                log.debug("SIP send to %s failed: %s", addr, exc)

    def receive_flow(self, now: float) -> None:
        """Feed what arrived on the TLS flow to the agent (as datagrams from the server's address)."""
        flow = self.flow
        if flow is None:
            return
        server = self.config.server_address
        for frame in flow.pump(now):
            self.agent.receive_datagram(frame, server, now)

    def next_timer(self) -> float | None:
        """The agent's next deadline, or the flow's keep-alive if sooner."""
        when = self.agent.get_timer()
        flow = self.flow
        keepalive = flow.keepalive_due() if flow is not None else None
        if keepalive is not None and (when is None or keepalive < when):
            return keepalive
        return when

    def events(self) -> list[SessionEvent]:
        out: list[SessionEvent] = []
        while (event := self.agent.next_event()) is not None:
            if isinstance(event, (SessionFailed, InviteCancelled)):
                self.drop_channel_socket(event.call_id)
            out.append(event)
        return out

    def close(self) -> None:
        for call_id in list(self.channel_socks):
            self.drop_channel_socket(call_id)
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
