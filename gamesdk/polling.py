"""``PollingClient``: the player's SDK driven from a game loop: ``poll(now)`` once per frame, no asyncio, no threads.

The asyncio twin is :mod:`gamesdk.client`; both drive the same sans-IO user agent (:mod:`gamesdk.session`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Unpack

from gamesdk.address import Address
from gamesdk.channel.config import ChannelConfig, Lane
from gamesdk.channel.connection import Channel
from gamesdk.channel.events import ChannelClosed, ChannelEvent, Disconnected, SecurityError
from gamesdk.channel.lanes import message_and_lane, require_bytes
from gamesdk.channel.messages import pack_message
from gamesdk.channel.simulator import NetworkSimulator
from gamesdk.channel.stats import ChannelStats
from gamesdk.config import ClientConfig
from gamesdk.errors import InvitationWithdrawn, LocalProtocolError
from gamesdk.events import (
    Agreement,
    InviteCancelled,
    ReservationConfirmed,
    SessionEnded,
    SessionEstablished,
    SessionEvent,
)
from gamesdk.io.channel_poll import PollChannel
from gamesdk.io.player_sockets import PlayerSockets, channel_config_for
from gamesdk.qos.model import SessionTerms
from gamesdk.qos.negotiation import Acceptable, Requirements
from gamesdk.session.agent import UserAgent
from gamesdk.session.terms import OfferRequirements, make_terms
from gamesdk.sip.ids import IdFactory
from gamesdk.trace import enable_trace, trace_log

__all__ = ["PollingClient", "PollingSession"]

log = logging.getLogger(__name__)

#: Read at most this many datagrams per poll, so one flooded socket cannot stall a frame.
MAX_READS_PER_POLL = 256

#: Withdrawn invitations remembered for a clear error from a late ``accept()``.
MAX_REMEMBERED_WITHDRAWALS = 64

#: Events after which the application knows its session's channel is gone (see ``PollingSession.send``).
ENDING_EVENTS = (ChannelClosed, Disconnected, SecurityError, SessionEnded)

#: How long ``end()`` lingers by default for the peer to acknowledge the reliable lane before the BYE.
DEFAULT_LINGER_S = 1.0


class PollingSession:
    """An established session for game loops: ``poll(now)`` returns channel events; ``send``; ``end``.

    Each frame: ``client.poll(now)``, then ``session.poll(now)`` for each session, then the game's update
    with its ``send()`` calls, then ``session.flush(now)`` with a fresh ``now`` so the frame's messages leave
    together.
    """

    def __init__(self, client: PollingClient, agreement: Agreement, channel: PollChannel) -> None:
        self._client = client
        self.agreement = agreement
        self.call_id = agreement.call_id
        self.channel = channel
        #: True once the BYE was sent or received (the channel is closed then too).
        self.ended = False
        #: Channel events read on the session's behalf (at the peer's BYE, while lingering), handed out by
        #: the next ``poll``.
        self._pending: list[ChannelEvent] = []
        #: True once the application was told the session or its channel ended (an event from ``poll``), or
        #: ended it itself.
        self._told_end = False

    def send(self, data: bytes, lane: Lane | int = Lane.RELIABLE) -> None:
        """Queue ``data`` (bytes) on ``lane`` (reliable by default); it leaves at ``flush(now)`` or the next poll.

        When the session ended without us (the peer hung up, went silent, or the keys differ), a message sent
        before a ``poll`` returned the event that says so (``SessionEnded`` from the client's, ``Disconnected``
        / ``ChannelClosed`` from the session's) is dropped: that event is the news. Afterwards, or after
        ``end()``, sending raises.

        Raises:
            TypeError: ``data`` is not bytes (a ``str``: encode it, or use :meth:`send_message`).
            MessageTooLarge: ``data`` is too large for ``lane``.
            LocalProtocolError: the session ended (and a poll said so, or we ended it), or ``lane`` is not a
                ``Lane``.
        """
        data, lane = message_and_lane(data, lane)
        if not self.channel.channel.is_open and not self._told_end:
            require_bytes(data)
            return
        self.channel.send(data, lane)

    def send_message(self, obj: Any, lane: Lane | int = Lane.RELIABLE) -> None:
        """Send a msgpack-encoded game message (read it with ``unpack_message_untrusted``), as :meth:`send`."""
        self.send(pack_message(obj), lane)

    def flush(self, now: float) -> None:
        """Send what this frame queued now instead of at the next ``poll``."""
        self.channel.flush(now)

    def poll(self, now: float) -> list[ChannelEvent]:
        """Receive, run timers, send; returns the channel events (oldest first).

        After the session ended it returns what was still received before the end, then nothing.
        """
        events = self._pending
        self._pending = []
        if any(isinstance(event, ENDING_EVENTS) for event in events):
            self._told_end = True
        if self.ended:
            return events
        events += self.channel.poll(now)
        if any(isinstance(event, ENDING_EVENTS) for event in events):
            self._told_end = True
        if self._client._trace:
            for event in events:
                trace_log.info("session %s: %r", self.call_id, event)
        for event in events:
            if isinstance(event, Disconnected):
                self._client._silent.add(self.call_id)
                self._client._end(self, now, f"channel lost: {event.reason}", 0.0)
        if self.closing and not self.channel.channel.is_open:
            self._client._bye(self, now)
        return events

    def fileno(self) -> int:
        """The channel socket's descriptor: ``select`` on it (with the client's) to wake when data arrives."""
        return self.channel.fileno()

    def next_wakeup(self) -> float | None:
        """The earliest time ``poll`` has timer work even without incoming data."""
        return self.channel.next_wakeup()

    @property
    def closing(self) -> bool:
        """True while ``end()`` lingers for the peer's acknowledgements (the BYE follows)."""
        return self._client._lingering.get(self.call_id) is self

    @property
    def stats(self) -> ChannelStats:
        return self.channel.stats

    def end(self, now: float, reason: str | None = None, *, linger_s: float = DEFAULT_LINGER_S) -> None:
        """Hang up: deliver what is queued, CLOSE the channel, then BYE to the peer.

        The channel first lingers until the peer acknowledged every reliable message (at most ``linger_s``;
        0 closes at once); keep calling ``client.poll(now)`` (it drives a lingering session) and the BYE
        leaves when the channel has closed; ``SessionEnded`` then comes out of ``client.poll``.
        """
        self._told_end = True
        self._client._end(self, now, reason, linger_s)


