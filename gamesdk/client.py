"""``GameClient``: the player's SDK for asyncio programs (the game-loop twin is :mod:`gamesdk.polling`).

It drives one sans-IO :class:`~gamesdk.session.agent.UserAgent` on a UDP socket, binds one UDP socket per
session for the game channel (its port goes into the SDP), and opens the encrypted channel on it once the
session is established.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Self, Unpack

from gamesdk.address import Address
from gamesdk.channel.config import ChannelConfig, Lane
from gamesdk.channel.events import ChannelClosed, ChannelEvent, Disconnected, SecurityError
from gamesdk.channel.lanes import message_and_lane, require_bytes
from gamesdk.channel.messages import pack_message
from gamesdk.channel.simulator import NetworkSimulator
from gamesdk.channel.stats import ChannelStats
from gamesdk.config import ClientConfig
from gamesdk.errors import (
    GameSdkError,
    InvitationWithdrawn,
    LocalProtocolError,
    LoginError,
    SessionError,
    WatchRefused,
)
from gamesdk.events import (
    Agreement,
    InviteCancelled,
    InviteReceived,
    InviteRequested,
    PresenceChanged,
    Registered,
    RegistrationFailed,
    ReservationConfirmed,
    SessionEnded,
    SessionEstablished,
    SessionEvent,
    SessionFailed,
    Unregistered,
    WatchFailed,
)
from gamesdk.io.channel_asyncio import AsyncChannel, attach_channel, open_channel
from gamesdk.io.player_sockets import PlayerSockets, channel_config_for
from gamesdk.qos.model import SessionTerms
from gamesdk.qos.negotiation import Acceptable, Requirements
from gamesdk.session.agent import CallState, UserAgent
from gamesdk.session.core import LOGOUT_PUBLISH_WAIT_S
from gamesdk.session.terms import OfferRequirements, make_terms
from gamesdk.sip.ids import IdFactory
from gamesdk.sip.pidf import PresenceStatus
from gamesdk.trace import enable_trace, trace_log

__all__ = ["Accept", "Decline", "GameClient", "GameSession", "IncomingInvite", "InviteRequest"]

log = logging.getLogger(__name__)

#: An invitation the application answers within this time gets no 180 Ringing, only the 200 (see
#: ``UserAgent.ringing_delay_s``): matchmade games that accept at once save a relayed response per server.
RINGING_DELAY_S = 0.02

#: How long ``end()`` waits, by default, for the peer to acknowledge what is queued on the reliable lane
#: before the BYE (GameNetworkingSockets' linger); it returns at once when nothing is unacknowledged.
DEFAULT_LINGER_S = 1.0

#: Events after which the application knows its session's channel is gone (see ``GameSession.send``).
ENDING_EVENTS = (ChannelClosed, Disconnected, SecurityError, SessionEnded)

#: Read size of the SIP socket's transport: the largest UDP payload (65,535 - 8 - 20 bytes).
SIP_MAX_DATAGRAM = 65_507


@dataclass(frozen=True, slots=True)
class Accept:
    """An ``on_invite`` decision: accept as offered, from ``requirements``, or with an explicit ``answer``."""

    requirements: Requirements | None = None
    answer: SessionTerms | None = None


@dataclass(frozen=True, slots=True)
class Decline:
    """An ``on_invite`` decision: refuse with a SIP status (603 Decline, 486 Busy Here ...) and a reason."""

    status: int = 603
    reason: str = "Declined"


class GameSession:
    """An established game session (asyncio): the agreement and the encrypted channel.

    Read channel events with ``await next_event()`` (``MessageReceived``, ``Interrupted``, ``Disconnected``,
    ``QosViolation`` ..., and ``SessionEnded`` when the session ends); send with ``send`` or ``send_message``.
    """

    def __init__(self, client: GameClient, agreement: Agreement, channel: AsyncChannel) -> None:
        self._client = client
        self.agreement = agreement
        self.call_id = agreement.call_id
        self.channel = channel
        self._queue: asyncio.Queue[ChannelEvent | SessionEvent] = asyncio.Queue()
        self.ended = asyncio.Event()
        self._ending = False
        #: True once ``next_event()`` handed out an event that ends the channel or the session.
        self._told_end = False

    def send(self, data: bytes, lane: Lane | int = Lane.RELIABLE) -> None:
        """Send ``data`` (bytes) on ``lane`` (reliable by default).

        When the session ended without us (the peer hung up, went silent, or the keys differ), a message sent
        before ``next_event()`` handed out the event that says so is dropped: that event is the news, and a
        game loop need not guard every ``send``. Once it was handed out, or after ``end()``, sending raises.

        Raises:
            TypeError: ``data`` is not bytes (a ``str``: encode it, or use :meth:`send_message`).
            MessageTooLarge: ``data`` is too large for ``lane``.
            LocalProtocolError: the session ended (and ``next_event()`` said so, or we ended it), or ``lane``
                is not a ``Lane``.
        """
        data, lane = message_and_lane(data, lane)
        if not self.channel.channel.is_open and not (self._told_end or self._ending):
            require_bytes(data)
            return
        self.channel.send(data, lane)

    def send_message(self, obj: Any, lane: Lane | int = Lane.RELIABLE) -> None:
        """Send a msgpack-encoded game message (read it with ``unpack_message_untrusted``), as :meth:`send`."""
        self.send(pack_message(obj), lane)

    @property
    def stats(self) -> ChannelStats:
        return self.channel.stats

    async def next_event(self) -> ChannelEvent | SessionEvent:
        """The next channel event (``MessageReceived``, ``Interrupted`` ...) or ``SessionEnded``, oldest first."""
        event = await self._queue.get()
        if isinstance(event, ENDING_EVENTS):
            self._told_end = True
        return event

    async def end(self, reason: str | None = None, *, linger_s: float = DEFAULT_LINGER_S) -> None:
        """Hang up: deliver what is queued, CLOSE the channel, BYE to the peer, ``terminated`` to our server.

        Messages sent before ``end()`` reach the peer before its ``SessionEnded``: the channel lingers until
        the peer acknowledged every reliable message (at most ``linger_s``; 0 closes at once, sending what
        is queued once), then closes, then the BYE leaves.
        """
        if self.ended.is_set() or self._ending:
            return
        self._ending = True
        channel = self.channel
        channel.close(reason or "session ended", linger_s=linger_s)
        if not channel.closed.is_set() and linger_s > 0:
            try:
                # the channel's own linger timer closes it; the margin only guards against a stuck loop
                await asyncio.wait_for(channel.closed.wait(), linger_s + 1.0)
            except TimeoutError:
                pass
        if not self.ended.is_set():
            self._client._end(self, reason)

    def _deliver(self, event: ChannelEvent | SessionEvent) -> None:
        if self._client.config.trace:
            trace_log.info("session %s: %r", self.call_id, event)
        self._queue.put_nowait(event)


class IncomingInvite:
    """An invitation waiting for our answer (from ``GameClient.next_invite`` or the ``on_invite`` handler).

    Attributes:
        call_id: the session's Call-ID.
        caller: the caller's address of record, ``"sip:alice@eu.gamesdk.test"``.
        caller_name: the display name the caller sent, if any.
        offer: what the caller asks for (:class:`SessionTerms`: formats, classification, QoS, b=AS, suites).
        withdrawn: the ``InviteCancelled`` event once the caller gave up (CANCEL) or the invitation timed
            out; ``None`` while it can still be answered.
    """

    def __init__(self, client: GameClient, event: InviteReceived) -> None:
        self._client = client
        self.call_id = event.call_id
        self.caller = event.caller
        self.caller_name = event.caller_name
        self.offer = event.offer
        self.withdrawn: InviteCancelled | None = None
        self._withdrawn = asyncio.Event()

    async def accept(
        self, *, requirements: Requirements | None = None, answer: SessionTerms | None = None
    ) -> GameSession:
        """Accept (as offered, from ``requirements``, or with ``answer``) and wait for the caller's ACK.

        Raises:
            InvitationWithdrawn: the caller withdrew the invitation before (or while) we accepted.
            NegotiationError: our requirements cannot meet the offer.
        """
        if self.withdrawn is not None:
            raise InvitationWithdrawn(self.call_id, self.withdrawn.reason)
        return await self._client._accept(self.call_id, requirements, answer)

    async def decline(self, status: int = 603, reason: str = "Declined") -> None:
        """Refuse with a SIP status (603 Decline, 486 Busy Here ...); nothing to do if already withdrawn."""
        if self.withdrawn is None:
            self._client._decline(self.call_id, status, reason)

    async def wait_withdrawn(self) -> InviteCancelled:
        """Wait until the caller withdraws the invitation (for a lobby that shows pending invitations)."""
        await self._withdrawn.wait()
        assert self.withdrawn is not None
        return self.withdrawn

    def _withdraw(self, event: InviteCancelled) -> None:
        self.withdrawn = event
        self._withdrawn.set()


class InviteRequest:
    """Our regional server asks us to invite someone (the player invited from the region's web site; from
    ``GameClient.next_invite_request``). :meth:`accept` sends the INVITE from this client, like ``invite``."""

    def __init__(self, client: GameClient, event: InviteRequested) -> None:
        self._client = client
        self.refer_id = event.refer_id
        self.peer = event.peer
        self.requirements = dict(event.requirements)
        self.referred_by = event.referred_by

    async def accept(self, *, acceptable: Acceptable | None = None) -> GameSession:
        """Invite :attr:`peer` with :attr:`requirements`; returns the session (raises SessionError as
        ``invite`` does). The server's page follows the progress."""
        return await self._client._accept_request(self.refer_id, acceptable)

    async def decline(self, reason: str = "Declined") -> None:
        self._client._decline_request(self.refer_id, reason)


