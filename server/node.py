"""The regional server as one sans-IO object: datagrams and ``now`` in, datagrams out.

Layers in order (like ezk's endpoint layers): parse and sanity checks -> registrar (REGISTER) -> the server's
own UAS requests (OPTIONS to the server, PUBLISH to the policy hooks) -> proxy (everything else). The policy
hooks sit inside the proxy's INVITE and 2xx paths (see :mod:`server.hooks`). Before the parser, the relay path
(:meth:`RegionalServer._relayed_lazily`) takes what the proxy only relays or drops (provisional and non-INVITE
responses, ACKs, in-dialog requests of calls set up here): read from the head alone, forwarded spliced; whatever
it does not take goes through the layers above.

Driving contract (aioquic style)::

    out = node.handle_datagram(data, addr, now)   # -> list of (bytes, addr) to send
    when = node.get_timer()                       # earliest deadline or None
    out = node.handle_timer(now)                  # when it has passed

The node never raises on network input: a malformed request gets 400 with a reason phrase (or is dropped when not
even a request line and a Via can be read), an oversize one 513, an unknown method 501; every rejection is logged.
"""

from __future__ import annotations

import heapq
import ipaddress
import logging
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from gamesdk.address import Address
from gamesdk.errors import RemoteProtocolError
from gamesdk.ice.stun import binding_response, is_stun
from gamesdk.identity import IdentitySigner
from gamesdk.sip.dialog_info import DialogState, parse_dialog_info_untrusted
from gamesdk.sip.headers import CSeq, Via, split_header_values
from gamesdk.sip.ids import IdFactory
from gamesdk.sip.message import REASON_PHRASES, Request, Response, response_for
from gamesdk.sip.parser import parse_message_untrusted, validate_untrusted
from gamesdk.sip.pidf import PresenceStatus
from gamesdk.sip.transaction import TransactionState
from gamesdk.sip.uri import NameAddr, SipUri
from server.auth import Authenticated, FailureThrottle, LoginFlow
from server.config import PeerConfig, ServerConfig
from server.federation import FederationTable, timestamp_echo
from server.hooks import NullPolicy, PolicyHooks, PolicyQuery, QueryAnswer
from server.location import Binding, LocationService, is_ip_literal
from server.loglimit import clip
from server.peer_notice import PeerNotices
from server.presence import PresenceAgent
from server.proxy import ALLOW, ProxyCore, _has_tag, _server_key, mark_received
from server.random_pool import PooledIdFactory
from server.ratelimit import SourceRateLimiter
from server.refer import ReferAgent
from server.registrar import Registrar
from server.relay import relay_headers
from server.splice import read_ack, read_answer, read_call, read_head, read_invite, read_login, read_register
from server.tls_config import TRANSPORTS

__all__ = ["KNOWN_METHODS", "AccountLookup", "NodeStats", "RegionalServer"]

log = logging.getLogger(__name__)

#: States of a proxied request still waiting for its final response (RFC 3261 figures 7 and 8).
_AWAITING_FINAL = frozenset({TransactionState.TRYING, TransactionState.PROCEEDING})

Datagrams = list[tuple[bytes, Address]]

#: Methods this server knows (RFC 3261, 3262, 3265/6665, 3311, 3428, 3515, 3903, 6086): the ones its Allow header
#: lists. Others get 501.
KNOWN_METHODS = frozenset(ALLOW.split(", "))

#: How long answers to requests the server handles itself are kept to answer retransmissions (64 x T1).
_UAS_CACHE_S = 32.0


class FlowInfo(Protocol):
    """What the node asks the TLS driver (:class:`server.transport_tls.TlsTransport`)."""

    def came_over_flow(self, addr: Address) -> bool: ...

    def peer_of(self, addr: Address) -> PeerConfig | None: ...


class AccountLookup(Protocol):
    """What the node needs of the account store."""

    def ha1(self, name: str, algorithm: str) -> str | None: ...

    def exists(self, name: str) -> bool: ...


@dataclass(slots=True)
class NodeStats:
    datagrams_in: int = 0
    datagrams_out: int = 0
    requests: int = 0
    responses: int = 0
    malformed: int = 0
    oversize: int = 0
    dropped: int = 0
    relayed_to_peer: int = 0
    unknown_methods: int = 0
    internal_errors: int = 0
    stun_answered: int = 0
    stun_dropped: int = 0
    #: Policy queries answered (``answer_query``), and those answered with an error (service unreachable).
    policy_answers: int = 0
    policy_errors: int = 0
    refused_draining: int = 0
    #: Messages the relay path handled from their head alone, without a full parse (issue 16: relayed responses,
    #: ACKs relayed or dropped); every other message is parsed and validated in full.
    relayed_lazily: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    #: Final responses to INVITEs that passed through, by status (every hop's view of its calls' outcomes).
    invite_finals: dict[int, int] = field(default_factory=dict)


