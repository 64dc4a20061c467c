"""gamesdk/io/paths: the UDP socket of one game session and its ICE agent, shared by both client façades.

A :class:`GamePath` is made (and starts gathering) ahead of the session, so an INVITE or a 200 never waits for
STUN or TURN. The SDP carries its candidates; once the peer's are known the checks run; when a pair is nominated:

- SIP datagrams of the call that go to the peer itself (the 2xx ACK, BYE, in-dialog OPTIONS and their answers)
  leave over the nominated pair, from this socket, instead of the SIP socket: through NATs the peer's Contact is
  a private address, and no server may carry the ACK (DESIGN section 2). The peer's path hands SIP text it
  receives to its user agent.
- the game channel is built for the nominated remote address and runs on this socket, with the path as its
  driver's ``DatagramMux`` (STUN and TURN stay here; relayed data is unwrapped).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

from gamesdk.address import Address
from gamesdk.ice.agent import Connected, ConsentLost, ConsentRestored, Failed, IceAgent
from gamesdk.ice.servers import TurnServer
from gamesdk.io.channel_poll import bind_udp
from gamesdk.sdp.ice import IceParameters

__all__ = ["GamePath", "is_sip", "sip_call_id"]

log = logging.getLogger(__name__)


_SIP_STARTS = (b"SIP/2.0 ", b"ACK ", b"BYE ", b"OPTIONS ", b"INFO ", b"UPDATE ", b"INVITE ", b"CANCEL ",
               b"NOTIFY ", b"MESSAGE ", b"PRACK ", b"REFER ")
#: Reads per pump at most (the channel driver has its own cap once it owns the socket).
MAX_READS = 256


def is_sip(data: bytes) -> bool:
    """SIP text on a game socket (our channel's first byte is 0x40-0x7F, so only the whole prefix tells)."""
    return data.startswith(_SIP_STARTS)


def sip_call_id(data: bytes) -> str | None:
    """The Call-ID of a SIP datagram we built (cheap scan; long or compact form)."""
    for marker in (b"\r\nCall-ID:", b"\r\ni:"):
        start = data.find(marker)
        if start >= 0:
            start += len(marker)
            end = data.find(b"\r\n", start)
            return data[start:end].strip().decode("utf-8", "replace")
    return None


class GamePath:
    """One session's socket and ICE agent; see the module docstring."""

    def __init__(self, host: str, *, now: float, random_bytes: Callable[[int], bytes],
                 stun_servers: list[Address], turn_servers: list[TurnServer], relay_only: bool,
                 on_sip: Callable[[bytes, Address, float], None]) -> None:
        self.sock: socket.socket = bind_udp(host, 0)
        local = self.sock.getsockname()[:2]
        self.agent = IceAgent(controlling=True, local_addr=(local[0], local[1]), random_bytes=random_bytes,
                              stun_servers=stun_servers, turn_servers=turn_servers, relay_only=relay_only)
        self.agent.gather(now)
        self.on_sip = on_sip
        self.call_id: str | None = None
        #: False once the peer's SDP had no ICE lines: the channel then goes to its c=/m= address as is.
        self.uses_ice = True
        self.remote_known = False
        self.connected = False
        self.failure: str | None = None
        #: SIP datagrams for the peer that wait for the nominated pair.
        self._sip_waiting: list[bytes] = []
        self._extra: list[tuple[bytes, Address]] = []
        #: The channel running on this path (for consent): anything with ``consent_lost(now)`` /
        #: ``path_validated(addr, now)``.
        self.channel: Any = None
        self.early_dropped = 0

    # -- the SDP side ----------------------------------------------------------------------------------------

    @property
    def gathered(self) -> bool:
        return self.agent.gathering_done

    def local_ice(self) -> IceParameters:
        agent = self.agent
        return IceParameters(agent.local_ufrag, agent.local_pwd, tuple(agent.local_candidates))

    @property
    def sdp_address(self) -> Address:
        """c=/m=: srflx (or host) for peers without ICE; the relay only when nothing else is offered."""
        for kind in ("srflx", "host", "relay"):
            for candidate in self.agent.local_candidates:
                if candidate.kind == kind:
                    return candidate.address
        return self.agent.local_addr

    def set_remote(self, ice: IceParameters | None, controlling: bool, now: float) -> None:
        self.remote_known = True
        if ice is None:
            self.uses_ice = False
            self.agent.close(now)
            return
        self.agent.controlling = controlling
        self.agent.set_remote(ice.ufrag, ice.pwd, ice.candidates, now)

    @property
    def peer_address(self) -> Address | None:
        pair = self.agent.selected
        return pair.remote.address if pair is not None else None

    def send_sip(self, data: bytes) -> None:
        """A SIP datagram for the peer: over the nominated pair (now, or once there is one)."""
        peer = self.peer_address
        if peer is None:
            self._sip_waiting.append(data)
        else:
            self._extra.append(self.agent.wrap(data, peer))

    # -- the DatagramMux of the channel driver ---------------------------------------------------------------

    def receive(self, data: bytes, src: Address, now: float) -> tuple[bytes, Address] | None:
        result = self.agent.receive(data, src, now)
        self._events(now)
        if result is None:
            return None
        payload, peer = result
        if is_sip(payload):
            self.on_sip(payload, peer, now)
            return None
        return result

    def wrap(self, data: bytes, addr: Address) -> tuple[bytes, Address]:
        return self.agent.wrap(data, addr)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        self._events(now)
        out = self.agent.datagrams_to_send(now)
        if self._extra:
            out += self._extra
            self._extra = []
        return out

    def get_timer(self) -> float | None:
        return self.agent.get_timer()

    def handle_timer(self, now: float) -> None:
        self.agent.handle_timer(now)
        self._events(now)

    def _events(self, now: float) -> None:
        while (event := self.agent.next_event()) is not None:
            if isinstance(event, Connected):
                self.connected = True
                peer = event.pair.remote.address
                log.info("path %s: %s via %s -> %s", self.call_id, event.path, event.pair.local.kind, peer)
                for data in self._sip_waiting:
                    self._extra.append(self.agent.wrap(data, peer))
                self._sip_waiting.clear()
            elif isinstance(event, Failed):
                self.failure = event.reason
                log.info("path %s: failed: %s", self.call_id, event.reason)
            elif isinstance(event, ConsentLost):
                hook = getattr(self.channel, "consent_lost", None)
                if hook is not None:
                    hook(now)
            elif isinstance(event, ConsentRestored):
                hook = getattr(self.channel, "path_validated", None)
                if hook is not None and self.peer_address is not None:
                    hook(self.peer_address, now)

    # -- before a channel driver owns the socket -------------------------------------------------------------

    def pump(self, now: float) -> None:
        """Read what waits, run due timers, send: while checks run (no channel yet)."""
        for _ in range(MAX_READS):
            try:
                data, addr = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # ICMP errors of earlier sends
            if self.receive(data, (addr[0], addr[1]), now) is not None:
                self.early_dropped += 1  # the peer's channel started first; it resends until we answer
        timer = self.get_timer()
        if timer is not None and timer <= now:
            self.handle_timer(now)
        self.flush(now)

    def flush(self, now: float) -> None:
        for data, addr in self.datagrams_to_send(now):
            try:
                self.sock.sendto(data, addr)
            except OSError as exc:
                log.debug("path send to %s failed: %s", addr, exc)

    def close(self, now: float) -> None:
        self.agent.close(now)
        self.flush(now)
        self.sock.close()