class _AgentProtocol(asyncio.DatagramProtocol):
    def __init__(self, client: GameClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.client._feed(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP socket error: %s", exc)


class GameClient:
    """A player's SDK for asyncio programs.

    ``await login()``, then ``await invite("bob@na.gamesdk.test", ...)`` returns a :class:`GameSession`, or
    ``await next_invite()`` / ``on_invite`` answers invitations. ``await close()`` when done.

    Args:
        config: account, region domain and server address.
        bind: local address of the SIP socket (and of the channel sockets).
        on_invite: optional ``async def handler(invite: IncomingInvite) -> Accept | Decline``; without it
            invitations queue for :meth:`next_invite`.
        channel_config: channel tunables; the negotiated QoS fills in the QoS bounds when it sets none.
        simulator: optional ``(outbound, inbound)`` network simulators for every channel (testing, demos).
        ringing_delay_s: send 180 Ringing only when an invitation is still unanswered after this long
            (0: at once, as soon as it arrives).
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        bind: Address = ("127.0.0.1", 0),
        on_invite: Callable[[IncomingInvite], Awaitable[Accept | Decline]] | None = None,
        channel_config: ChannelConfig | None = None,
        simulator: tuple[NetworkSimulator | None, NetworkSimulator | None] | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        ids: IdFactory | None = None,
        ringing_delay_s: float = RINGING_DELAY_S,
    ) -> None:
        self.config = config
        if config.trace:
            enable_trace()
        self._ringing_delay_s = ringing_delay_s
        self._bind = bind
        self._random = random_bytes
        self._ids = ids
        self._on_invite = on_invite
        self._channel_config = channel_config
        self._simulator = simulator
        self._core: PlayerSockets | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._flow_fd: int | None = None
        #: Path sockets (ICE checks, the ACK) the loop watches until a channel reads them: fd -> socket.
        self._path_fds: dict[int, Any] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._waiters: dict[str, asyncio.Future[SessionEvent]] = {}
        self._login: asyncio.Future[SessionEvent] | None = None
        self._invites: asyncio.Queue[IncomingInvite] = asyncio.Queue()
        self._invite_requests: asyncio.Queue[InviteRequest] = asyncio.Queue()
        #: Invitations not yet answered, so a CANCEL can mark them withdrawn.
        self._incoming: dict[str, IncomingInvite] = {}
        #: Sessions the ``on_invite`` handler accepted (or the exception it raised), for :meth:`next_session`.
        self._accepted: asyncio.Queue[GameSession | BaseException] = asyncio.Queue()
        self._sessions: dict[str, GameSession] = {}
        self._ended_early: dict[str, SessionEnded] = {}
        self._made: dict[str, GameSession] = {}  # opened, not yet handed to invite()/accept()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Every signalling event, in order (for logs and HUDs).
        self.history: list[SessionEvent] = []
        #: The last known presence of each watched player (``watch()``).
        self.presence: dict[str, PresenceStatus] = {}
        self._presence_events: asyncio.Queue[PresenceChanged | WatchFailed] = asyncio.Queue()
        self._watch_waiters: dict[str, asyncio.Future[PresenceChanged | WatchFailed]] = {}

    # -- lifecycle
    async def _start(self) -> PlayerSockets:
        if self._core is None:
            self._loop = asyncio.get_running_loop()
            core = PlayerSockets(self.config, self._bind, self._random, self._ids)
            transport, _ = await self._loop.create_datagram_endpoint(lambda: _AgentProtocol(self), sock=core.sock)
            if hasattr(transport, "max_size"):
                # the largest UDP payload, not CPython's 256 KiB: a smaller buffer to allocate per datagram
                transport.max_size = SIP_MAX_DATAGRAM
            # the established event is handed out in the same loop iteration as the ACK (see _open); the
            # "confirmed" PUBLISH follows on the timer, so its server-side work does not delay the setup
            core.agent.defer_confirmed_publish = True
            core.agent.ringing_delay_s = self._ringing_delay_s
            self._loop.call_soon(core.prepare)
            self._transport = transport
            self._core = core
            if core.flow is not None:
                core.flow.before_close = self._unwatch_flow
                core.flow.open()
                self._watch_flow()
        return self._core

    @property
    def local_addr(self) -> Address:
        if self._core is None:
            raise LocalProtocolError("the client is not started; call login() first")
        return self._core.agent.local_addr

    @property
    def agent(self) -> UserAgent:
        if self._core is None:
            raise LocalProtocolError("the client is not started; call login() first")
        return self._core.agent

    async def login(self, timeout_s: float = 10.0) -> Registered:
        """Register with the regional server (digest authentication).

        Raises:
            LoginError: wrong password (403), unknown account, no answer (408) ...
        """
        core = await self._start()
        loop = asyncio.get_running_loop()
        self._login = loop.create_future()
        core.agent.register(loop.time())
        self._pump()
        try:
            event = await asyncio.wait_for(self._login, timeout_s)
        except TimeoutError:
            raise LoginError(408, "no answer from the server") from None
        if isinstance(event, RegistrationFailed):
            raise LoginError(event.status, event.reason)
        assert isinstance(event, Registered)
        return event

    async def logout(self, timeout_s: float = 5.0) -> None:
        """Unregister (``Expires: 0``).

        The REGISTER leaves once the ``terminated`` PUBLISHes of ended sessions are answered (at most
        ``LOGOUT_PUBLISH_WAIT_S``, 4 s, later), so the region bills each session by how it ended; then
        ``timeout_s`` for the region's answer.
        """
        if self._core is None:
            return
        loop = asyncio.get_running_loop()
        self._login = loop.create_future()
        self._core.agent.unregister(loop.time())
        self._pump()
        try:
            await asyncio.wait_for(self._login, timeout_s + LOGOUT_PUBLISH_WAIT_S)
        except TimeoutError:
            log.info("logout: no answer from the server")

    async def close(self) -> None:
        """End every session, log out if logged in, and release the sockets."""
        for session in list(self._sessions.values()):
            await session.end("client closed")
        if self._core is not None and self._core.agent.registered:
            await self.logout()
        await asyncio.sleep(0)
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()
        if self._flow_fd is not None and self._loop is not None:
            self._loop.remove_reader(self._flow_fd)
            self._loop.remove_writer(self._flow_fd)
            self._flow_fd = None
        if self._loop is not None:
            for fd in self._path_fds:
                self._loop.remove_reader(fd)
            self._path_fds.clear()
        if self._core is not None:
            self._core.close()
        for task in self._tasks:
            task.cancel()

    async def __aenter__(self) -> Self:
        await self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- inviting
    async def invite(
        self, peer: str, *, acceptable: Acceptable | None = None, **requirements: Unpack[OfferRequirements]
    ) -> GameSession:
        """Invite ``peer`` (``"bob@na.gamesdk.test"``) to a game with these requirements.

        ``requirements`` are the keywords of :func:`gamesdk.make_terms`: ``format``, ``classification``,
        ``latency_ms``, ``jitter_ms``, ``loss_ppm``, ``pps``, ``bandwidth_kbps``, ``security``; ``acceptable``
        bounds what the callee may answer.

        Returns the established :class:`GameSession` once the callee answered, both regions reserved and the
        ACK went directly to the callee.

        Raises:
            SessionError: refused by a policy server (580), the callee (603, 488, 486), unknown (404) or
                offline (480) player, no answer (408), or an answer outside ``acceptable`` (488).
            LocalProtocolError: a requirement is out of range.
        """
        core = await self._start()
        terms = make_terms(**requirements)
        await self._path_ready(core)
        loop = asyncio.get_running_loop()
        call_id = core.agent.invite(peer, terms, loop.time(), acceptable=acceptable)
        future: asyncio.Future[SessionEvent] = loop.create_future()
        self._waiters[call_id] = future
        self._pump()
        loop.call_soon(core.prepare)  # the next key pair, made while the servers work on this INVITE
        try:
            event = await future
        except asyncio.CancelledError:
            self._abandon(call_id, "invitation withdrawn")  # e.g. asyncio.wait_for gave up: never half open
            raise
        return self._session_from(event)

    async def next_invite_request(self) -> InviteRequest:
        """Wait for the next request of our regional server to invite someone (a web invite, SIP REFER)."""
        await self._start()
        return await self._invite_requests.get()

    async def _accept_request(self, refer_id: str, acceptable: Acceptable | None) -> GameSession:
        core = await self._start()
        loop = asyncio.get_running_loop()
        call_id = core.agent.accept_invite_request(refer_id, loop.time(), acceptable=acceptable)
        future: asyncio.Future[SessionEvent] = loop.create_future()
        self._waiters[call_id] = future
        self._pump()
        loop.call_soon(core.prepare)
        try:
            event = await future
        except asyncio.CancelledError:
            self._abandon(call_id, "invitation withdrawn")
            raise
        return self._session_from(event)

    def _decline_request(self, refer_id: str, reason: str) -> None:
        core = self._core
        if core is None or self._loop is None:
            raise LocalProtocolError("the client is not running")
        core.agent.decline_invite_request(refer_id, self._loop.time(), reason)
        self._pump()


    # -- presence
    async def watch(self, player: str, timeout_s: float = 10.0) -> PresenceStatus:
        """Watch ``player`` (``"bob@na.gamesdk.test"``, any region): returns its presence now; each change
        comes from :meth:`next_presence` as a ``PresenceChanged`` (``OFFLINE``, ``ONLINE``, ``IN_MATCH``).

        Raises:
            WatchRefused: the player's region refused (403: we may not watch; 404: no such player) or did
                not answer (408).
        """
        core = await self._start()
        loop = asyncio.get_running_loop()
        aor = core.agent.watch(player, loop.time())
        future: asyncio.Future[PresenceChanged | WatchFailed] = loop.create_future()
        self._watch_waiters[aor] = future
        self._pump()
        try:
            first = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            self._watch_waiters.pop(aor, None)
            raise WatchRefused(aor, 408, "no answer") from None
        if isinstance(first, WatchFailed):
            raise WatchRefused(first.player, first.status, first.reason)
        return first.status

    async def unwatch(self, player: str) -> None:
        """Stop watching ``player``; a last ``PresenceChanged(watching=False)`` follows."""
        core = await self._start()
        core.agent.unwatch(player, asyncio.get_running_loop().time())
        self._pump()

    async def next_presence(self) -> PresenceChanged | WatchFailed:
        """The next change of a watched player's presence (or a watch that failed later, e.g. on refresh)."""
        return await self._presence_events.get()

    async def next_invite(self) -> IncomingInvite:
        """Wait for the next invitation still open (when no ``on_invite`` handler is set); invitations the
        caller withdrew while queued are skipped."""
        await self._start()
        while True:
            invite = await self._invites.get()
            if invite.withdrawn is None:
                return invite

    async def _accept(
        self, call_id: str, requirements: Requirements | None, answer: SessionTerms | None
    ) -> GameSession:
        core = await self._start()
        await self._path_ready(core)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[SessionEvent] = loop.create_future()
        self._waiters[call_id] = future
        try:
            core.agent.accept(call_id, loop.time(), requirements=requirements, answer=answer)
        except Exception:
            self._waiters.pop(call_id, None)
            self._pump()
            raise
        self._pump()
        loop.call_soon(core.prepare)  # the next key pair, made while our 200 travels back
        try:
            event = await future
        except asyncio.CancelledError:
            self._abandon(call_id, "acceptance withdrawn")
            raise
        return self._session_from(event)

    def _abandon(self, call_id: str, reason: str) -> None:
        """The application stopped waiting for ``call_id``: withdraw the invitation or end the session."""
        self._waiters.pop(call_id, None)
        if self._core is None or self._loop is None:
            return
        agent, now = self._core.agent, self._loop.time()
        state = agent.session_state(call_id)
        session = self._made.pop(call_id, None)
        if session is not None:
            self._end(session, reason)
        elif state is CallState.PENDING and agent.is_outgoing(call_id):
            agent.cancel(call_id, now)
        elif state in (CallState.ANSWERED, CallState.CONFIRMED):
            # established on the signalling side, channel still opening: _open sees the end and cleans up
            agent.end(call_id, now, reason=reason)
        self._pump()

    def _decline(self, call_id: str, status: int, reason: str) -> None:
        assert self._core is not None and self._loop is not None
        self._core.agent.decline(call_id, self._loop.time(), status=status, reason=reason)
        self._pump()

    def _session_from(self, event: SessionEvent) -> GameSession:
        if isinstance(event, SessionFailed):
            raise SessionError(event.status, event.reason, event.refused_by)
        if isinstance(event, InviteCancelled):
            raise InvitationWithdrawn(event.call_id, event.reason)
        assert isinstance(event, SessionEstablished)
        return self._made.pop(event.call_id)

    def _end(self, session: GameSession, reason: str | None, *, peer_silent: bool = False) -> None:
        assert self._core is not None and self._loop is not None
        session.channel.close(reason or "session ended")
        try:
            self._core.agent.end(session.call_id, self._loop.time(), reason=reason, peer_silent=peer_silent)
        except LocalProtocolError:
            pass  # already over on the signalling side
        self._pump()

    # -- the driver: feed, drain events, transmit, re-arm one timer
    def _on_flow(self) -> None:
        """The TLS connection to the server is readable or writable: move its bytes, feed what arrived."""
        assert self._core is not None and self._loop is not None
        self._core.receive_flow(self._loop.time())
        self._pump()

    def _unwatch_flow(self, fd: int) -> None:
        loop = self._loop
        if loop is not None and self._flow_fd == fd:
            loop.remove_reader(fd)
            loop.remove_writer(fd)
            self._flow_fd = None

    def _watch_flow(self) -> None:
        """Keep the loop's reader (and, while records wait, writer) on the flow's current socket."""
        core, loop = self._core, self._loop
        if core is None or loop is None or core.flow is None:
            return
        flow = core.flow
        fd = flow.sock.fileno() if flow.sock is not None else None
        watched = self._flow_fd
        if watched is not None and watched != fd:
            # by number: the flow may have closed its socket already
            loop.remove_reader(watched)
            loop.remove_writer(watched)
            self._flow_fd = None
        if fd is None:
            login = self._login
            if flow.error is not None and login is not None and not login.done():
                # a certificate that does not verify will not verify on a retry: fail the login now
                login.set_exception(LoginError(503, f"cannot reach the server over TLS: {flow.error}"))
            return
        if self._flow_fd is None:
            loop.add_reader(fd, self._on_flow)
            self._flow_fd = fd
        if flow.wants_write:
            loop.add_writer(fd, self._on_flow)
        else:
            loop.remove_writer(fd)

    def _watch_paths(self) -> None:
        """Keep a loop reader on exactly the path sockets that no channel reads yet."""
        core, loop = self._core, self._loop
        if core is None or loop is None:
            return
        wanted = {sock.fileno(): sock for sock in core.path_sockets() if sock.fileno() >= 0}
        # By number and by socket: a closed path's number may already belong to the next path's socket.
        for fd in [fd for fd, sock in self._path_fds.items() if wanted.get(fd) is not sock]:
            loop.remove_reader(fd)
            del self._path_fds[fd]
        for fd, sock in wanted.items():
            if fd not in self._path_fds:
                loop.add_reader(fd, self._pump)
                self._path_fds[fd] = sock

    async def _path_ready(self, core: PlayerSockets) -> None:
        """Give the next session's gathering (STUN and TURN round trips) a bounded moment to finish."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while not core.path_ready and core.agent.registered and loop.time() < deadline:
            self._pump()
            await asyncio.sleep(0.005)

    def _feed(self, data: bytes, addr: Address) -> None:
        assert self._core is not None and self._loop is not None
        self._core.agent.receive_datagram(data, addr, self._loop.time())
        self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        assert self._core is not None and self._loop is not None
        now = self._loop.time()
        self._core.agent.handle_timer(now)
        self._core.receive_flow(now)  # the keep-alive, when that was due
        self._pump()

    def _pump(self) -> None:
        core, loop, transport = self._core, self._loop, self._transport
        if core is None or loop is None:
            return
        # transmit first: the ACK must not wait for the channel the established event opens (its key
        # derivation); what a dispatch sends (a BYE) goes out in its own _pump, still after these
        now = loop.time()
        if core.agent.registered:
            core.prepare_path(now)  # the next session's candidates, gathered ahead
        core.pump_paths(now)
        if core.flow is not None:
            core.transmit()  # to the server over TLS, the rest over the UDP socket
            self._watch_flow()
        elif transport is not None and not transport.is_closing():
            core.transmit(transport.sendto)  # SIP for a peer behind NAT leaves over the call's nominated pair
        self._watch_paths()
        for event in core.events():
            self.history.append(event)
            self._dispatch(event)
        # Events close the paths of ended sessions: their readers go now, before the loop can give the freed
        # descriptor number to another socket (whose reader would then never fire, or be removed by ours).
        self._watch_paths()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = core.next_timer()
        if when is not None:
            self._timer = loop.call_at(when, self._on_timer)

    def _dispatch(self, event: SessionEvent) -> None:
        if isinstance(event, (Registered, RegistrationFailed, Unregistered)):
            if self._login is not None and not self._login.done():
                self._login.set_result(event)
            return
        if isinstance(event, InviteRequested):
            self._invite_requests.put_nowait(InviteRequest(self, event))
            return
        if isinstance(event, (PresenceChanged, WatchFailed)):
            if isinstance(event, PresenceChanged):
                self.presence[event.player] = event.status
            waiter = self._watch_waiters.pop(event.player, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(event)  # the answer watch() returns
            else:
                self._presence_events.put_nowait(event)
            return
        if isinstance(event, InviteReceived):
            invite = IncomingInvite(self, event)
            self._incoming[event.call_id] = invite
            if self._on_invite is not None:
                self._spawn(self._run_handler(invite))
            else:
                self._invites.put_nowait(invite)
            return
        if isinstance(event, SessionEstablished):
            self._open(event)
            return
        if isinstance(event, ReservationConfirmed):
            found = self._sessions.get(event.call_id) or self._made.get(event.call_id)
            if found is not None:
                found.agreement = event.agreement
                found._deliver(event)
            return
        if isinstance(event, InviteCancelled):
            withdrawn = self._incoming.pop(event.call_id, None)
            if withdrawn is not None:
                withdrawn._withdraw(event)
            self._resolve(event.call_id, event)
            return
        if isinstance(event, SessionFailed):
            self._incoming.pop(event.call_id, None)
            self._resolve(event.call_id, event)
            return
        if isinstance(event, SessionEnded):
            session = self._sessions.pop(event.call_id, None)
            if session is None:
                # ended before its channel finished opening (e.g. ACK then BYE at once): _open delivers it
                self._ended_early[event.call_id] = event
            else:
                if event.by_peer:
                    session.channel.drain()  # what the peer sent before its BYE comes before the end
                    session.channel.close(event.reason, by_peer=True)  # its CLOSE may be lost or behind
                else:
                    session.channel.close(event.reason)  # ended here (the peer stopped answering): no-op if closed
                session.ended.set()
                session._deliver(event)

    def _open(self, event: SessionEstablished) -> None:
        """Open the game channel on the socket the SDP advertised and hand the session out: at once where the
        loop allows (no round trip between the ACK and ``invite()``/``accept()`` returning), else awaited."""
        assert self._core is not None
        path = self._core.take_path(event.call_id)
        sock = self._core.take_channel_socket(event.call_id)
        params = event.channel_params
        if path is not None and path.peer_address is not None:
            params = replace(params, peer_addr=path.peer_address)  # the pair ICE nominated
        out, inbound = self._simulator or (None, None)
        holder: list[GameSession] = []

        def on_channel_event(ch_event: ChannelEvent) -> None:
            session = holder[0] if holder else None
            if session is None:
                return
            session._deliver(ch_event)
            if isinstance(ch_event, Disconnected) and not session.ended.is_set() and self._loop is not None:
                # the peer went silent: end the signalling side too (BYE, terminated)
                self._end(session, f"channel lost: {ch_event.reason}", peer_silent=True)

        config = channel_config_for(self._channel_config, event.agreement)
        try:
            channel = attach_channel(params, config, sock=sock, on_event=on_channel_event, outbound=out, inbound=inbound,
                                     mux=path)
        except NotImplementedError:  # a loop without add_reader (Windows' proactor)
            opening = open_channel(params, config, sock=sock, on_event=on_channel_event, outbound=out, inbound=inbound,
                                   mux=path)

            async def opened() -> None:
                self._opened(event, await opening, holder)

            self._spawn(opened())
            return
        self._opened(event, channel, holder)

    def _opened(self, event: SessionEstablished, channel: AsyncChannel, holder: list[GameSession]) -> None:
        self._incoming.pop(event.call_id, None)
        path = self._core.paths.get(event.call_id) if self._core is not None else None
        if path is not None and path.uses_ice and self._loop is not None:
            path.channel = channel.channel
            validated = getattr(channel.channel, "path_validated", None)
            if validated is not None and path.peer_address is not None:
                validated(path.peer_address, self._loop.time())
        session = GameSession(self, event.agreement, channel)
        holder.append(session)
        early = self._ended_early.pop(event.call_id, None)
        if early is None:
            self._sessions[event.call_id] = session
        else:
            channel.close(early.reason)
            session.ended.set()
            session._deliver(early)
        if event.call_id in self._waiters:
            self._made[event.call_id] = session  # for invite()/accept() to hand out
            self._resolve(event.call_id, event)
        elif early is None:
            self._end(session, "nobody waits for this session")  # its invite()/accept() was cancelled

    def _resolve(self, call_id: str, event: SessionEvent) -> None:
        future = self._waiters.pop(call_id, None)
        if future is not None and not future.done():
            future.set_result(event)

    async def _run_handler(self, invite: IncomingInvite) -> None:
        assert self._on_invite is not None
        try:
            decision = await self._on_invite(invite)
        except Exception as exc:
            # declined, logged with its traceback, and raised to the application from next_session(): a bug in
            # the handler must not pass unseen
            log.error("on_invite handler raised for %s; declined with 500, next_session() raises it", invite.call_id,
                      exc_info=exc)
            await invite.decline(500, "invite handler failed")
            self._accepted.put_nowait(exc)
            return
        if isinstance(decision, Decline):
            await invite.decline(decision.status, decision.reason)
            return
        if not isinstance(decision, Accept):
            await invite.decline(500, "invite handler failed")
            self._accepted.put_nowait(
                TypeError(f"on_invite must return Accept(...) or Decline(...), got {type(decision).__name__}")
            )
            return
        try:
            session = await invite.accept(requirements=decision.requirements, answer=decision.answer)
        except GameSdkError as exc:  # withdrawn meanwhile, or the negotiation failed: the caller was told
            log.info("accepting %s failed: %s", invite.call_id, exc)
            return
        self._accepted.put_nowait(session)

    async def next_session(self) -> GameSession:
        """With an ``on_invite`` handler: wait for the next session it accepted.

        Raises:
            Exception: what the ``on_invite`` handler raised (the invitation was declined with 500), or a
                ``TypeError`` when it returned something other than ``Accept`` / ``Decline``.
        """
        item = await self._accepted.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