class RegionalServer:
    """One region's SIP server: registrar, location, federation, stateful proxy and the policy hooks."""

    def __init__(self, config: ServerConfig, accounts: AccountLookup, *, random_bytes: Callable[[int], bytes],
                 hooks: PolicyHooks | None = None, ids: IdFactory | None = None,
                 secrets: Callable[[str], bytes] | None = None) -> None:
        """``secrets(name)`` gives keys kept across restarts (the region database): "digest-nonce" and
        "branch"; without it each process makes its own."""
        self.config = config
        self.accounts = accounts
        self.ids: IdFactory = ids or PooledIdFactory(random_bytes, call_id_host=config.domain)
        self.hooks: PolicyHooks = hooks or NullPolicy()
        auth = config.auth
        limits = config.limits
        self._listens = {(a.host.lower().strip("[]"), a.port) for a in config.listens}
        self._listens.add((config.advertised[0].lower().strip("[]"), config.advertised[1]))
        self.throttle = FailureThrottle(slow_after=auth.slow_after_failures, block_after=auth.block_after_failures,
                                        window_s=auth.failure_window_s, delay_step_s=auth.delay_step_s,
                                        max_delay_s=auth.max_delay_s, block_s=auth.block_s)
        self.login = LoginFlow(auth.realm, auth.digest_algorithms, accounts, self.throttle,
                               nonce_lifetime_s=auth.nonce_lifetime_s, random_bytes=random_bytes, is_us=self.is_us,
                               nonce_secret=secrets("digest-nonce") if secrets else None)
        # What a source that has not authenticated may make us send (DESIGN section 10: no reflection).
        self.unverified = SourceRateLimiter(limits.unauthenticated_per_s, limits.unauthenticated_burst)
        self.location = LocationService(config.access_networks)
        host, port = config.advertised  # region.advertise when listening on a wildcard
        self.federation = FederationTable(config.peers, local_domain=config.domain, via_host=host, via_port=port,
                                          ids=self.ids, interval_s=config.options_interval_s)
        self.registrar = Registrar(config.domain, config.registrar, self.login, self.location, self.ids,
                                   is_us=self.is_us)
        self.registrar.ok_headers = self._login_headers
        self.proxy = ProxyCore(domain=config.domain, via_host=host, via_port=port, location=self.location,
                               user_exists=accounts.exists, login=self.login, federation=self.federation,
                               timers=config.timers, ids=self.ids, hooks=self.hooks, is_us=self.is_us,
                               secret=secrets("branch") if secrets else random_bytes(32),
                               max_transactions=limits.max_transactions)
        self.proxy.client_of = self.client_of
        #: Notices to peer regions about their players who vanished from a session (server/peer_notice.py).
        self.notices = PeerNotices(domain=config.domain, via=(host, port), ids=self.ids, t1=config.timers.t1_s,
                                   t2=config.timers.t2_s)
        #: Policy queries for the driver (shared with the proxy): see :meth:`take_queries`.
        self.queries: list[PolicyQuery[Any]] = self.proxy.queries
        # UAS requests (PUBLISH) waiting for the policy: their retransmissions are dropped meanwhile.
        self._parked: set[tuple[str, ...]] = set()
        self.max_message_bytes = config.limits.max_message_bytes
        #: The presence agent for our players (SUBSCRIBE/NOTIFY, server/presence.py).
        self.presence = PresenceAgent(domain=config.domain, via=(host, port), ids=self.ids,
                                      status_of=self._presence_of, t1=config.timers.t1_s)
        #: Players whose dialog publication says they are in a confirmed session (presence: playing).
        self._in_match: set[str] = set()
        #: Wall-clock time minus ``now``: the driver sets it (TURN credentials expire at a unix time, while
        #: ``now`` is the loop's monotonic clock).
        self.wall_clock_offset = 0.0
        self.stats = NodeStats()
        #: Relayed responses and ACKs read from their head alone and forwarded spliced (:meth:`_relayed_lazily`);
        #: False parses every message in full (the same datagrams out: tests compare the two ways).
        self.relay_path = True
        #: REGISTERs without credentials in the plain shape challenged from their bytes
        #: (:meth:`_challenged_plainly`); False takes every one through the full parse (the same datagrams out).
        self.challenge_path = True
        #: The 2xx of an INVITE in the plain shape read from its bytes (:meth:`_answered_plainly`); False parses
        #: every one in full (the same datagrams out).
        self.answer_path = True
        #: REFERs sent for the web site's invites, and their NOTIFY subscriptions (RFC 3515).
        self.refers = ReferAgent(domain=config.domain, via_host=host, via_port=port, ids=self.ids,
                                 t1=config.timers.t1_s, t2=config.timers.t2_s)
        # Answers of requests handled here (REGISTER, OPTIONS, PUBLISH) by transaction key, so a retransmission
        # gets the same answer instead of being processed twice (a repeated REGISTER would fail the CSeq check).
        self._uas_answers: dict[tuple[str, ...], bytes] = {}
        self._uas_expiry: deque[tuple[float, tuple[str, ...]]] = deque()
        #: The TLS flows (set by the driver when the region listens on tls:): which sources are flows, and
        #: which peer region a flow authenticated as.
        self.flows: FlowInfo | None = None
        # Answers held back by the authentication throttle: (when, seq, data, addr).
        self._delayed: list[tuple[float, int, bytes, Address]] = []
        #: The arrival time of the datagram being handled, when the driver knows it (OPTIONS only).
        self._received_at: float | None = None
        self._delayed_seq = 0
        #: Set by :meth:`drain`: new requests get 503 + Retry-After, transactions under way finish.
        self.draining = False
        self.drain_retry_after_s = 5
        #: While draining, new UDP requests (other than OPTIONS) go unanswered instead of 503: see :meth:`drain`.
        self.drain_quiet_udp = True

    # -- operations ------------------------------------------------------------------------------------------

    def drain(self, retry_after_s: int = 5, *, quiet_udp: bool = True) -> None:
        """Stop taking new work (before a shutdown or restart): retransmissions, in-dialog requests, ACK and
        CANCEL still pass; new requests are answered 503 with Retry-After, except, with ``quiet_udp``, new UDP
        requests other than OPTIONS, which get no answer: a UDP client retransmits them (T1, 2*T1, ...), so a
        restarted process on the same port serves them, where a 503 would have ended the call (SIPp and most
        user agents treat it as final). OPTIONS pings always get the 503, so health checks see the drain."""
        self.draining = True
        self.drain_retry_after_s = retry_after_s
        self.drain_quiet_udp = quiet_udp

    def client_of(self, request: Request, addr: Address) -> str:
        """The address failed logins are counted under: the source, or for a request from one of
        ``[auth] trusted_proxies`` the client it reports (its Via below the proxy's: ``received``, else the
        sent-by host), so one abuser behind an edge gets blocked, not the edge and everyone behind it."""
        if not self._trusted_proxy(addr[0]):
            return addr[0]
        try:
            vias = request.vias
        except RemoteProtocolError:
            return addr[0]
        if len(vias) < 2:
            return addr[0]
        below = vias[1]
        reported = below.param("received") or below.sent_by[0]
        return reported.strip("[]") if is_ip_literal(reported) else addr[0]

    def _trusted_proxy(self, host: str) -> bool:
        """One of ``[auth] trusted_proxies`` (an edge speaking for many players: not rate limited as one IP)."""
        trusted = self.config.auth.trusted_proxies
        if not trusted or not is_ip_literal(host):
            return False
        ip = ipaddress.ip_address(host)
        return any(ip in net for net in trusted)

    def pending_transactions(self) -> int:
        """Proxied requests still waiting for their final response (what a drain waits for)."""
        return sum(1 for tx in self.proxy.server_txs.values() if tx.state in _AWAITING_FINAL)

    def drain_pending(self) -> int:
        """What a drain waits for: proxied INVITEs and out-of-dialog requests still waiting for their final
        response. Requests inside a call (a BYE) are not waited for: the call's parties are saved, so the
        client's retransmission is relayed by the restarted process, and a callee that never answers one
        (a crashed player) must not hold the restart up for the whole drain timeout."""
        return sum(1 for tx in self.proxy.server_txs.values() if tx.state in _AWAITING_FINAL
                   and (tx.method == "INVITE"
                        or (tx.request is not None and not _has_tag(tx.request.headers.get("To") or ""))))

    def pending_by_method(self) -> dict[str, int]:
        """:meth:`pending_transactions` by method, for the drain's log lines."""
        counts: dict[str, int] = {}
        for tx in self.proxy.server_txs.values():
            if tx.state in _AWAITING_FINAL:
                counts[tx.method] = counts.get(tx.method, 0) + 1
        return counts

    def reload(self, config: ServerConfig) -> None:
        """Apply a reloaded region file to the running server: access networks (existing bindings are mapped
        again), peers, registrar and authentication limits, timers. What needs new sockets or another database
        (name, domain, listen, database, TLS) is refused by the caller before this (see
        :func:`server.config.reload_problem`). Sessions and registrations are kept."""
        config = replace(config, listen=self.config.listen, listen_more=self.config.listen_more)
        self.config = config
        self.location.set_networks(config.access_networks)
        self.federation.replace_peers(config.peers)
        self.federation.interval_s = config.options_interval_s
        self.registrar.config = config.registrar
        self.proxy.t = config.timers
        self.max_message_bytes = config.limits.max_message_bytes

    def _login_headers(self, player: str, now: float) -> list[tuple[str, str]]:
        """What the 200 of a login carries besides its bindings: time-limited TURN credentials for the region's
        coturn, when it has one."""
        relay = self.config.relay
        return [] if relay is None else relay_headers(relay, player, now + self.wall_clock_offset)

    def set_identity(self, signer: IdentitySigner | None) -> None:
        """Sign players' INVITEs and answers with this region's key (RFC 8224; see gamesdk.identity)."""
        self.proxy.identity = signer

    def is_us(self, uri: SipUri) -> bool:
        """Whether a SIP URI names this server: its domain, or a listen address (Kamailio's ``myself``)."""
        host = uri.host.lower()
        if host == self.config.domain:
            return True
        return (host.strip("[]"), uri.port or (5061 if uri.scheme == "sips" else 5060)) in self._listens

    @property
    def authenticator(self) -> LoginFlow:
        """The login flow (kept under its old name for tools that read its counters)."""
        return self.login

    def set_hooks(self, hooks: PolicyHooks) -> None:
        """Wire the policy component in (before traffic starts)."""
        self.hooks = hooks
        self.proxy.hooks = hooks

    # -- the driving contract ----------------------------------------------------------------------------------

    def take_queries(self) -> list[PolicyQuery[Any]]:
        """The policy queries emitted since the last call (see :mod:`server.hooks`): the driver asks the policy
        service for each and hands the answer to :meth:`answer_query`. Call after every datagram and timer."""
        taken = self.queries[:]
        self.queries.clear()
        return taken

    def answer_query(self, query: PolicyQuery[Any], answer: QueryAnswer, now: float) -> Datagrams:
        """The policy service's answer to ``query``: finishes the parked message; returns the datagrams to send."""
        out: Datagrams = []
        self.stats.policy_answers += 1
        if answer.error is not None:
            self.stats.policy_errors += 1
        try:
            verdict = query.finish(answer)
            if query.then is not None:
                query.then(verdict, now, out)
            if self.notices.outbox:
                out.extend(self.notices.take())
        except Exception:
            self.stats.internal_errors += 1
            log.exception("node: internal error finishing a policy %s query", query.purpose or "")
        self.stats.datagrams_out += len(out)
        return out

    def player_vanished(self, player: str, peer: str, call_id: str, player_tag: str, peer_tag: str,
                        now: float) -> None:
        """Our ``peer`` (AOR) lost ``player`` (AOR of another region) in dialog ``call_id``: tell that region (the
        policy hooks call this; see server/peer_notice.py). Nothing for a player of ours or an unknown domain."""
        domain = player.rpartition("@")[2].split(";", 1)[0].split(">", 1)[0].lower()
        region = self.federation.by_domain(domain)
        if domain == self.config.domain or region is None:
            return
        self.notices.player_vanished(region.address, player=player, call_id=call_id, local_tag=player_tag,
                                     remote_tag=peer_tag, peer=peer, now=now)

    def _bindings_removed(self, bindings: Sequence[Binding], now: float) -> None:
        query = self.hooks.bindings_removed(bindings, now)
        if query is not None:
            self.queries.append(query)

    def handle_datagram(self, data: bytes, addr: Address, now: float, *,
                        received_at: float | None = None) -> Datagrams:
        """Process one received datagram; returns the datagrams to send.

        ``received_at``: when it arrived, if the driver knows (the kernel's receive time, on ``now``'s clock; the
        driver asks for OPTIONS only): pings are timed to it, not to the moment they were read after others."""
        out: Datagrams = []
        self.stats.datagrams_in += 1
        self._received_at = received_at
        try:
            self._handle(data, addr, now, out)
            if self.notices.outbox:
                out.extend(self.notices.take())
        except Exception:
            self.stats.internal_errors += 1
            log.exception("node: internal error on a datagram from %s:%d", *addr)
            salvaged = _salvage_response(data, 500, "Server Internal Error")
            if salvaged is not None:
                out.append((salvaged, addr))
        self.stats.datagrams_out += len(out)
        return out

    def get_timer(self) -> float | None:
        """The earliest time :meth:`handle_timer` has work, or None."""
        # Called after every datagram by the driver: no temporary lists.
        best = self.proxy.get_timer()
        for when in (self.location.next_expiry(), self.federation.get_timer(), self.hooks.get_timer(),
                     self.notices.get_timer(),
                     self.refers.get_timer(), self.presence.get_timer(),
                     self._delayed[0][0] if self._delayed else None):
            if when is not None and (best is None or when < best):
                best = when
        return best

    def handle_timer(self, now: float) -> Datagrams:
        """Run every due timer; returns the datagrams to send."""
        out: Datagrams = []
        try:
            self.proxy.handle_timer(now, out)
            gone = self.location.expire(now)
            if gone:
                for binding in gone:
                    log.info("location: %s at %s expired", binding.aor, binding.contact)
                self._bindings_removed(gone, now)
                for aor in {b.aor for b in gone}:
                    self.presence.changed(aor, now, out)
            self.presence.handle_timer(now, out)
            out.extend(self.federation.handle_timer(now))
            self.hooks.handle_timer(now)
            out.extend(self.notices.handle_timer(now))
            self.refers.handle_timer(now, out)
            while self._delayed and self._delayed[0][0] <= now:
                _, _, data, addr = heapq.heappop(self._delayed)
                out.append((data, addr))
        except Exception:
            self.stats.internal_errors += 1
            log.exception("node: internal error in a timer")
        self.stats.datagrams_out += len(out)
        return out

    # -- dispatch --------------------------------------------------------------------------------------------

    def _handle(self, data: bytes, addr: Address, now: float, out: Datagrams) -> None:
        # A SIP message starts with a letter: STUN (first byte 0-3), a keep-alive (CR/LF) or anything else below
        # 14, and an oversize datagram, take _unusual's way; the plain paths come next, the full parse last. (The
        # rare cases in functions of their own: every datagram runs this one, and the less code it spans the
        # fewer instruction cache lines it misses; one byte compared instead of a strip through the interpreter.)
        if not data or data[0] < 14 or len(data) > self.max_message_bytes:
            self._unusual(data, addr, now, out)
            return
        start = data[:4]
        # A login's first REGISTER has no credentials, its second has: the challenge's reader refuses credentials
        # first thing (and a REGISTER it leaves without them is no login's reader's: that needs an Authorization
        # line), so the two are asked in turn. (Not a look for the Authorization line first: a bytes method
        # compiled is a call through the interpreter, ~1.6k instructions a REGISTER.)
        if start == b"REGI" and self.challenge_path and (
                self._challenged_plainly(data, addr, now, out)
                or self._read_plainly(read_login(data), addr, now, out, len(data))):
            return
        # A call's second INVITE has credentials, its first none: one look tells which reader may take it.
        if start == b"INVI" and self.challenge_path and (
                self._read_plainly(read_call(data), addr, now, out, len(data))
                if data.find(b"\r\nProxy-Authorization: ") > 0 else self._invite_challenged_plainly(data, addr, now, out)):
            return
        if start == b"ACK " and self.challenge_path and self.relay_path and self._ack_dropped_plainly(data, addr):
            return
        # (A response is told by its start before the set lookup, which hashes the 4 new bytes: most datagrams
        # that come this far are responses.)
        if self.relay_path and ((data[8:9] == b"1" or data.find(b" INVITE\r\n") < 0) if start == b"SIP/"
                                else start in _RELAYED_STARTS) and self._relayed_lazily(data, addr, now, out):
            return
        if start == b"SIP/" and data[8:9] == b"2" and self.answer_path and self._answered_plainly(data, addr, now, out):
            return
        self._parsed(data, addr, now, out)

    def _unusual(self, data: bytes, addr: Address, now: float, out: Datagrams) -> None:
        """A datagram that is empty, starts with a byte below 14 or is over the size limit: STUN, a keep-alive,
        a 513, or the full path (a message after leading CR/LFs)."""
        if data and data[0] < 4:
            # STUN shares the SIP port (RFC 7983: first byte 0-3; SIP starts with a letter or CR/LF), so a player
            # learns its server-reflexive address from the server it registers with and keeps the mapping open.
            answer = binding_response(data, addr)
            if answer is None:
                if is_stun(data):
                    self.stats.stun_dropped += 1  # indications (keep-alives), responses, other methods
                else:
                    self.stats.malformed += 1
            else:
                self.stats.stun_answered += 1
                out.append((answer, addr))
            return
        if len(data) > self.max_message_bytes:
            # The driver reads max_message_bytes + 1 so an oversize datagram shows up here, truncated.
            self.stats.oversize += 1
            log.warning("node: %d-byte datagram from %s:%d is over the %d-byte limit", len(data), addr[0], addr[1],
                        self.max_message_bytes)
            salvaged = _salvage_response(data, 513, "Message Too Large")
            if salvaged is not None:
                self.send_unverified(salvaged, addr, len(data), now, out)
            return
        if not data.strip(b"\r\n"):
            return  # keep-alive (RFC 5626 section 3.5.1)
        self._parsed(data, addr, now, out)

    def _parsed(self, data: bytes, addr: Address, now: float, out: Datagrams) -> None:
        """The full path: ``data`` parsed, checked and handled."""
        try:
            # Lazily: what the proxy only relays is checked as far as it reads it; the rest is validated in full.
            message = parse_message_untrusted(data, self.max_message_bytes, lazy=True)
            if not _relayed_as_is(message):
                validate_untrusted(message)
        except RemoteProtocolError as exc:
            self.stats.malformed += 1
            log.info("node: malformed datagram from %s:%d: %s", addr[0], addr[1], clip(exc.message))
            salvaged = _salvage_response(data, exc.status_hint, exc.message)
            if salvaged is not None:
                self.send_unverified(salvaged, addr, len(data), now, out)
            return
        if isinstance(message, Response):
            self.stats.responses += 1
            self._on_response(message, addr, now, out)
            return
        self._request_in(message, addr, now, out, len(data))

    def _request_in(self, request: Request, addr: Address, now: float, out: Datagrams, size: int) -> None:
        """A request parsed and checked (by the full path, or read as it would make it), counted and handled."""
        stats = self.stats
        stats.requests += 1
        method = request.method
        stats.by_method[method] = stats.by_method.get(method, 0) + 1
        try:
            self._on_request(request, addr, now, out, size)
        except RemoteProtocolError as exc:
            # A header the parser let through but a layer could not use (e.g. a bad Contact parameter).
            log.info("node: %s from %s:%d rejected: %s", method, addr[0], addr[1], clip(exc.message))
            if method != "ACK":
                self.send_unverified(response_for(request, exc.status_hint, _reason(exc.message),
                                                  to_tag=self.ids.tag()).to_bytes(), addr, size, now, out)

    def _read_plainly(self, request: Request | None, addr: Address, now: float, out: Datagrams, size: int) -> bool:
        """The login and call paths (issue 16): a request with credentials that a plain reader made from its bytes
        (:func:`server.splice.read_login` for a REGISTER, :func:`server.splice.read_call` for a call's INVITE),
        handled as the full path handles it from there on (the same Request, without parsing every header into
        objects). False, with nothing done, when the reader gave None (anything not of its shape)."""
        if request is None:
            return False
        self._request_in(request, addr, now, out, size)
        return True

    def _challenged_plainly(self, data: bytes, addr: Address, now: float, out: Datagrams) -> bool:
        """The challenge path (issue 16): a REGISTER in the plain shape :func:`server.splice.read_register` reads
        (no credentials) challenged from its bytes, without a Message: the same 401, sent the same way, as the
        full path's. False, with nothing done, for everything else (a retransmission of an answered one, a
        drain, a refused transport, a refusal before authentication): the full path decides those."""
        plain = read_register(data)
        if plain is None or self.draining or self._transport_refused(addr):
            return False
        via = plain.via
        host, port = via.sent_by
        key = (via.branch or "", host, str(port), "REGISTER")  # _server_key's (the shape has a z9hG4bK branch)
        if key in self._uas_answers or key in self._parked:
            return False
        answer = self.registrar.challenge_plain(plain, addr, now)
        if answer is None:
            return False
        stats = self.stats
        stats.requests += 1
        stats.by_method["REGISTER"] = stats.by_method.get("REGISTER", 0) + 1
        self._send_uas_bytes(addr, key, answer, False, 0.0, [], now, out, len(data))
        return True

    def _invite_challenged_plainly(self, data: bytes, addr: Address, now: float, out: Datagrams) -> bool:
        """The challenge path of an INVITE: a player's INVITE in the plain shape
        :func:`server.splice.read_invite` reads (no credentials) challenged from its bytes, without a Message
        (:meth:`ProxyCore.challenge_plain`). False, with nothing done, for everything else (a drain, a refused
        transport, a peer's request, a retransmission of a transaction held here)."""
        plain = read_invite(data)
        if (plain is None or self.draining or self._transport_refused(addr)
                or not self.proxy.challenge_plain(plain, addr, now, out, len(data), self.send_unverified)):
            return False
        stats = self.stats
        stats.requests += 1
        stats.by_method["INVITE"] = stats.by_method.get("INVITE", 0) + 1
        return True

    def _ack_dropped_plainly(self, data: bytes, addr: Address) -> bool:
        """The ACK of a stateless 407 in the plain shape :func:`server.splice.read_ack` reads, dropped as the
        relay path drops it (:meth:`ProxyCore.drop_plain_ack`), with the same counts. False, with nothing done,
        for everything else (the relay path's or the full path's)."""
        plain = read_ack(data)
        if plain is None or not self.proxy.drop_plain_ack(plain[0], plain[1], plain[2], addr):
            return False
        stats = self.stats
        stats.requests += 1
        stats.relayed_lazily += 1
        stats.by_method["ACK"] = stats.by_method.get("ACK", 0) + 1
        return True

    def _answered_plainly(self, data: bytes, addr: Address, now: float, out: Datagrams) -> bool:
        """The answer path (issue 16): a 2xx in the plain shape :func:`server.splice.read_answer` reads (an
        INVITE's, with the SDP answer), handled as the full path handles it from there on (the same Response,
        without parsing every header into objects). False, with nothing done, for everything else."""
        response = read_answer(data)
        if response is None:
            return False
        self.stats.responses += 1
        self._on_response(response, addr, now, out)
        return True

    def _relayed_lazily(self, data: bytes, addr: Address, now: float, out: Datagrams) -> bool:
        """The relay path (issue 16): a response to a request forwarded here (but an INVITE's final and what
        the server consumes) or an ACK, read as far as the proxy needs (:func:`server.splice.read_head`) and
        forwarded by splicing its bytes, or dropped, without a full parse. False, with nothing done, for
        everything else: the full path then parses, validates and handles it as before."""
        head = read_head(data)
        if head is None:
            return False
        stats = self.stats
        if head.status:
            if head.cseq.method in _CONSUMED_RESPONSES or not self.proxy.relay_response(head, now, out):
                return False
            stats.responses += 1
            stats.relayed_lazily += 1
            return True
        method = head.method
        if method == "ACK":
            if not self.proxy.relay_ack(head, addr, now, out):
                return False
        elif (method not in _RELAYED_METHODS or self.draining or self._transport_refused(addr)
              or not self.proxy.relay_request(head, addr, now, out)):
            return False
        stats.requests += 1
        stats.relayed_lazily += 1
        stats.by_method[method] = stats.by_method.get(method, 0) + 1
        return True

    def _on_response(self, response: Response, addr: Address, now: float, out: Datagrams) -> None:
        try:
            method = response.cseq.method
            if method == "OPTIONS" and self.federation.handle_response(response, now, received_at=self._received_at):
                return
            if method == "REFER" and self.refers.handle_response(response, addr, now):
                return
            if method == "NOTIFY" and self.presence.handle_response(response):
                return
            if method == "PUBLISH" and self.notices.handle_response(response):
                return
            if method == "INVITE" and response.status >= 200:
                self.stats.invite_finals[response.status] = self.stats.invite_finals.get(response.status, 0) + 1
            if self.proxy.handle_response(response, addr, now, out):
                return
            # A response with our Via on top and no transaction (e.g. the 200 of a BYE relayed statelessly
            # earlier, or a transaction already gone): forwarded along its Via (RFC 3261 section 16.7 step 1).
            if self.proxy.forward_stray(response, addr, out):
                return
            # SIPp as a callee answers every request of a call to the address it got the INVITE from (here),
            # even a BYE that came through the caller's server. A response whose top Via is a peer server's is
            # relayed to that peer unchanged, where it matches the transaction; anything else is dropped.
            sent_by = response.top_via.sent_by
            peer = self.federation.by_address(sent_by)
            if peer is not None and addr != peer.address:
                self.stats.relayed_to_peer += 1
                out.append((response.to_bytes(), peer.address))
                return
            self.stats.dropped += 1
            log.debug("node: stray %d response from %s:%d dropped", response.status, *addr)
        except RemoteProtocolError as exc:
            self.stats.dropped += 1
            log.info("node: response from %s:%d dropped: %s", addr[0], addr[1], exc.message)

    def transport_of(self, addr: Address) -> str:
        """``"tls"`` for a message that came over a TLS flow, else ``"udp"``."""
        flows = self.flows
        return "tls" if flows is not None and flows.came_over_flow(addr) else "udp"

    def _transport_refused(self, addr: Address) -> bool:
        """True when the region's [tls] player_transports excludes the transport a player's request came over."""
        allowed = self.config.tls.player_transports
        if len(allowed) == len(TRANSPORTS) or self.transport_of(addr) in allowed:
            return False
        return self.federation.authenticated_peer(addr) is None


    def send_unverified(self, data: bytes, addr: Address, request_size: int, now: float, out: Datagrams,
                        delay_s: float = 0.0) -> bool:
        """Send an answer to a source that has not authenticated: once (never retransmitted), only within its
        rate limit, and only when at most 3x the request's size (DESIGN section 10). False if not sent."""
        limited = not self._trusted_proxy(addr[0])
        if (len(data) > 3 * request_size or (limited and not self.unverified.allow(addr[0], now))
                or (delay_s > 0 and len(self._delayed) >= self.config.limits.max_transactions)):
            self.stats.dropped += 1
            log.info("node: answer of %d bytes to %s:%d (%d-byte request) not sent: %s", len(data), addr[0],
                     addr[1], request_size, "over 3x" if len(data) > 3 * request_size else "rate limit")
            return False
        if delay_s > 0:
            self._delayed_seq += 1
            heapq.heappush(self._delayed, (now + delay_s, self._delayed_seq, data, addr))
        else:
            out.append((data, addr))
        return True

    def _on_request(self, request: Request, addr: Address, now: float, out: Datagrams, size: int) -> None:
        method = request.method
        if method != "ACK" and self._transport_refused(addr):
            self.stats.dropped += 1
            log.info("node: %s from %s:%d over %s refused: players must use %s", method, addr[0], addr[1],
                     self.transport_of(addr), ", ".join(self.config.tls.player_transports))
            out.append((response_for(request, 403, f"Use {'/'.join(self.config.tls.player_transports).upper()}",
                                     to_tag=self.ids.tag()).to_bytes(), addr))
            return
        if self.draining and self._refuse_while_draining(request, addr):
            self.stats.refused_draining += 1
            if self.drain_quiet_udp and method != "OPTIONS" and self.transport_of(addr) == "udp":
                return  # retransmitted to whoever listens here next
            out.append((response_for(request, 503, "Restarting", to_tag=self.ids.tag(),
                                     extra=[("Retry-After", str(self.drain_retry_after_s))]).to_bytes(), addr))
            return
        if method not in KNOWN_METHODS:
            self.stats.unknown_methods += 1
            log.info("node: unknown method %r from %s:%d", clip(method, 32), *addr)
            self.send_unverified(response_for(request, 501, "Not Implemented", to_tag=self.ids.tag(),
                                              extra=[("Allow", ALLOW)]).to_bytes(), addr, size, now, out)
            return
        if method == "REGISTER":
            self._uas_request(request, addr, now, out, size)  # the registrar answers every REGISTER
            return
        ruri = request.request_uri
        for_us = self.proxy.is_us(ruri) if ruri.is_sip else False
        # OPTIONS for the server itself (no user part, or not one of our players): answered here, so pings from
        # peers, SIPp and sipsak work; OPTIONS for a player is proxied to the player like any request.
        options_for_us = method == "OPTIONS" and for_us and (
            not ruri.user or request.max_forwards == 0 or not self.accounts.exists(ruri.user))
        if method == "NOTIFY" and self.refers.owns(request):
            out.extend(self.refers.handle_notify(request, addr, now))
            return
        # the presence agent answers SUBSCRIBEs for its players' presence; other events go on to the player
        presence = method == "SUBSCRIBE" and for_us and (
            request.headers.get("Event") or "").split(";")[0].strip().lower() == "presence"
        if options_for_us or (method == "PUBLISH" and for_us) or presence:
            self._uas_request(request, addr, now, out, size)
            return
        self.proxy.handle_request(request, addr, now, out, size, self.send_unverified)

    def _refuse_while_draining(self, request: Request, addr: Address) -> bool:
        """New work only: not ACK/CANCEL, not in a dialog, not a retransmission of a transaction we hold, and
        not (with the quiet UDP drain) a player's INVITE or REGISTER without credentials: its answer is a
        stateless challenge (no transaction), and the client brings the credentials to whichever process listens
        then (the nonce key is shared), instead of retransmitting into the restart on the short timers of its
        first request."""
        method = request.method
        if method in ("ACK", "CANCEL") or _has_tag(request.headers.get("To") or ""):
            return False
        if (method in ("INVITE", "REGISTER") and self.drain_quiet_udp and self.transport_of(addr) == "udp"
                and self.federation.authenticated_peer(addr) is None
                and request.headers.get("Proxy-Authorization" if method == "INVITE" else "Authorization") is None):
            return False
        key = _server_key(request, method)
        return (key not in self.proxy.server_txs and key not in self.proxy.ended_server
                and key not in self._uas_answers)

    def _uas_request(self, request: Request, addr: Address, now: float, out: Datagrams, size: int) -> None:
        """Requests the server answers itself. Answers to authenticated requests are cached for retransmissions;
        challenges and refusals are sent statelessly, once, within the unverified-source limits."""
        key = _server_key(request, request.method)
        cached = self._uas_answers.get(key)
        if cached is not None:
            out.append((cached, addr))
            return
        if key in self._parked:
            return  # the policy is still deciding; the client retransmits and gets the answer then
        delay = 0.0
        method = request.method
        verified = True
        after: Datagrams = []  # NOTIFYs this request triggers, sent after its answer
        if method == "REGISTER":
            # The registrar writes its answer straight to bytes (marked for ``addr``): nothing to build here.
            result = self.registrar.handle(request, addr, now, client=self.client_of(request, addr))
            if result.removed:
                self._bindings_removed(result.removed, now)
            if result.status == 200 and result.user:
                self.presence.changed(f"sip:{result.user}@{self.config.domain}", now, after)
            self._send_uas_bytes(addr, key, result.data, result.user is not None, result.delay_s, after, now, out,
                                 size)
            return
        if method == "OPTIONS":
            # A ping: small, and as useful to peers and tools as to players; sent once, within the limits.
            verified = False
            response = response_for(request, 200, None, to_tag=self.ids.tag(), extra=[
                ("Allow", ALLOW),
                ("Accept", "application/sdp, application/dialog-info+xml"),
            ])
            stamp = request.headers.get("Timestamp")
            if stamp is not None:
                # RFC 3261 section 8.2.6.1: echoed with the time the ping spent here since it arrived, which the
                # pinging region takes off its round trip (our queue is not the path between the regions)
                arrived = self._received_at
                echo = timestamp_echo(stamp, 0.0 if arrived is None else now - arrived)
                if echo is not None:
                    response.headers.add("Timestamp", echo)
        elif method == "SUBSCRIBE":
            response = self._subscribe(request, addr, now, after)
            verified = response.status == 200  # challenges and refusals go out statelessly, within the limits
        else:
            asked, verified = self._publish(request, addr, now)
            if isinstance(asked, PolicyQuery):
                # The policy is a separate process: answered when it has applied (or failed to apply) the change.
                self._parked.add(key)

                def resume(answer: Response, at: float, later: Datagrams) -> None:
                    self._parked.discard(key)
                    more: Datagrams = []
                    if 200 <= answer.status < 300:
                        self._publication_seen(request, at, more)
                    self._send_uas_answer(request, addr, key, answer, True, 0.0, more, at, later, size)

                asked.then = resume
                self.queries.append(asked)
                return
            response = asked
            if 200 <= response.status < 300:
                self._publication_seen(request, now, after)
        self._send_uas_answer(request, addr, key, response, verified, delay, after, now, out, size)

    def _send_uas_answer(self, request: Request, addr: Address, key: tuple[str, ...], response: Response,
                         verified: bool, delay: float, after: Datagrams, now: float, out: Datagrams,
                         size: int) -> None:
        mark_received(response.headers, request.top_via, addr)
        self._send_uas_bytes(addr, key, response.to_bytes(), verified, delay, after, now, out, size)

    def _send_uas_bytes(self, addr: Address, key: tuple[str, ...], data: bytes, verified: bool, delay: float,
                        after: Datagrams, now: float, out: Datagrams, size: int) -> None:
        """Send an answer of the server's own: a verified one is kept for retransmissions of its request, an
        unverified one goes once, within the unverified-source limits (a configured peer's pings excepted)."""
        if not verified:
            if self.federation.authenticated_peer(addr) is not None:
                out.append((data, addr))  # a configured peer (its pings)
            else:
                self.send_unverified(data, addr, size, now, out, delay)
            return
        self._remember(key, data, now)
        if delay > 0:
            self._delayed_seq += 1
            heapq.heappush(self._delayed, (now + delay, self._delayed_seq, data, addr))
        else:
            out.append((data, addr))
        out.extend(after)

    def _publish(self, request: Request, addr: Address, now: float) -> tuple[Response | PolicyQuery[Response], bool]:
        peer = self.federation.authenticated_peer(addr)
        if peer is not None:
            # A peer region: it may only report that one of our players vanished from a session with one of its
            # players (server/peer_notice.py); the hooks check that the session is such a one.
            handler = getattr(self.hooks, "peer_publish_received", None)
            if handler is None:
                return response_for(request, 501, "Peer notices not served without a policy component",
                                    to_tag=self.ids.tag()), True
            answer: Response | PolicyQuery[Response] = handler(request, peer.domain, now)
            return answer, True
        # PUBLISH goes to our event state compositor, so we challenge as a UAS (401, RFC 3261 section 22.2).
        outcome = self.login.authenticate(request, self.client_of(request, addr), now, proxy=False)
        if not isinstance(outcome, Authenticated):
            return response_for(request, outcome.status, outcome.reason, to_tag=self.ids.tag(),
                                extra=outcome.headers), False
        user = outcome.user
        if request.request_uri.user not in (None, user):
            return response_for(request, 403, "May only publish for yourself", to_tag=self.ids.tag()), True
        return self.hooks.publish_received(request, user, addr, now), True

    def _presence_of(self, aor: str, now: float) -> PresenceStatus:
        if not self.location.lookup(aor, now):
            return PresenceStatus.OFFLINE
        return PresenceStatus.IN_MATCH if aor in self._in_match else PresenceStatus.ONLINE

    def _publication_seen(self, request: Request, now: float, out: Datagrams) -> None:
        """An accepted dialog publication: a confirmed dialog means the player is in a match (presence)."""
        if not request.body:
            return  # a refresh: nothing changed
        aor = request.request_uri.aor
        try:
            info = parse_dialog_info_untrusted(request.body)
        except RemoteProtocolError:
            return
        if any(d.state is DialogState.CONFIRMED for d in info.dialogs):
            self._in_match.add(aor)
        else:
            self._in_match.discard(aor)
        self.presence.changed(aor, now, out)

    def _subscribe(self, request: Request, addr: Address, now: float, out: Datagrams) -> Response:
        """SUBSCRIBE to a player's presence. Who may watch: see server/presence.py (logged-in players of this
        region, players of peered regions)."""
        if request.to.tag is not None:
            # a refresh or an unsubscribe within the subscription's dialog: the dialog identifies the watcher
            return self.presence.subscribe(request, "", now, out)
        ruri = request.request_uri
        if not ruri.user or not self.accounts.exists(ruri.user):
            return response_for(request, 404, "Not Found", to_tag=self.ids.tag())
        peer = self.federation.authenticated_peer(addr)
        if peer is not None:
            watcher = request.from_.uri.aor
            if request.from_.uri.host.lower() != peer.domain:
                return response_for(request, 403, "A peer region speaks for its own players only",
                                    to_tag=self.ids.tag())
            return self.presence.subscribe(request, watcher, now, out)
        outcome = self.login.authenticate(request, self.client_of(request, addr), now, proxy=False)
        if not isinstance(outcome, Authenticated):
            return response_for(request, outcome.status, outcome.reason, to_tag=self.ids.tag(), extra=outcome.headers)
        watcher = f"sip:{outcome.user}@{self.config.domain}"
        if not self.location.lookup(watcher, now):
            return response_for(request, 403, "Log in before watching other players", to_tag=self.ids.tag())
        return self.presence.subscribe(request, watcher, now, out)

    def _remember(self, key: tuple[str, ...], data: bytes, now: float) -> None:
        expiry = self._uas_expiry
        while expiry and (expiry[0][0] <= now or len(expiry) >= self.config.limits.max_transactions):
            _, old = expiry.popleft()
            self._uas_answers.pop(old, None)
        self._uas_answers[key] = data
        expiry.append((now + _UAS_CACHE_S, key))


