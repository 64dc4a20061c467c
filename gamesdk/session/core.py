"""The user agent's shared core: state, the sans-IO driving contract, transactions, login, dialog publication,
established sessions and their end. The roles build on it: :mod:`gamesdk.session.uac` (the invitations we send)
and :mod:`gamesdk.session.uas` (the requests we receive); :class:`gamesdk.session.agent.UserAgent` joins them.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from gamesdk.address import Address
from gamesdk.channel.config import ChannelParams, PrivateKey
from gamesdk.channel.crypto import generate_keypair
from gamesdk.config import ClientConfig
from gamesdk.errors import LocalProtocolError, RemoteProtocolError
from gamesdk.events import (
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
from gamesdk.ice.servers import RELAY_HEADER, TurnServer, parse_relay_header
from gamesdk.identity import IdentityVerifier
from gamesdk.qos.model import SessionTerms
from gamesdk.sdp.game import GameMedia, Role, game_to_sdp
from gamesdk.sdp.ice import IceParameters, add_ice
from gamesdk.sdp.model import SessionDescription
from gamesdk.session.agreement import channel_params
from gamesdk.session.calls import Call, CallState, Pending, TimerHeap
from gamesdk.session.credentials import MAX_AUTH_RETRIES, Credentials
from gamesdk.session.keepalive import StunKeepAlive
from gamesdk.session.presence import WATCH_EXPIRES_S, Watch, build_subscribe
from gamesdk.session.publication import build_publish
from gamesdk.session.registration import Registration
from gamesdk.session.requests import host_text, parse_reservations, resend_with
from gamesdk.sip.dialog import Dialog, build_bye, build_in_dialog_request
from gamesdk.sip.dialog_info import DialogState
from gamesdk.sip.headers import Reason
from gamesdk.sip.ids import IdFactory
from gamesdk.sip.message import Request, Response, response_for
from gamesdk.sip.parser import parse_message_untrusted
from gamesdk.sip.pidf import PresenceStatus, parse_presence_untrusted
from gamesdk.sip.transaction import (
    AckTimedOut,
    ResponseReceived,
    TransactionEvent,
    TransactionKey,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from gamesdk.sip.transaction_client import ClientNonInviteTransaction
from gamesdk.sip.transaction_server import ServerNonInviteTransaction
from gamesdk.sip.transaction_table import TransactionTable
from gamesdk.trace import trace_log

__all__ = ["AgentCore"]

log = logging.getLogger(__name__)

#: A ``confirmed`` or ``terminated`` PUBLISH is sent at most this often in all (5xx, timeouts): the server bills
#: from them, so one lost or refused attempt must not bill a played game as never played, or bill past its end.
PUBLISH_ATTEMPTS = 5
#: The first wait before sending it again (doubling), unless the server said ``Retry-After``; and the longest.
PUBLISH_RETRY_S = 1.0
PUBLISH_RETRY_MAX_S = 8.0
#: How long a logout waits at most for the ``terminated`` PUBLISHes still in flight (a retransmission, a 401, a
#: 503 and its Retry-After) to get a final answer before the ``Expires: 0`` REGISTER leaves. The server releases
#: a player's reservations when the registration ends and bills them ``reg-expired``; a de-registration that
#: overtakes the ``terminated`` would bill a game that ended with a BYE as a lost registration. 4 s covers a
#: 503 with ``Retry-After: 1`` and the doubling resend after it (PUBLISH_RETRY_S) plus a lost datagram or two.
LOGOUT_PUBLISH_WAIT_S = 4.0


class PathProvider(Protocol):
    """What the driver's NAT traversal (ICE, :mod:`gamesdk.io.paths`) offers the user agent."""

    def local_ice(self, call_id: str) -> IceParameters | None:
        """Our ICE credentials and candidates for the call's SDP (after ``channel_addr`` made its socket)."""

    def remote_ice(self, call_id: str, ice: IceParameters | None, *, controlling: bool) -> None:
        """The peer's ICE lines are known (None: the peer offers no ICE); checks may start."""