class PollingClient:
    """A player's SDK driven from a game loop: call ``poll(now)`` once per frame; no asyncio, no threads.

    ``poll`` returns signalling events (:mod:`gamesdk.events`); a ``SessionEstablished`` comes with a ready
    :class:`PollingSession` in :attr:`sessions` whose own ``poll(now)`` returns the channel events.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        bind: Address = ("127.0.0.1", 0),
        channel_config: ChannelConfig | None = None,
        simulator: tuple[NetworkSimulator | None, NetworkSimulator | None] | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        ids: IdFactory | None = None,
    ) -> None:
        self._core = PlayerSockets(config, bind, random_bytes, ids)
        self._trace = config.trace
        if config.trace:
            enable_trace()
        self._channel_config = channel_config
        self._simulator = simulator
        #: Established sessions by Call-ID.
        self.sessions: dict[str, PollingSession] = {}
        #: Invitations the caller withdrew lately (Call-ID -> reason), so a late accept() says so.
        self._withdrawn: OrderedDict[str, str] = OrderedDict()
        #: Sessions whose ``end()`` lingers for the peer's acks; the BYE reasons they will send.
        self._lingering: dict[str, PollingSession] = {}
        self._bye_reasons: dict[str, str | None] = {}
        #: Sessions ending because the peer went silent (their terminated PUBLISH says event="timeout").
        self._silent: set[str] = set()

    @property
    def agent(self) -> UserAgent:
        return self._core.agent

    @property
    def local_addr(self) -> Address:
        return self._core.agent.local_addr

    @property
    def path_ready(self) -> bool:
        """Logged in and the next session's candidates (host, server-reflexive, relayed) are gathered: an
        ``invite()`` or ``accept()`` now offers all of them (before, only what was gathered so far)."""
        return self._core.agent.registered and self._core.path_ready

    def login(self, now: float) -> None:
        """Start the REGISTER; ``Registered`` or ``RegistrationFailed`` comes out of ``poll``."""
        self._core.agent.register(now)
        self._transmit()

    def logout(self, now: float) -> None:
        """Log out (REGISTER ``Expires: 0``); keep polling until ``Unregistered`` comes out of ``poll``.

        A session whose ``end()`` still lingers sends its BYE now, and the REGISTER leaves once the ``terminated``
        PUBLISHes of ended sessions are answered (at most 4 s later): the region bills each session by how it
        ended, not as a registration that ended under it.
        """
        for lingering in list(self._lingering.values()):
            self._bye(lingering, now)
        self._core.agent.unregister(now)
        self._transmit()

    def invite(
        self, peer: str, now: float, *, acceptable: Acceptable | None = None, **requirements: Unpack[OfferRequirements]
    ) -> str:
        """Start an invitation; returns the Call-ID. ``SessionEstablished``/``SessionFailed`` follow.

        ``requirements`` are the keywords of :func:`gamesdk.make_terms` (as for ``GameClient.invite``).
        """
        terms = make_terms(**requirements)
        call_id = self._core.agent.invite(peer, terms, now, acceptable=acceptable)
        self._transmit()
        self._core.prepare()  # the next key pair, made once the INVITE is out
        return call_id

    def accept(
        self, call_id: str, now: float, *, requirements: Requirements | None = None, answer: SessionTerms | None = None
    ) -> SessionTerms:
        """Accept an ``InviteReceived`` (as offered, from ``requirements``, or with ``answer``); returns the
        answer's terms. ``SessionEstablished`` follows once the caller's ACK arrived.

        Raises:
            InvitationWithdrawn: the caller withdrew it (an ``InviteCancelled`` came out of ``poll``).
            NegotiationError: our requirements cannot meet the offer.
        """
        if call_id in self._withdrawn:
            raise InvitationWithdrawn(call_id, self._withdrawn[call_id])
        try:
            return self._core.agent.accept(call_id, now, requirements=requirements, answer=answer)
        finally:
            self._transmit()
            self._core.prepare()  # the next key pair, made once the 200 is out

    def accept_invite_request(self, refer_id: str, now: float, *, acceptable: Acceptable | None = None) -> str:
        """Send the invitation our regional server asked for (an ``InviteRequested`` event: a web invite);
        returns its Call-ID. ``SessionEstablished``/``SessionFailed`` follow as for :meth:`invite`."""
        call_id = self._core.agent.accept_invite_request(refer_id, now, acceptable=acceptable)
        self._transmit()
        self._core.prepare()
        return call_id

    def decline_invite_request(self, refer_id: str, now: float, reason: str = "Declined") -> None:
        self._core.agent.decline_invite_request(refer_id, now, reason)
        self._transmit()

    def decline(self, call_id: str, now: float, status: int = 603, reason: str = "Declined") -> None:
        """Refuse an invitation (603 Decline, 486 Busy Here ...); nothing to do if it was withdrawn."""
        if call_id in self._withdrawn:
            return
        self._core.agent.decline(call_id, now, status=status, reason=reason)
        self._transmit()

    def watch(self, player: str, now: float) -> str:
        """Watch ``player``'s presence (``"bob@na.gamesdk.test"``, any region); returns its address of record.
        ``PresenceChanged`` events (``OFFLINE``, ``ONLINE``, ``IN_MATCH``) come out of ``poll``, the first at
        once, or ``WatchFailed`` (403: we may not watch; 404: no such player)."""
        aor = self._core.agent.watch(player, now)
        self._transmit()
        return aor

    def unwatch(self, player: str, now: float) -> None:
        """Stop watching ``player``; a last ``PresenceChanged(watching=False)`` follows."""
        self._core.agent.unwatch(player, now)
        self._transmit()

    def cancel(self, call_id: str, now: float) -> None:
        """Withdraw an invitation that has no answer yet (CANCEL); ``SessionFailed(487)`` follows.

        Raises:
            LocalProtocolError: ``call_id`` is not an invitation of ours still waiting for its answer.
        """
        self._core.agent.cancel(call_id, now)
        self._transmit()

    def poll(self, now: float) -> list[SessionEvent]:
        """Receive SIP datagrams, run due timers, send; return signalling events (oldest first)."""
        agent = self._core.agent
        sock = self._core.sock
        for lingering in list(self._lingering.values()):
            lingering._pending += lingering.channel.poll(now)
            if not lingering.channel.channel.is_open:
                self._bye(lingering, now)
        for _ in range(MAX_READS_PER_POLL):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # ICMP port unreachable from a previous send, on Linux
                log.debug("SIP socket: %s", exc)
                continue
            agent.receive_datagram(data, (addr[0], addr[1]), now)
        self._core.receive_flow(now)
        if agent.registered:
            self._core.prepare_path(now)  # the next session's candidates, gathered ahead
        self._core.pump_paths(now)
        timer = agent.get_timer()
        if timer is not None and timer <= now:
            agent.handle_timer(now)
        self._transmit()  # the ACK leaves before the channels of this poll's established sessions are made
        out: list[SessionEvent] = []
        for event in self._core.events():
            if isinstance(event, SessionEstablished):
                self._open(event, now)
            elif isinstance(event, InviteCancelled):
                self._withdrawn[event.call_id] = event.reason
                while len(self._withdrawn) > MAX_REMEMBERED_WITHDRAWALS:
                    self._withdrawn.popitem(last=False)
            elif isinstance(event, ReservationConfirmed):
                if (confirmed := self.sessions.get(event.call_id)) is not None:
                    confirmed.agreement = event.agreement
            elif isinstance(event, SessionEnded):
                session = self.sessions.pop(event.call_id, None)
                self._lingering.pop(event.call_id, None)
                if session is not None:
                    session._told_end = True  # returned from this poll
                if session is not None and not session.ended:
                    session.ended = True
                    if event.by_peer:
                        # what the peer sent before its BYE is read first, and handed out before the end
                        session._pending += session.channel.poll(now)
                        session._pending += session.channel.close(now, event.reason, by_peer=True)
                    else:  # ended here (the peer stopped answering)
                        session._pending += session.channel.close(now, event.reason)
            out.append(event)
        self._transmit()
        return out

    def _open(self, event: SessionEstablished, now: float) -> None:
        params = event.channel_params
        out, inbound = self._simulator or (None, None)
        path = self._core.take_path(event.call_id)
        if path is not None and path.peer_address is not None:
            params = replace(params, peer_addr=path.peer_address)  # the pair ICE nominated
        channel = Channel(params, channel_config_for(self._channel_config, event.agreement), now=now)
        poll_channel = PollChannel(
            channel, self._core.take_channel_socket(event.call_id), outbound=out, inbound=inbound, mux=path
        )
        if path is not None:
            path.channel = channel
            validated = getattr(channel, "path_validated", None)
            if validated is not None and path.peer_address is not None:
                validated(path.peer_address, now)
        self.sessions[event.call_id] = PollingSession(self, event.agreement, poll_channel)

    def _end(self, session: PollingSession, now: float, reason: str | None, linger_s: float) -> None:
        if session.ended or session.call_id in self._lingering:
            return
        session._pending += session.channel.close(now, reason or "session ended", linger_s=linger_s)
        if session.channel.channel.is_open:
            self._lingering[session.call_id] = session  # poll() sends the BYE once the channel closed
            self._bye_reasons[session.call_id] = reason
            return
        self._bye_reasons[session.call_id] = reason
        self._bye(session, now)

    def _bye(self, session: PollingSession, now: float) -> None:
        if session.ended:
            return
        session.ended = True
        self._lingering.pop(session.call_id, None)
        reason = self._bye_reasons.pop(session.call_id, None)
        self.sessions.pop(session.call_id, None)
        session._pending += session.channel.close(now, reason or "session ended")
        silent = session.call_id in self._silent
        self._silent.discard(session.call_id)
        try:
            self._core.agent.end(session.call_id, now, reason=reason, peer_silent=silent)
        except LocalProtocolError:
            pass
        self._transmit()

    def _transmit(self) -> None:
        self._core.transmit()

    def next_wakeup(self) -> float | None:
        """The earliest time ``poll`` has timer work (for loops that sleep); poll also when one of
        :attr:`sip_sockets` is readable."""
        return self._core.next_timer()

    @property
    def sip_sockets(self) -> list[socket.socket]:
        """The sockets signalling arrives on (the UDP socket, and the TLS connection when there is one), for
        loops that wait in ``select``."""
        flow = self._core.flow
        return [self._core.sock] + ([flow.sock] if flow is not None and flow.sock is not None else [])

    def fileno(self) -> int:
        """The SIP socket's descriptor, for loops that sleep in ``select`` until something arrives."""
        return self._core.sock.fileno()

    @property
    def path_sockets(self) -> list[socket.socket]:
        """The game sockets ``poll`` reads while their sessions' connectivity checks run (ICE checks and the ACK
        arrive there before a channel does), for loops that wait in ``select`` beside :attr:`sip_sockets`."""
        return self._core.path_sockets()

    def close(self, now: float | None = None) -> None:
        """End sessions and release the sockets (does not wait for answers)."""
        t = time.monotonic() if now is None else now
        for session in list(self.sessions.values()):
            self._end(session, t, "client closed", 0.0)
            self._bye(session, t)
        self._core.close()