# -- what is relayed without full validation ----------------------------------------------------------------

#: In-dialog requests the proxy only relays (and ACK): read as far as routing needs (DESIGN section 10).
_RELAYED_METHODS = frozenset({"ACK", "BYE", "INFO", "UPDATE", "PRACK"})
#: How the datagrams of the relay path start (:meth:`RegionalServer._relayed_lazily`; responses too).
_RELAYED_STARTS = frozenset({b"ACK ", b"BYE ", b"INFO", b"UPDA", b"PRAC"})
#: Responses the server itself consumes (pings, its REFERs and NOTIFYs), validated in full like requests for it.
_CONSUMED_RESPONSES = frozenset({"OPTIONS", "REFER", "NOTIFY", "SUBSCRIBE", "PUBLISH", "REGISTER", "MESSAGE"})


def _relayed_as_is(message: Request | Response) -> bool:
    """Whether a lazily parsed message stays lazily parsed: provisional responses and responses to relayed
    non-INVITE requests, ACKs and in-dialog requests in :data:`_RELAYED_METHODS`. Everything the server consumes
    (REGISTER, PUBLISH, OPTIONS, SUBSCRIBE/NOTIFY, requests that open a session, an INVITE's final response with
    the answer the policy reads) is validated in full, as before."""
    if isinstance(message, Response):
        method = message.cseq.method
        if method == "INVITE":
            return message.status < 200
        return method not in _CONSUMED_RESPONSES
    method = message.method
    if method not in _RELAYED_METHODS:
        return False
    return method == "ACK" or _has_tag(message.headers.get("To") or "")