class AgentCore:
    """State and plumbing of one player's user agent; see :class:`gamesdk.session.agent.UserAgent`."""

    def __init__(
        self,
        config: ClientConfig,
        local_addr: Address,
        *,
        ids: IdFactory,
        random_bytes: Callable[[int], bytes],
        channel_addr: Callable[[str], Address],
        keypairs: Callable[[], tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.config = config
        self.local_addr = local_addr
        self._ids = ids
        self._random = random_bytes
        self._channel_addr = channel_addr
        self._keypairs = keypairs or (lambda: generate_keypair(random_bytes))
        self._credentials = Credentials(config.username, config.password, ids.cnonce, config.digest_algorithms)
        self._events: deque[SessionEvent] = deque()
        self._out: list[tuple[bytes, Address]] = []
        self._transactions = TransactionTable()
        #: What each live transaction is for, by key (events carry only the key).
        self._pending: dict[TransactionKey, Pending] = {}
        self._calls: dict[str, Call] = {}
        #: Every call's deadlines, earliest first (see :data:`~gamesdk.session.calls.TimerHeap`).
        self._call_timers: TimerHeap = []
        self._timers: dict[str, float] = {}
        #: PUBLISHes of a confirmed or ended dialog waiting to be sent again: (when, seq, what).
        self._republish: list[tuple[float, int, Pending]] = []
        self._republish_seq = 0
        #: Players we watch (presence subscriptions), by address of record.
        self._watches: dict[str, Watch] = {}
        self._registration = Registration(
            aor=config.aor,
            registrar=f"sip:{config.domain}",
            call_id=ids.call_id(),
            tag=ids.tag(),
            expires=config.register_expires_s,
            outbound=config.transport == "tls" or config.ice,
        )
        #: Checks the regions' signed identities (RFC 8224) on invitations and answers; None: not checked.
        self.identity: IdentityVerifier | None = None
        #: RFC 5626 outbound over TLS, and over UDP with ICE (the player may sit behind a NAT): the server reaches
        #: us over our connection, or at the address our REGISTER came from, never at our private Contact.
        self.outbound = config.transport == "tls" or config.ice
        self.instance_id = _uuid_urn(random_bytes(16)) if self.outbound else ""
        #: Outbound over UDP: STUN keep-alives on the SIP socket keep the NAT's mapping to the region open.
        self.keepalive: StunKeepAlive | None = None
        if self.outbound and config.transport == "udp":
            self.keepalive = StunKeepAlive(config.server_address, config.stun_keepalive_s, random_bytes,
                                           rto_s=config.timers.t1)
        #: The publication lifetime asked for: the configured one, or the server's Min-Expires after a 423.
        self._publish_expires = config.publish_expires_s
        #: When True, the "confirmed" PUBLISH of a new session goes out on the next :meth:`handle_timer` (due
        #: at once) instead of with the ACK: for drivers that hand the established event to the application
        #: before they run timers, so the player's server does not write that publication (SQLite) while the
        #: setup is still in flight. A session that ends first still publishes "confirmed", then "terminated".
        self.defer_confirmed_publish = False
        #: How long an invitation may wait for the application's answer before we send 180 Ringing (0: at
        #: once). An application that answers sooner sends its 200 alone: the servers on the way then relay
        #: one response instead of two, and the 200 does not queue behind the 180 (RFC 3261 13.3.1.1 makes
        #: the 180 optional: "if the UAS is not able to answer the invitation immediately").
        self.ringing_delay_s = 0.0
        #: Counters for monitoring and tests.
        self.stats: dict[str, int] = {"parse_errors": 0, "stray_responses": 0, "acks_sent": 0, "flow_failures": 0}
        #: The driver's NAT traversal (ICE) per call, or None: the channel goes to the c=/m= address as is.
        self.paths: PathProvider | None = None
        #: The TURN servers (with this login's credentials) the last REGISTER 200 OK named (``Relay`` headers).
        self.relays: tuple[TurnServer, ...] = ()

    @property
    def aor(self) -> str:
        """The player's address of record, ``sip:<username>@<domain>``."""
        return self.config.aor

    @property
    def registered(self) -> bool:
        """True while the server holds our binding (the last REGISTER succeeded)."""
        return self._registration.registered

    @property
    def logging_out(self) -> bool:
        """True from ``unregister`` until the next ``register``."""
        return self._registration.unregistering

    @property
    def contact(self) -> str:
        """Our Contact, ``<sip:<username>@host:port>`` of the SIP socket: where peers send in-dialog requests."""
        host, port = self.local_addr
        # ";ob" (RFC 5626 section 5.4): this UA is reached through its flow to the server; peers still send
        # in-dialog requests straight to host:port (the servers never Record-Route).
        ob = ";ob" if self.outbound else ""
        return f"<sip:{self.config.username}@{host_text(host)}:{port}{ob}>"

    @property
    def register_contact(self) -> str:
        """The Contact of our REGISTERs: over TLS with ``+sip.instance`` and ``reg-id`` (RFC 5626 section 4.2)."""
        if not self.outbound:
            return self.contact
        return f'{self.contact};+sip.instance="<{self.instance_id}>";reg-id=1'

    def register(self, now: float) -> None:
        """Log in: REGISTER our contact with the regional server (answers a digest challenge itself)."""
        reg = self._registration
        reg.unregistering = False
        self._timers.pop("logout", None)
        reg.expires = self.config.register_expires_s
        self._send_register(now, reg.expires, self._credentials.cached(401, "REGISTER", reg.registrar))

    def unregister(self, now: float) -> None:
        """Log out: REGISTER with ``Expires: 0``.

        The REGISTER leaves once every ``terminated`` PUBLISH in flight got its final answer (or gave up), at most
        :data:`LOGOUT_PUBLISH_WAIT_S` later: the server bills an ended session by its true end (``bye-local``,
        ``bye-remote``), not as a registration that ended under it (``reg-expired``)."""
        self._registration.unregistering = True
        self._timers.pop("register", None)
        if self._terminations_in_flight():
            self._timers["logout"] = now + LOGOUT_PUBLISH_WAIT_S
            return
        self._send_logout(now)

    def _send_logout(self, now: float) -> None:
        self._timers.pop("logout", None)
        self._send_register(now, 0, self._credentials.cached(401, "REGISTER", self._registration.registrar))

    def _terminations_in_flight(self) -> bool:
        """True while a ``terminated`` PUBLISH waits for its answer or for its next attempt."""
        if any(p.purpose == "publish" and p.publish_state is DialogState.TERMINATED and not p.settled
               for p in self._pending.values()):
            return True
        return any(p.publish_state is DialogState.TERMINATED for _, _, p in self._republish)

    def _logout_when_published(self, now: float) -> None:
        """Send the waiting logout once no ``terminated`` PUBLISH is in flight any more (or the wait is over)."""
        due = self._timers.get("logout")
        if due is not None and (due <= now or not self._terminations_in_flight()):
            self._send_logout(now)

    def end(self, call_id: str, now: float, *, reason: str | None = None, cause: int | None = None,
            peer_silent: bool = False) -> None:
        """Hang up an established session (BYE straight to the peer, with an optional Reason header).

        ``peer_silent``: it ends because the peer went silent (the game channel timed out). The player's server
        is then told the dialog ended by a timeout (RFC 4235 ``event="timeout"``), so the peer's region, which
        hears nothing more from a crashed game, can be told to release it (DESIGN section 10)."""
        call = self._calls.get(call_id)
        if call is None or call.state not in (CallState.CONFIRMED, CallState.ANSWERED):
            raise LocalProtocolError(f"no established session {call_id!r}")
        self._send_bye(call, now, reason=reason, cause=cause, peer_silent=peer_silent)
        self._emit(SessionEnded(call_id=call_id, reason=reason or "ended locally", by_peer=False))

    def is_outgoing(self, call_id: str) -> bool:
        """True when ``call_id`` is an invitation we sent (False for one we received, or an unknown one)."""
        call = self._calls.get(call_id)
        return call is not None and call.is_caller

    def session_state(self, call_id: str) -> CallState | None:
        """Where ``call_id`` stands, or None once it is forgotten (64*T1 after it ended) or was never known."""
        call = self._calls.get(call_id)
        return call.state if call else None

    # -- driving contract
    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one datagram received on the SIP socket."""
        if not data.strip(b"\r\n"):
            return  # keep-alive (RFC 5626 section 4.4.1)
        if data[0] < 4:  # STUN (RFC 7983): SIP starts with a letter
            self._keepalive_answer(data, addr, now)
            return
        if self.config.trace:
            trace_log.info("SIP <- %s:%d\n%s", addr[0], addr[1], data.decode("utf-8", "replace"))
        try:
            message = parse_message_untrusted(data)
        except RemoteProtocolError as exc:
            self.stats["parse_errors"] += 1
            log.debug("dropped unparseable datagram from %s: %s", addr, exc)
            return
        if isinstance(message, Response):
            self._receive_response(message, now)
            self._logout_when_published(now)
        else:
            self._receive_request(message, addr, now)

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Datagrams to send now, each with its destination, in the order they were produced."""
        # ACKs for 2xx have no transaction (RFC 3261 13.2.2.4): they sit in ``_out``, ahead of a BYE that follows
        out = self._out
        self._out = []
        out.extend(self._transactions.datagrams_to_send())
        if self.config.trace:
            for data, addr in out:
                trace_log.info("SIP -> %s:%d\n%s", addr[0], addr[1], data.decode("utf-8", "replace"))
        return out

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must run next (same clock as ``now``), or None."""
        deadlines = list(self._timers.values())
        heap = self._call_timers
        while heap:
            deadline, _, name, call = heap[0]
            if self._current(call, name, deadline):
                deadlines.append(deadline)
                break
            heapq.heappop(heap)  # overtaken by a later setting, cleared, or its call forgotten
        t = self._transactions.get_timer()
        if t is not None:
            deadlines.append(t)
        if self._republish:
            deadlines.append(self._republish[0][0])
        keepalive = self.keepalive.due() if self.keepalive is not None else None
        if keepalive is not None:
            deadlines.append(keepalive)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Run everything due at ``now``: retransmissions, timeouts, refreshes, the application's deadlines."""
        self._transactions.handle_timer(now)
        self._drain_transactions(now)
        if self._timers.get("register", float("inf")) <= now:
            del self._timers["register"]
            # credentials for the cached challenge at once (RFC 3261 22.3); a stale nonce costs one 401
            reg = self._registration
            self._send_register(now, reg.expires, self._credentials.cached(401, "REGISTER", reg.registrar))
        if self.keepalive is not None:
            self._keepalive_timer(self.keepalive, now)
        while self._republish and self._republish[0][0] <= now:
            self._send_republish(heapq.heappop(self._republish)[2], now)
        self._logout_when_published(now)
        for key in [k for k, t in self._timers.items() if k.startswith("watch ") and t <= now]:
            del self._timers[key]
            watch = self._watches.get(key[6:])
            if watch is not None and not watch.ended:
                self._send_subscribe(watch, now, watch.expires_s)
        heap = self._call_timers
        due: list[tuple[float, str, Call]] = []
        while heap and heap[0][0] <= now:
            deadline, _, name, call = heapq.heappop(heap)
            due.append((deadline, name, call))
        # deadlines set while these run wait for the next call, as the application's clock says
        for deadline, name, call in due:
            if self._current(call, name, deadline):
                del call.timers[name]
                self._call_timer(call, name, now)

    def _current(self, call: Call, name: str, deadline: float) -> bool:
        return call.timers.get(name) == deadline and self._calls.get(call.call_id) is call

    def _track(self, call: Call) -> None:
        """Make ``call`` the agent's, its deadlines counted by :meth:`get_timer` from now on."""
        self._calls[call.call_id] = call
        call.timers.bind(self._call_timers, call)

    def next_event(self) -> SessionEvent | None:
        """The oldest :mod:`gamesdk.events` value not yet taken, or None."""
        return self._events.popleft() if self._events else None

    # -- login (RFC 3261 section 10)
    def _send_register(
        self, now: float, expires: int, auth: tuple[str, str] | None = None, retries: int = 0
    ) -> None:
        req = self._registration.request(
            expires=expires,
            contact=self.register_contact,
            via=self.local_addr,
            branch=self._ids.branch(),
            credentials=auth,
            user_agent=self.config.user_agent,
        )
        self._start_client(req, now, Pending("register", None, retries))

    def _register_response(self, resp: Response, pending: Pending, now: float) -> None:
        if resp.status < 200:
            return
        reg = self._registration
        expires = 0 if reg.unregistering else reg.expires
        if resp.status in (401, 407) and pending.retries < MAX_AUTH_RETRIES:
            auth = self._credentials.answer(resp, "REGISTER", reg.registrar)
            if auth is None:
                self._registration_failed(resp.status, "no usable digest challenge")
                return
            self._send_register(now, expires, auth, retries=pending.retries + 1)
            return
        if resp.status == 423 and not reg.unregistering:
            # Interval Too Brief: ask again with the server's Min-Expires and keep it for the refreshes
            # (RFC 3261 10.2.8); only upwards, so a server that keeps answering 423 cannot loop us.
            minimum = _min_expires(resp)
            if minimum is not None and minimum > reg.expires:
                reg.expires = minimum
                auth = self._credentials.cached(401, "REGISTER", reg.registrar)
                self._send_register(now, reg.expires, auth, retries=pending.retries)
                return
        if 200 <= resp.status < 300:
            if reg.unregistering:
                reg.registered = False
                if self.keepalive is not None:
                    self.keepalive.stop()
                self._emit(Unregistered(aor=self.aor))
                return
            granted = reg.granted(resp, self.contact[1:-1])
            reg.registered = True
            if self.keepalive is not None:
                if "outbound" in {v.strip().lower() for v in resp.headers.values("Require")}:
                    self.keepalive.start(now, _flow_timer(resp, self.config.stun_keepalive_s))
                else:
                    self.keepalive.stop()  # RFC 5626: keep-alives only toward a registrar that applied outbound
            relays = (parse_relay_header(v, now) for v in resp.headers.get_all(RELAY_HEADER))
            self.relays = tuple(r for r in relays if r is not None)
            # refresh at half the granted time (RFC 3261 10.2.4 leaves the margin to the UA)
            self._timers["register"] = now + max(1.0, granted / 2)
            self._emit(Registered(aor=self.aor, expires_s=granted))
            return
        reason = resp.reason
        if resp.status in (401, 407):
            reason = "wrong user name or password"
        self._registration_failed(resp.status, reason)

    def _registration_failed(self, status: int, reason: str) -> None:
        self._registration.registered = False
        if self.keepalive is not None:
            self.keepalive.stop()
        self._emit(RegistrationFailed(status=status, reason=reason))

    # -- keep-alives (RFC 5626 section 4.4.2)
    def _keepalive_timer(self, keepalive: StunKeepAlive, now: float) -> None:
        due = keepalive.due()
        if due is None or due > now:
            return
        requests, failed = keepalive.poll(now)
        self._out.extend((data, keepalive.server) for data in requests)
        if failed and keepalive.answered == 0:
            # a registrar that never answered STUN on its SIP port (not this project's region): registering
            # again would not help, so keep-alives stop and the REGISTER refreshes are all that remains
            log.info("SIP flow keep-alive: the region never answers STUN; keep-alives off")
            keepalive.stop()
        elif failed:
            self._flow_failed(now, "the region did not answer the keep-alive")

    def _keepalive_answer(self, data: bytes, addr: Address, now: float) -> None:
        keepalive = self.keepalive
        if keepalive is None or addr != keepalive.server:
            self.stats["parse_errors"] += 1  # STUN from elsewhere on the SIP socket: not ours to answer
            return
        if keepalive.receive(data, now) is False:
            self._flow_failed(now, f"the NAT gave a new public address {keepalive.mapped}")

    def _flow_failed(self, now: float, why: str) -> None:
        """RFC 5626: a failed flow is replaced at once by registering again (the region learns the new
        mapping), instead of the region sending to a dead one until the next refresh."""
        reg = self._registration
        if not reg.registered or reg.unregistering:
            return
        log.info("SIP flow to the region failed (%s); registering again", why)
        self.stats["flow_failures"] += 1
        self._timers.pop("register", None)
        self._send_register(now, reg.expires, self._credentials.cached(401, "REGISTER", reg.registrar))

    # -- established sessions
    def _established(self, call: Call, now: float) -> None:
        assert call.agreement is not None
        params = call.channel_params or self._channel_params(call)
        if self.defer_confirmed_publish:
            # DESIGN section 4 asks for it after the ACK; the reservation is held since the INVITE already
            call.timers["publish"] = now
        else:
            self._publish(call, now, DialogState.CONFIRMED)
        call.timers["refresh"] = now + self.config.session_refresh_s
        self._emit(SessionEstablished(call_id=call.call_id, agreement=call.agreement, channel_params=params))

    def _channel_params(self, call: Call) -> ChannelParams:
        """The game channel's keying input, once both SDPs and both tags are known (DESIGN section 6)."""
        assert call.dialog is not None
        assert call.offer_desc is not None and call.offer_game is not None
        assert call.answer_desc is not None and call.answer_game is not None
        assert call.private_key is not None, "channel parameters are made once per call"
        private_key, call.private_key = call.private_key, None  # the params own the key from here on
        return channel_params(
            is_caller=call.is_caller,
            call_id=call.call_id,
            from_tag=call.local_tag if call.is_caller else call.dialog.remote_tag,
            to_tag=call.dialog.remote_tag if call.is_caller else call.local_tag,
            offer=(call.offer_desc, call.offer_game),
            answer=(call.answer_desc, call.answer_game),
            private_key=private_key,
        )

    def _send_bye(self, call: Call, now: float, *, reason: str | None, cause: int | None,
                  peer_silent: bool = False) -> None:
        assert call.dialog is not None
        why = Reason("SIP", cause, reason) if reason is not None or cause is not None else None
        req, call.dialog = build_bye(call.dialog, self._ids.branch(), why, extra=self._agent_header)
        call.state = CallState.ENDING
        call.timers.pop("refresh", None)
        self._start_client(req, now, Pending("bye", call.call_id), destination=next_hop(call.dialog))
        if peer_silent:
            self._publish(call, now, DialogState.TERMINATED, event="timeout", code=408)
        else:
            self._publish(call, now, DialogState.TERMINATED, event="local-bye", code=cause)

    @property
    def _agent_header(self) -> list[tuple[str, str]]:
        return [("User-Agent", self.config.user_agent)]

    def _peer_lost(self, call_id: str | None, now: float, reason: str) -> None:
        call = self._calls.get(call_id or "")
        if call is None or call.state is not CallState.CONFIRMED:
            return
        call.state = CallState.ENDED
        self._publish(call, now, DialogState.TERMINATED, event="timeout", code=408)
        # not a hang-up by the peer: it vanished (or forgot the dialog) and we end the session, as when the
        # channel reports Disconnected
        self._emit(SessionEnded(call_id=call.call_id, reason=reason, by_peer=False))
        self._finish(call, now)

    # -- dialog publication (DESIGN section 4)
    def _publish(
        self, call: Call, now: float, state: DialogState, *, event: str | None = None, code: int | None = None,
        refresh: bool = False,
    ) -> None:
        if refresh and call.publish_etag is None:
            return
        if state is DialogState.TERMINATED and call.publish_version == 0 and "publish" in call.timers:
            # ended before the deferred "confirmed" went out: publish it first, so the server sees the dialog's
            # whole life (and bills it) as before
            self._publish(call, now, DialogState.CONFIRMED)
        req = build_publish(
            call,
            state,
            aor=self.aor,
            via=self.local_addr,
            ids=self._ids,
            expires_s=self._publish_expires,
            refresh=refresh,
            event=event,
            code=code,
            credentials=self._credentials.cached(401, "PUBLISH", self.aor),
            user_agent=self.config.user_agent,
        )
        self._start_client(req, now, Pending("publish", call.call_id,
                                             publish_state=None if refresh else state))
        if state is DialogState.CONFIRMED:
            call.timers["publish"] = now + self.config.publish_refresh_s
        else:
            call.timers.pop("publish", None)

    def _publish_response(self, resp: Response, pending: Pending, now: float) -> None:
        if resp.status < 200 or pending.call_id is None:
            return
        call = self._calls.get(pending.call_id)
        if resp.status in (401, 407) and pending.retries < MAX_AUTH_RETRIES:
            sent = pending.request
            auth = self._credentials.answer(resp, "PUBLISH", sent.uri) if sent is not None else None
            if sent is not None and auth is not None:
                retry = resend_with(sent, auth, self._ids.branch())
                self._start_client(retry, now, Pending("publish", pending.call_id, pending.retries + 1,
                                                       publish_state=pending.publish_state,
                                                       attempt=pending.attempt))
            return
        if (resp.status >= 500 or resp.status == 408) and self._republish_later(pending, now, _retry_after(resp)):
            return
        if resp.status == 412 and pending.publish_state is DialogState.TERMINATED and pending.request is not None:
            # The entity-tag moved or was lost (a refresh in flight, a server restart): the end still counts, so
            # publish it afresh as an initial publication (RFC 3903 section 4.1).
            if pending.attempt + 1 < PUBLISH_ATTEMPTS:
                again = resend_with(pending.request, ("Event", "dialog"), self._ids.branch())
                again.headers.remove_first("SIP-If-Match")
                self._start_client(again, now, Pending("publish", pending.call_id, publish_state=pending.publish_state,
                                                       attempt=pending.attempt + 1))
            return
        if call is None:
            return
        if 200 <= resp.status < 300:
            self._reservations_confirmed(call, resp)
            etag = resp.headers.get("SIP-ETag")
            if etag:
                call.publish_etag = etag.strip()
            granted = _expires(resp)
            if granted is not None and granted < self._publish_expires and "publish" in call.timers:
                # the server granted less than we asked (RFC 3903 section 6, step 5): refresh in time for it
                # (a refresh period the application chose for what it asked stays its own business)
                refresh = min(self.config.publish_refresh_s, max(1.0, granted / 2))
                call.timers["publish"] = min(call.timers["publish"], now + refresh)
        elif resp.status == 423 and pending.request is not None:
            # Interval Too Brief: publish again with the server's Min-Expires, and ask for it from now on
            minimum = _min_expires(resp)
            if minimum is not None and minimum > self._publish_expires:
                self._publish_expires = minimum
                again = resend_with(pending.request, ("Expires", str(minimum)), self._ids.branch())
                self._start_client(again, now, Pending("publish", call.call_id, pending.retries))
        elif resp.status == 412:
            # the server lost our publication (a restart): publish the full state again at once, not at the next
            # refresh, or the server may release the reservation meanwhile (RFC 3903 section 4.1)
            call.publish_etag = None
            if call.state is CallState.CONFIRMED:
                self._publish(call, now, DialogState.CONFIRMED)
        else:
            log.info("PUBLISH for %s answered %s %s", pending.call_id, resp.status, resp.reason)

    # -- presence (RFC 6665 SUBSCRIBE/NOTIFY, RFC 3856)
    def watch(self, player: str, now: float) -> str:
        """Subscribe to ``player``'s presence (``"bob@na.gamesdk.test"``); returns its address of record.
        ``PresenceChanged`` events follow, or ``WatchFailed``."""
        aor = player if player.startswith(("sip:", "sips:")) else f"sip:{player}"
        if "@" not in aor:
            raise LocalProtocolError(f"watch() takes a player address like 'bob@na.gamesdk.test', got {player!r}")
        current = self._watches.get(aor)
        if current is None or current.ended:
            watch = Watch(player=aor, call_id=self._ids.call_id(), local_tag=self._ids.tag())
            self._watches[aor] = watch
            self._send_subscribe(watch, now, watch.expires_s)
        return aor

    def unwatch(self, player: str, now: float) -> None:
        """Stop watching ``player`` (SUBSCRIBE with Expires: 0); a last ``PresenceChanged(watching=False)``."""
        aor = player if player.startswith(("sip:", "sips:")) else f"sip:{player}"
        watch = self._watches.get(aor)
        if watch is None or watch.ended:
            return
        watch.ended = True
        self._timers.pop(f"watch {aor}", None)
        self._send_subscribe(watch, now, 0)

    def _send_subscribe(
        self, watch: Watch, now: float, expires: int, auth: tuple[str, str] | None = None, retries: int = 0
    ) -> None:
        req = build_subscribe(watch, aor=self.aor, contact=self.contact, via=self.local_addr, ids=self._ids,
                              expires_s=expires, credentials=auth, user_agent=self.config.user_agent)
        # within the subscription the notifier's Contact is the target (as the ACK goes player to player)
        self._start_client(req, now, Pending("subscribe", watch.player, retries), destination=watch.target)

    def _subscribe_response(self, resp: Response, pending: Pending, now: float) -> None:
        if resp.status < 200:
            return
        watch = self._watches.get(pending.call_id or "")
        sent = pending.request
        if watch is None or sent is None:
            return
        expires = _expires_of(sent)
        if resp.status in (401, 407) and pending.retries < MAX_AUTH_RETRIES:
            auth = self._credentials.answer(resp, "SUBSCRIBE", sent.uri)
            if auth is not None:
                self._send_subscribe(watch, now, expires, auth, pending.retries + 1)
                return
        if resp.status >= 300:
            self._watch_over(watch.player, resp.status, resp.reason)
            return
        if watch.remote_tag is None:
            watch.remote_tag = resp.to.tag
        self._watch_target(watch, resp)
        if expires == 0:
            return
        granted = _expires(resp) or expires
        self._timers[f"watch {watch.player}"] = now + max(1.0, 0.8 * granted)

    def _watch_target(self, watch: Watch, message: Request | Response) -> None:
        if watch.target is not None:
            return
        try:
            contacts = message.contacts
        except RemoteProtocolError:
            return
        if contacts and contacts[0].uri.host:
            uri = contacts[0].uri
            watch.target = (uri.host.strip("[]"), uri.port or 5060)
            watch.target_uri = f"sip:{host_text(watch.target[0])}:{watch.target[1]}"

    def _watch_over(self, player: str, status: int, reason: str) -> None:
        watch = self._watches.pop(player, None)
        self._timers.pop(f"watch {player}", None)
        if watch is not None and not watch.ended:
            self._emit(WatchFailed(player=player, status=status, reason=reason))

    def _incoming_notify(self, req: Request, now: float) -> Response:
        """A NOTIFY of one of our presence subscriptions: the answer to send, and the event it carries."""
        event = (req.headers.get("Event") or "").split(";")[0].strip().lower()
        if event != "presence":
            return response_for(req, 489, "Bad Event", extra=[("Allow-Events", "presence")])
        watch = next((w for w in self._watches.values() if w.call_id == req.call_id), None)
        if watch is None or req.to.tag != watch.local_tag:
            return response_for(req, 481, "Subscription does not exist")
        try:
            status = parse_presence_untrusted(req.body) if req.body else PresenceStatus.OFFLINE
        except RemoteProtocolError as exc:
            return response_for(req, 400, exc.message)
        if watch.remote_tag is None:
            watch.remote_tag = req.from_.tag
        self._watch_target(watch, req)
        state = (req.headers.get("Subscription-State") or "").split(";")[0].strip().lower()
        watching = state != "terminated"
        if not watching:
            self._watches.pop(watch.player, None)
            self._timers.pop(f"watch {watch.player}", None)
        self._emit(PresenceChanged(player=watch.player, status=status, watching=watching))
        return response_for(req, 200)

    def _reservations_confirmed(self, call: Call, resp: Response) -> None:
        agreement = call.agreement
        if agreement is None:
            return
        known = {r.region for r in agreement.reservations}
        new = tuple(r for r in parse_reservations(resp) if r.region not in known)
        if not new:
            return
        call.agreement = replace(agreement, reservations=agreement.reservations + new)
        self._emit(ReservationConfirmed(call_id=call.call_id, reservations=new, agreement=call.agreement))

    def _republish_later(self, pending: Pending, now: float, retry_after: float | None) -> bool:
        """Schedule a failed ``confirmed``/``terminated`` PUBLISH again (5xx, timeout, or a 412 for an end), with
        backoff, at most PUBLISH_ATTEMPTS times in all. A ``confirmed`` is dropped once its dialog is gone: its
        ``terminated`` follows. Returns True when it will be sent again."""
        state, sent = pending.publish_state, pending.request
        if state is None or sent is None or pending.attempt + 1 >= PUBLISH_ATTEMPTS:
            return False
        if state is DialogState.CONFIRMED:
            call = self._calls.get(pending.call_id or "")
            if call is None or call.state is not CallState.CONFIRMED:
                return False
        delay = retry_after if retry_after is not None else PUBLISH_RETRY_S * 2 ** pending.attempt
        self._republish_seq += 1
        heapq.heappush(self._republish, (now + min(delay, PUBLISH_RETRY_MAX_S), self._republish_seq,
                                         Pending("publish", pending.call_id, publish_state=state, request=sent,
                                                 attempt=pending.attempt + 1)))
        return True

    def _send_republish(self, pending: Pending, now: float) -> None:
        sent = pending.request
        assert sent is not None
        credentials = self._credentials.cached(401, "PUBLISH", self.aor)
        again = resend_with(sent, credentials or ("Event", "dialog"), self._ids.branch())
        self._start_client(again, now, pending)

    # -- plumbing
    def _over_flow(self, req: Request) -> Request:
        """A request to our server over the TLS flow says so in its Via (RFC 3261 18.1.1: sent-protocol TLS);
        over UDP (outbound with ICE too) the Via stays UDP."""
        if self.config.transport == "tls":
            via = req.headers.get("Via") or ""
            if via.startswith("SIP/2.0/UDP "):
                req.headers.set("Via", "SIP/2.0/TLS " + via[len("SIP/2.0/UDP "):])
        return req

    def _start_client(
        self, req: Request, now: float, pending: Pending, destination: Address | None = None
    ) -> None:
        if destination is None:
            self._over_flow(req)
        tx = ClientNonInviteTransaction(
            req, now, destination=destination or self.config.server_address, config=self.config.timers
        )
        self._transactions.add(tx)
        pending.request = req
        self._pending[tx.key] = pending

    def _receive_response(self, resp: Response, now: float) -> None:
        if self._transactions.receive_response(resp, now) is not None:
            self._drain_transactions(now)
            return
        # A 2xx retransmission after the INVITE transaction ended: re-send our ACK (RFC 3261 13.2.2.4).
        call = self._calls.get(resp.headers.get("Call-ID") or "")
        try:
            is_invite_2xx = 200 <= resp.status < 300 and resp.cseq.method == "INVITE"
        except RemoteProtocolError:
            is_invite_2xx = False
        if call is not None and call.ack is not None and is_invite_2xx:
            self._out.append(call.ack)
        else:
            self.stats["stray_responses"] += 1

    def _drain_transactions(self, now: float) -> None:
        while (event := self._transactions.next_event()) is not None:
            if isinstance(event, TransactionTerminated):
                self._pending.pop(event.key, None)
                continue
            pending = self._pending.get(event.key)
            if pending is not None:
                self._transaction_event(pending, event, now)

    def _transaction_event(self, pending: Pending, event: TransactionEvent, now: float) -> None:
        if isinstance(event, ResponseReceived):
            resp = event.response
            if resp.status >= 200:
                pending.settled = True
            if pending.purpose == "invite":
                call = self._calls.get(pending.call_id or "")
                if call is not None:
                    self._invite_response(call, resp, now)
            elif pending.purpose == "register":
                self._register_response(resp, pending, now)
            elif pending.purpose == "publish":
                self._publish_response(resp, pending, now)
            elif pending.purpose == "subscribe":
                self._subscribe_response(resp, pending, now)
            elif pending.purpose == "refresh":
                if resp.status in (404, 408, 481):
                    self._peer_lost(pending.call_id, now, f"peer answered {resp.status} {resp.reason}")
            elif pending.purpose == "bye" and resp.status >= 200:
                call = self._calls.get(pending.call_id or "")
                if call is not None:
                    self._finish(call, now)
            return
        if isinstance(event, (TransactionTimedOut, TransportFailed)):
            pending.settled = True
            why = "timed out" if isinstance(event, TransactionTimedOut) else event.reason
            if pending.purpose == "invite":
                call = self._calls.get(pending.call_id or "")
                if call is not None:
                    self._invite_timed_out(call, why, now)
            elif pending.purpose == "register":
                self._registration_failed(408, f"no response from the server ({why})")
                if not self._registration.unregistering:
                    self._timers["register"] = now + 5.0  # try again: the server may be restarting
            elif pending.purpose == "refresh":
                self._peer_lost(pending.call_id, now, "peer stopped answering")
            elif pending.purpose == "publish":
                self._republish_later(pending, now, None)
            elif pending.purpose == "subscribe":
                self._watch_over(pending.call_id or "", 408, f"no answer ({why})")
            elif pending.purpose == "bye":
                call = self._calls.get(pending.call_id or "")
                if call is not None:
                    self._finish(call, now)
            return
        if isinstance(event, AckTimedOut):
            call = self._calls.get(pending.call_id or "")
            if call is not None:
                self._ack_timed_out(call, now)

    def _call_timer(self, call: Call, name: str, now: float) -> None:
        if name in ("invite", "cancel", "answer", "ring"):
            if call.is_caller:
                self._caller_timer(call, name, now)
            else:
                self._callee_timer(call, name, now)
        elif name == "publish" and call.state is CallState.CONFIRMED:
            self._publish(call, now, DialogState.CONFIRMED, refresh=call.publish_etag is not None)
        elif name == "refresh" and call.state is CallState.CONFIRMED:
            assert call.dialog is not None
            req, call.dialog = build_in_dialog_request(
                call.dialog, "OPTIONS", branch=self._ids.branch(), extra=self._agent_header
            )
            self._start_client(req, now, Pending("refresh", call.call_id), destination=next_hop(call.dialog))
            call.timers["refresh"] = now + self.config.session_refresh_s
        elif name == "keys" and call.state is CallState.ANSWERED and call.channel_params is None:
            call.channel_params = self._channel_params(call)
        elif name == "forget":
            self._calls.pop(call.call_id, None)

    def _fail(self, call: Call, status: int, reason: str, by: str, now: float) -> None:
        if call.state is CallState.ENDED:
            return
        call.state = CallState.ENDED
        self._emit(SessionFailed(call_id=call.call_id, status=status, reason=reason, refused_by=by))
        self._finish(call, now)

    def _finish(self, call: Call, now: float) -> None:
        call.state = CallState.ENDED
        for name in ("invite", "cancel", "answer", "ring", "keys", "refresh", "publish"):
            call.timers.pop(name, None)
        # keep the call a while to re-ACK retransmitted 2xx and answer late requests (64*T1)
        call.timers["forget"] = now + 64 * self.config.timers.t1

    def _emit(self, event: SessionEvent) -> None:
        self._events.append(event)

    def _local_stream(
        self, call: Call, terms: SessionTerms, role: Role, offer: SessionDescription | None = None
    ) -> tuple[SessionDescription, GameMedia]:
        """Our side of the game stream: a fresh X25519 key pair (the private half kept on the call), a channel
        socket address, a session id, and the SDP offer or answer that carries them (DESIGN sections 3, 6)."""
        private, public = self._keypairs()
        call.private_key = PrivateKey(private)
        host, port = self._channel_addr(call.call_id)
        game = GameMedia(terms=terms, address=host, port=port, public_key=public, session_id=self._session_id())
        desc = game_to_sdp(
            game, username=self.config.username, sess_id=self._sdp_id(), sess_version=1, role=role, offer=offer
        )
        if self.paths is not None:
            ice = self.paths.local_ice(call.call_id)
            if ice is not None:
                desc = add_ice(desc, ice)
            if offer is not None:  # answering: the offer's candidates are known, checks may start
                self.paths.remote_ice(call.call_id, call.remote_ice, controlling=False)
        return desc, game

    def _session_id(self) -> int:
        return int.from_bytes(self._random(4), "big")

    def _sdp_id(self) -> int:
        return int.from_bytes(self._random(6), "big")

    # -- what the two roles add (uac.py: the invitations we send; uas.py: the requests we receive)
    def _invite_response(self, call: Call, resp: Response, now: float) -> None:
        raise NotImplementedError

    def _invite_timed_out(self, call: Call, why: str, now: float) -> None:
        raise NotImplementedError

    def _send_cancel(self, call: Call, now: float, outcome: tuple[int, str, str]) -> None:
        raise NotImplementedError

    def _caller_timer(self, call: Call, name: str, now: float) -> None:
        raise NotImplementedError

    def _receive_request(self, req: Request, addr: Address, now: float) -> None:
        raise NotImplementedError

    def _ack_timed_out(self, call: Call, now: float) -> None:
        raise NotImplementedError

    def _callee_timer(self, call: Call, name: str, now: float) -> None:
        raise NotImplementedError

    def _incoming_refer(self, req: Request, tx: ServerNonInviteTransaction, addr: Address, now: float) -> None:
        raise NotImplementedError  # referee.py: a REFER from our registrar (a web invite)


def _uuid_urn(raw: bytes) -> str:
    """A random (version 4) UUID URN from 16 bytes (RFC 4122 section 4.4), for ``+sip.instance``."""
    b = bytearray(raw)
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"urn:uuid:{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def next_hop(dialog: Dialog) -> Address:
    """Where a request in ``dialog`` goes: its first route, else the remote target (RFC 3261 12.2.1.1, 8.1.2)."""
    uri = dialog.route_set[0].uri if dialog.route_set else dialog.remote_target
    return (uri.host.strip("[]"), uri.port or 5060)


def _expires(resp: Response) -> int | None:
    try:
        return resp.expires
    except RemoteProtocolError:
        return None


def _min_expires(resp: Response) -> int | None:
    # the message's strict integer reading: a non-ASCII digit (str.isdigit accepts '²') is no value, not a crash
    try:
        return resp.min_expires
    except RemoteProtocolError:
        return None


def _flow_timer(resp: Response, configured: float) -> float:
    """The keep-alive interval: the region's ``Flow-Timer`` (RFC 5626, seconds) when it is shorter
    than ours, else ours; a malformed value is ignored."""
    value = (resp.headers.get("Flow-Timer") or "").strip()
    if value.isascii() and value.isdigit() and 0 < len(value) <= 6 and int(value) > 0:
        return min(configured, float(value))
    return configured


def _retry_after(resp: Response) -> float | None:
    """``Retry-After`` seconds (RFC 3261 20.33: delta-seconds, optional comment), or None."""
    value = (resp.headers.get("Retry-After") or "").split("(", 1)[0].split(";", 1)[0].strip()
    if value.isascii() and value.isdigit() and len(value) <= 5:
        return float(value)
    return None
def _expires_of(req: Request) -> int:
    try:
        value = req.expires
    except RemoteProtocolError:
        value = None
    return WATCH_EXPIRES_S if value is None else value