# -- answering what does not parse -------------------------------------------------------------------------------

_REQUEST_LINE = re.compile(rb"^([A-Za-z0-9.!%*_+`'~-]{1,32}) +\S+ +SIP/\d+\.\d+\r?$")
_COPY = {b"via": "Via", b"v": "Via", b"from": "From", b"f": "From", b"to": "To", b"t": "To",
         b"call-id": "Call-ID", b"i": "Call-ID", b"cseq": "CSeq"}


def _reason(text: str) -> str:
    # A reason phrase is TEXT-UTF8 without CR/LF (RFC 3261 section 25.1); keep it short and printable.
    clean = "".join(c if c.isprintable() else " " for c in text)
    return clean[:100] or "Bad Request"


def _usable(name: str, text: str) -> bool:
    """Whether a header value copied into an error response would parse."""
    try:
        if name == "Via":
            for value in split_header_values(text):
                Via.parse(value)
        elif name in ("From", "To"):
            NameAddr.parse(text)
        elif name == "CSeq":
            CSeq.parse(text)
        elif name == "Call-ID":
            return " " not in text and "\t" not in text
    except RemoteProtocolError:
        return False
    return True


def _salvage_response(data: bytes, status: int, reason: str) -> bytes | None:
    """An error response built from the raw header lines of a request we could not parse.

    Needs a request line (not a response, not an ACK, which is never answered) and at least one Via; else the
    datagram is dropped (RFC 3261 section 18.2.1 cannot answer without a Via).
    """
    head = data.lstrip(b"\r\n").split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\n")
    if len(lines) < 2:
        return None
    match = _REQUEST_LINE.match(lines[0])
    if match is None or match.group(1).upper() == b"ACK":
        return None
    complete = lines[1:] if b"\r\n\r\n" in data or len(lines) < 3 else lines[1:-1]  # a cut last line is unusable
    copied: list[str] = []
    for raw in complete:
        name, sep, value = raw.partition(b":")
        if not sep:
            continue
        canonical = _COPY.get(name.strip().lower())
        if canonical is None:
            continue
        try:
            text = value.strip().decode("utf-8")
        except UnicodeDecodeError:
            continue
        if not text or any(c in text for c in "\r\n\x00") or not _usable(canonical, text):
            continue
        if canonical == "To" and ";tag=" not in text.lower():
            text += ";tag=err"
        copied.append(f"{canonical}: {text}")
    # Every response needs these (RFC 3261 section 8.2.6.2); without them the answer would itself be malformed.
    names = [line.split(":", 1)[0] for line in copied]
    if names.count("CSeq") != 1:
        # An unusable CSeq (often the very error being reported): the answer carries "0 METHOD" so it stays
        # well-formed; the client cannot match it to a transaction, but tools and logs see the 400 and why.
        copied = [line for line in copied if not line.startswith("CSeq:")]
        copied.append(f"CSeq: 0 {match.group(1).decode('ascii')}")
        names = [line.split(":", 1)[0] for line in copied]
    if "Via" not in names or any(names.count(n) != 1 for n in ("From", "To", "Call-ID")):
        return None
    phrase = _reason(reason) if reason else REASON_PHRASES.get(status, "Error")
    lines_out = [f"SIP/2.0 {status} {phrase}", *copied, "Content-Length: 0", "", ""]
    return "\r\n".join(lines_out).encode("utf-8")
