"""Stateful proxy (RFC 3261 section 16, transactions per RFC 6026). Pure: messages and ``now`` in, datagrams out.

Rules this proxy keeps, and why:

- It never adds Record-Route and never changes a body (section 16.6 step 1), so the ACK for a 2xx and every
  later in-dialog request go straight from player to player (DESIGN section 2). In-dialog requests that reach it
  anyway (SIPp sends everything to its outbound proxy) are forwarded by Request-URI; the ACK for a 2xx
  statelessly (section 16.11), like Kamailio.
- INVITEs (and other out-of-dialog requests) from players are authenticated with 407 before anything is
  forwarded; requests from configured peers are accepted as forwarded (federation trusts its peers).
- Validation follows section 16.3: URI scheme (416), Max-Forwards (483), loop detection (482), Proxy-Require (420).
- 100 Trying goes out at once for an INVITE (section 16.2). CANCEL is answered 200 and sent on once a
  provisional response has arrived (section 9.1).
- Responses from downstream, the proxy's own answers and the transaction timers live in
  :mod:`server.proxy_responses` (the base class :class:`~server.proxy_responses.TransactionSide`).
- Responses are sent back to the address the request came from (symmetric routing, RFC 3581), which works for
  SIPp, our SDK and players behind NATs alike; ``received``/``rport`` are added to the top Via of forwarded
  requests and of the server's own answers (:func:`mark_received`).
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol, cast

from gamesdk.address import Address
from gamesdk.errors import RemoteProtocolError
from gamesdk.sip._grammar import find_param
from gamesdk.sip.digest import parse_auth_params_untrusted
from gamesdk.sip.headers import Via
from gamesdk.sip.ids import BRANCH_MAGIC_COOKIE, IdFactory
from gamesdk.sip.message import Headers, Request, Response
from gamesdk.sip.transaction import TimerHeap
from gamesdk.sip.transaction_client import ClientNonInviteTransaction
from gamesdk.sip.uri import SipUri, plain_name_addr_host_port
from server.auth import Challenge, LoginFlow, answer_bytes, answer_bytes_direct
from server.config import TimerSettings
from server.federation import FederationTable
from server.hooks import CallInfo, InviteVerdict, NullPolicy, PolicyHooks, PolicyQuery
from server.location import AccessNetworkMap, Binding, is_ip_literal
from server.loglimit import clip
from server.proxy_responses import (  # the states and timers as globals: see there
    _CALLING,
    _COMPLETED,
    _CONFIRMED,
    _PROCEEDING,
    _TIMER_A,
    _TIMER_B,
    _TIMER_E,
    _TIMER_F,
    _TIMER_G,
    _TIMER_H,
    _TIMER_I,
    _TRYING,
    ENDED_CONFIRMED,
    ClientTx,
    EndedClient,
    EndedServer,
    Out,
    ProxyStats,
    ServerTx,
    TransactionSide,
    mark_received,
    marked_via,
    trying_bytes,
)
from server.splice import CALL_SPANS, Head, PlainInvite, forward_request, request_uri, spliced

__all__ = ["ProxyCore", "ProxyStats", "Target", "mark_received"]


log = logging.getLogger(__name__)

#: How long in-dialog requests of a call set up here are relayed (a long game; the SDK never needs it).
DIALOG_RELAY_S: Final = 4 * 3600.0
#: At most this many such calls are remembered (the oldest are forgotten first).
MAX_RELAYED_DIALOGS: Final = 100_000

#: At most this many in-dialog Request-URIs resolved to an address are remembered, each at most this long.
_DIRECT_MAX: Final = 4096
_DIRECT_MAX_LEN: Final = 512

#: Sends an answer to a source that has not authenticated (the node's rate limit and 3x rule):
#: (data, addr, request size, now, out, delay) -> sent.
Unverified = Callable[[bytes, Address, int, float, Out, float], bool]


# DialogParties, Target and _Plan: their __init__s written out (the same parameters): the compiled build runs a
# dataclass's generated one interpreted, where a written one stores the fields natively (every call makes them).
@dataclass(slots=True, init=False)
class DialogParties:
    """A call this server set up: the addresses of its two sides (where each sends from and is reached at).

    The sides are tuples (one or two addresses each), not sets: a tuple of strings and numbers is untracked by the
    cyclic collector the first time a collection examines it, a set never is, and up to 100,000 calls are kept
    for hours (:data:`MAX_RELAYED_DIALOGS`), which every full collection would walk again."""

    caller: tuple[Address, ...]
    callee: tuple[Address, ...]
    expires_at: float

    def __init__(self, caller: tuple[Address, ...], callee: tuple[Address, ...], expires_at: float) -> None:
        self.caller = caller
        self.callee = callee
        self.expires_at = expires_at

    def allows(self, source: Address, dest: Address) -> bool:
        """In-dialog traffic only between the two parties, in either direction."""
        return (source in self.caller and dest in self.callee) or (source in self.callee and dest in self.caller)

#: Header lines a request from a player authenticated here loses when forwarded (server.splice names): the
#: credentials for our realm (section 22.3), and for its INVITE an Identity of its own making (RFC 8224).
_CREDENTIALS: Final = (b"proxy-authorization",)
_CREDENTIALS_AND_IDENTITY: Final = (b"proxy-authorization", b"identity", b"y")

#: Methods that never get a 407 (RFC 3261 section 22.1: ACK and CANCEL cannot be challenged).
_NEVER_CHALLENGED = frozenset({"ACK", "CANCEL"})
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, PUBLISH, UPDATE, INFO, PRACK, MESSAGE, NOTIFY, SUBSCRIBE, REFER"


@dataclass(slots=True, eq=False, init=False)
class Target:
    """Where a request goes: the new Request-URI text and the next hop's address."""

    uri: str
    dest: Address
    #: The callee is registered here (the location service found it).
    local: bool = False
    access_network: str | None = None
    peer_domain: str | None = None
    #: Route header values to put on the request (the registered Path of the player, RFC 3327).
    routes: tuple[str, ...] = ()

    def __init__(self, uri: str, dest: Address, local: bool = False, access_network: str | None = None,
                 peer_domain: str | None = None, routes: tuple[str, ...] = ()) -> None:
        self.uri = uri
        self.dest = dest
        self.local = local
        self.access_network = access_network
        self.peer_domain = peer_domain
        self.routes = routes


@dataclass(slots=True, eq=False, init=False)
class _Plan:
    """What :meth:`ProxyCore._admit` decided, for :meth:`ProxyCore._route_new`."""

    routes: list[str]
    route_popped: bool
    #: Section 16.6 step 8's hash of the request, or "" when not computed yet (only a looped request needs it here).
    loop_hash: str
    max_forwards: int | None
    in_dialog: bool
    caller_local: bool
    from_peer: bool
    target: Target | None

    def __init__(self, routes: list[str], route_popped: bool, loop_hash: str, max_forwards: int | None,
                 in_dialog: bool, caller_local: bool, from_peer: bool, target: Target | None) -> None:
        self.routes = routes
        self.route_popped = route_popped
        self.loop_hash = loop_hash
        self.max_forwards = max_forwards
        self.in_dialog = in_dialog
        self.caller_local = caller_local
        self.from_peer = from_peer
        self.target = target


class _Reject(Exception):
    """Internal: answer the request with this status (never escapes the proxy)."""

    def __init__(self, status: int, reason: str | None = None, extra: tuple[tuple[str, str], ...] = (),
                 delay_s: float = 0.0) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.extra = extra
        self.delay_s = delay_s


def _verdict_headers(verdict: InviteVerdict) -> tuple[tuple[str, str], ...]:
    """The headers a passed INVITE gets; raises :class:`_Reject` for a refusal."""
    if not verdict.ok:
        extra: tuple[tuple[str, str], ...] = (("Warning", verdict.warning),) if verdict.warning else ()
        if verdict.retry_after is not None:
            extra = (*extra, ("Retry-After", str(verdict.retry_after)))
        raise _Reject(verdict.status, verdict.reason, extra)
    return verdict.headers


def _contact_addr(uri: SipUri | None) -> Address | None:
    if uri is None or not is_ip_literal(uri.host):
        return None
    return (uri.host.strip("[]"), uri.port or 5060)


#: First Contact values of the everyday shape already read, to their address: a player's Contact is the same in
#: each of its calls (its INVITE's or its 2xx's), and a hit saves the expression (~20k instructions). Bounded in
#: entries and in the length of what it keeps (values come from the network).
_CONTACT_ADDRS: Final[dict[str, Address | None]] = {}
_CONTACT_ADDRS_MAX: Final = 4096
_CONTACT_MAX_LEN: Final = 512
#: What ``_CONTACT_ADDRS.get`` gives for a value not read yet: no address has port -1. Compared by equality, not
#: identity: the compiled build passes tuples as values, so the one it gets back is not this object.
_NOT_READ: Final[Address] = ("", -1)


def first_contact_addr(message: Request | Response) -> Address | None:
    """The address of the first Contact of ``message`` when it is an IP (None when it is a name, there is none, or
    the Contacts do not parse): :func:`first_contact_addr_generally`, read for the usual single Contact line of
    the everyday shape by :func:`~gamesdk.sip.uri.plain_name_addr_host_port` (the expression ``NameAddr.parse``
    reads it with) without building the NameAddr, and remembered."""
    values = message.headers.get_all("Contact")
    if len(values) != 1:
        return first_contact_addr_generally(message)
    value = values[0]
    known = _CONTACT_ADDRS.get(value, _NOT_READ)
    if known != _NOT_READ:
        return known
    host_port = plain_name_addr_host_port(value) if "," not in value else None
    if host_port is None:
        return first_contact_addr_generally(message)
    host, port = host_port
    addr = (host.strip("[]"), port or 5060) if is_ip_literal(host) else None
    if len(value) <= _CONTACT_MAX_LEN:
        if len(_CONTACT_ADDRS) >= _CONTACT_ADDRS_MAX:
            _CONTACT_ADDRS.clear()
        _CONTACT_ADDRS[value] = addr
    return addr


def first_contact_addr_generally(message: Request | Response) -> Address | None:
    """:func:`first_contact_addr` from the parsed Contacts, for every shape."""
    try:
        contacts = message.contacts
    except RemoteProtocolError:
        return None
    return _contact_addr(contacts[0].uri) if contacts else None


def _answer_again(ended: EndedServer, source: Address, out: Out) -> None:
    """A retransmitted request of an ended server transaction: its final again, to the sender it came from (a
    Confirmed or Accepted one has none to send)."""
    if ended[4] is not None and source == (ended[2], ended[3]):
        out.append((ended[4], source))


def _party_of(source: Address, contact: Address | None) -> tuple[Address, ...]:
    """A dialog party's addresses: where it sends from and, when another, its Contact's."""
    return (source,) if contact is None or contact == source else tuple({source, contact})


#: BLAKE2s of 9 bytes, nothing hashed yet: each stateless ACK's branch hashes a copy of it.
_ACK_BRANCH_HASH: Final = hashlib.blake2s(digest_size=9)


def _stateless_ack_branch(incoming: str) -> str:
    """The branch a 2xx's ACK is forwarded with, statelessly: a hash of its incoming branch, so a retransmitted ACK
    gets the same one (section 16.11)."""
    mac = _ACK_BRANCH_HASH.copy()  # (a copy of a state made once: the constructor parses its keywords each time)
    mac.update(incoming.encode())
    return BRANCH_MAGIC_COOKIE + "s" + mac.hexdigest()


def _has_tag(to_value: str) -> bool:
    """Whether a To header value carries a tag (an in-dialog request), without parsing the whole name-addr.

    Parameters after ``>`` belong to the header; without ``<>`` every parameter does (RFC 3261 section 20.10).
    """
    tail = to_value[to_value.rfind(">") + 1:] if ">" in to_value else to_value
    # ";tag=" as written (nearly always) is found as it is: taking out blanks and lowering the case keeps it.
    return ";tag=" in tail or ";tag=" in tail.replace(" ", "").replace("\t", "").lower()


def _server_key(request: Request, method: str) -> tuple[str, ...]:
    """Transaction key of a request (RFC 3261 section 17.2.3); ACK and CANCEL pass "INVITE" to find theirs."""
    via = request.top_via
    branch = via.branch
    if branch and branch.startswith(BRANCH_MAGIC_COOKIE):
        host, port = via.sent_by
        return (branch, host, str(port), method)
    # RFC 2543 peers: match on the fields section 17.2.3 lists for them.
    return ("2543", request.call_id, str(request.cseq.seq), request.from_.tag or "", str(via), method)


def _loop_hash_of(uri: str, from_: str | None, to: str | None, call_id: str, cseq: str | None) -> str:
    # printf-style: the same text as the format spec "012x", which costs twice as much to parse and apply.
    return "%012x" % (hash((uri, from_, to, call_id, cseq)) & 0xFFFFFFFFFFFF)


class Locations(Protocol):
    """What the proxy reads of the location service (server/location.py's LocationService). A protocol rather than
    the class, so the compiled build's ProxyCore takes a stand-in that wraps the service (tests count its
    lookups that way: a compiled class takes no patch of its methods)."""

    @property
    def networks(self) -> AccessNetworkMap: ...

    def lookup(self, aor: str, now: float) -> list[Binding]: ...

    def remove_all(self, aor: str) -> list[Binding]: ...


class ProxyCore(TransactionSide):
    """The stateful proxy of one region."""

    def __init__(self, *, domain: str, via_host: str, via_port: int, location: Locations,
                 user_exists: Callable[[str], bool], login: LoginFlow, federation: FederationTable,
                 timers: TimerSettings, ids: IdFactory, hooks: PolicyHooks | None = None,
                 is_us: Callable[[SipUri], bool] | None = None, secret: bytes = b"",
                 max_transactions: int = 100_000) -> None:
        self.domain = domain
        self.via_host = via_host
        self.via_port = via_port
        self.identity = None
        self.location = location
        self.user_exists = user_exists
        self.login = login
        self._is_us = is_us
        self.max_transactions = max_transactions
        # Key of the MAC in our branches: only this process can make a branch that stray-response forwarding
        # accepts, and each branch is bound to the address the response goes back to. Keyed BLAKE2s (a MAC by
        # design, RFC 7693 section 2.9) rather than HMAC-SHA-256: a third of the instructions per branch. The key is
        # the secret's SHA-256 (BLAKE2s takes at most 32 bytes); each mark starts from a copy of the keyed state.
        self._branch_mac = hashlib.blake2s(key=hashlib.sha256(secret or ids.tag().encode()).digest(),
                                           digest_size=8)
        self.federation = federation
        self.t = timers
        self.ids = ids
        self.hooks: PolicyHooks = hooks if hooks is not None else NullPolicy()
        self.server_txs: dict[tuple[str, ...], ServerTx] = {}
        self.client_txs: dict[tuple[str, str], ClientTx] = {}
        self.cancels: dict[str, ClientNonInviteTransaction] = {}
        self.timers: TimerHeap[ServerTx | ClientTx | ClientNonInviteTransaction] = TimerHeap()
        self.ended_server: dict[tuple[str, ...], EndedServer] = {}
        self.ended_client: dict[tuple[str, str], EndedClient] = {}
        self._ended_queues: dict[float, deque[tuple[str, ...]]] = {}
        self._ended_heap: list[tuple[float, tuple[str, ...]]] = []
        self.stats = ProxyStats()
        self._our_hosts = {domain, via_host.lower(), f"{via_host.lower()}:{via_port}"}
        self._via_prefix = f"SIP/2.0/UDP {via_host}:{via_port};branch=" if via_host == via_host.lower() else ""
        # Branches we create: magic cookie + our instance + counter. The instance part keeps them unique
        # across restarts; the loop hash is put in front so section 16.3 step 4 can recognise our own Via.
        self._instance = ids.tag()[:8]
        self._counter = 0
        self._timeout_64t1 = 64 * timers.t1_s
        # Calls set up through here (Call-ID -> their two parties): in-dialog requests that reach us anyway (SIPp
        # sends them to its proxy) are relayed only within them. Least recently set up first, capped.
        self._dialogs: OrderedDict[str, DialogParties] = OrderedDict()
        # In-dialog Request-URIs already resolved to a party's address (an IP host, not us): the URI's text to its
        # lower-case host and that address. Each in-dialog request of a call names the same Contact (the ACK and
        # the BYE), and a player's Contact is the same in each of its calls, so a hit skips the URI's checks
        # (about 13k instructions a request). Whether a URI names us is fixed for the process (a reload keeps
        # the domain and the listen addresses); whether its host is a peer's domain is not, and is asked on
        # every hit. Bounded (URIs come from the network).
        self._direct_targets: dict[str, tuple[str, Address]] = {}
        #: The address failed logins count under (the node sets it: trusted edge proxies report their clients').
        self.client_of: Callable[[Request, Address], str] = lambda request, source: source[0]
        #: Calls set up since the driver last saved them (so a restart still relays their BYEs).
        self.opened_dialogs: list[tuple[str, DialogParties]] = []
        #: Policy queries emitted and not yet handed to the driver (the node shares this list).
        self.queries: list[PolicyQuery[Any]] = []
        #: (branch, To-tag) of 2xx responses parked until the policy answers (their retransmissions are dropped).
        self.pending_answers: set[tuple[str, str]] = set()

    # -- helpers -------------------------------------------------------------------------------------------

    def is_us(self, uri: SipUri) -> bool:
        if self._is_us is not None:
            return self._is_us(uri)
        host = uri.host.lower()
        if host == self.domain:
            return True
        # An IPv6 host is bracketed in a URI ("[::1]") and bare in our listen address ("::1").
        return host.strip("[]") == self.via_host.lower() and (uri.port or 5060) == self.via_port

    def _loop_hash(self, request: Request) -> str:
        # Section 16.6 step 8: a hash over the fields that identify the request as the proxy received it. Only
        # this process compares it with its own earlier branches, so Python's (per-process seeded) hash will do;
        # after a restart a loop is still stopped by Max-Forwards (483).
        # The raw From/To/CSeq values stand in for tags and number: a looped request carries them unchanged, and
        # reading them costs nothing while parsing To would (the parser checks it without keeping the result).
        headers = request.headers
        return _loop_hash_of(request.uri, headers.get("From"), headers.get("To"), request.call_id,
                             headers.get("CSeq"))

    def _new_branch(self, loop_hash: str, back_to: Address) -> str:
        """Section 16.6 step 8, plus a MAC over the branch and ``back_to`` (where a response to it goes next):
        stray responses are forwarded only with such a mark, so nobody else can aim them (finding: reflector)."""
        self._counter += 1
        # printf-style, as _loop_hash_of: a format spec in an f-string is a str.format call compiled (3,300
        # instructions) and a spec to parse pure (hex() in a plain f-string was measured: ~250 more compiled, the
        # builtin looked up as an attribute of the builtins module on each call).
        body = "%s.%s%x" % (loop_hash, self._instance, self._counter)  # noqa: UP031
        return f"{BRANCH_MAGIC_COOKIE}{body}.{self.branch_mark(body, back_to)}"

    def branch_mark(self, body: str, back_to: Address) -> str:
        """The mark (16 hex digits, 64 bits) of the branch ``body`` whose responses go back to ``back_to``."""
        mac = self._branch_mac.copy()
        mac.update(f"{body}|{back_to[0]}|{back_to[1]}".encode())
        return mac.hexdigest()

    def get_timer(self) -> float | None:
        first = self.timers.next_deadline()
        ended = self.ended_deadline()
        if ended is None:
            return first
        return ended if first is None or ended < first else first

    def transaction_count(self) -> int:
        """Server transactions kept, ended ones included (what ``max_transactions`` caps)."""
        return len(self.server_txs) + len(self.ended_server)

    # -- requests ------------------------------------------------------------------------------------------

    def handle_request(self, request: Request, source: Address, now: float, out: Out, size: int = 0,
                       unverified: Unverified | None = None) -> None:
        """A request to proxy (anything but REGISTER, PUBLISH and OPTIONS for the server itself).

        Nothing is kept before the request is authenticated (or known to come from a peer, or to belong to a
        dialog set up here): refusals and challenges before that are sent once, statelessly, through
        ``unverified`` (the node's rate limit and 3x rule)."""
        self.stats.requests += 1
        method = request.method
        if method == "ACK":
            self._on_ack(request, source, now, out)
            return
        from_peer = self.federation.authenticated_peer(source) is not None
        if method == "CANCEL":
            self._on_cancel(request, source, now, out, size, unverified, from_peer)
            return
        key = _server_key(request, method)
        tx = self.server_txs.get(key)
        if tx is not None:
            # A retransmission (section 17.2.1/17.2.2): answer with the last response, or absorb it. Only to the
            # address that sent the original: a copy with a forged source gets nothing.
            self.stats.retransmissions_absorbed += 1
            if (source == tx.source and tx.last_response is not None
                    and tx.state in (_PROCEEDING, _COMPLETED)):
                out.append((tx.last_response, source))
            return
        ended = self.ended_server.get(key)
        if ended is not None:
            self.stats.retransmissions_absorbed += 1
            _answer_again(ended, source, out)
            return
        try:
            plan = self._admit(request, source, now, from_peer)
            if self.transaction_count() >= self.max_transactions:
                raise _Reject(503, "Service Unavailable (busy)", (("Retry-After", "5"),))
        except (_Reject, RemoteProtocolError) as exc:
            rej = exc if isinstance(exc, _Reject) else _Reject(exc.status_hint, exc.message)
            if rej.status == 407:
                if log.isEnabledFor(logging.DEBUG):  # the first half of every call: no line built when off
                    log.debug("proxy: %s %s from %s:%d challenged", method, clip(request.uri), *source)
            else:
                self.stats.rejected += 1
                log.info("proxy: %s %s from %s:%d -> %d %s", method, clip(request.uri), source[0], source[1],
                         rej.status, clip(rej.reason or ""))
            self._stateless(request, source, rej, now, out, size, None if from_peer else unverified)
            # The exception's traceback holds this frame, which holds ``rej``: a reference cycle, and the whole
            # stack of every challenged INVITE left to the cyclic collector, unless the name goes.
            del rej
            return
        tx = ServerTx(key, method, request, source, _PROCEEDING if method == "INVITE" else _TRYING)
        self.server_txs[key] = tx
        try:
            self._route_new(tx, request, source, now, out, plan)
        except _Reject as rej:
            self.stats.rejected += 1
            # An INVITE's refusal gets its "session refused" line (server.sessions) when answered.
            level = logging.DEBUG if method == "INVITE" else logging.INFO
            if log.isEnabledFor(level):
                log.log(level, "proxy: %s %s from %s:%d -> %d %s", method, clip(request.uri), source[0], source[1],
                        rej.status, clip(rej.reason or ""))
            self._answer(tx, rej.status, rej.reason, rej.extra, now, out)
        except RemoteProtocolError as exc:
            self.stats.rejected += 1
            log.info("proxy: %s from %s:%d rejected: %s", method, source[0], source[1], clip(exc.message))
            self._answer(tx, exc.status_hint, exc.message, (), now, out)

    def _stateless(self, request: Request, source: Address, rej: _Reject, now: float, out: Out, size: int,
                   unverified: Unverified | None) -> None:
        """Answer without a transaction: once, never retransmitted (the client retransmits if it cares)."""
        data = answer_bytes_direct(request, source, rej.status, rej.reason, to_tag=self.ids.tag(), extra=rej.extra)
        if unverified is None or (rej.delay_s <= 0 and len(data) <= 3 * size
                                  and self._registered_from(request, source, now)):
            out.append((data, source))
        else:
            unverified(data, source, size, now, out, rej.delay_s)

    def challenge_plain(self, plain: PlainInvite, source: Address, now: float, out: Out, size: int,
                        unverified: Unverified) -> bool:
        """The 407 of an INVITE read by the challenge path (:func:`server.splice.read_invite`: one Via, a sip:
        Request-URI, Max-Forwards not 0, no Proxy-Require, Route, To tag or credentials), as
        :meth:`handle_request` answers it: the same challenge and tag drawn in the same order, the same bytes,
        sent the same way. False, with nothing done, for what the full path decides: a request from a peer
        region, a retransmission of a transaction held here."""
        if self.federation.authenticated_peer(source) is not None:
            return False
        via = plain.via
        host, port = via.sent_by
        key = (via.branch or "", host, str(port), "INVITE")  # _server_key's (the shape has a z9hG4bK branch)
        if key in self.server_txs or key in self.ended_server:
            return False
        stats = self.stats
        stats.requests += 1
        challenge = self.login.challenge(True, now)  # before the tag, as handle_request draws them
        stats.challenges += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("proxy: INVITE %s from %s:%d challenged", clip(plain.uri), *source)
        data = answer_bytes(plain.items, via, source, 407, None, to_tag=self.ids.tag(), extra=challenge.headers)
        if len(data) <= 3 * size and self._registered_uri(plain.from_uri, source, now):
            out.append((data, source))
        else:
            unverified(data, source, size, now, out, 0.0)
        return True

    def _registered_from(self, request: Request, source: Address, now: float) -> bool:
        """Whether the player the request names in From is registered from exactly ``source``: that address
        answered our challenge, so it is no spoofed victim, and its answers skip the per-IP limit of strangers
        (one SIPp, an edge or a NAT sends many calls from one IP; after a restart every call retransmits at once)."""
        try:
            uri = request.from_.uri
        except RemoteProtocolError:
            return False
        return self._registered_uri(uri, source, now)

    def _registered_uri(self, uri: SipUri, source: Address, now: float) -> bool:
        """:meth:`_registered_from` of the From's URI ``uri``."""
        if not uri.user or not self.is_us(uri):
            return False
        return any(b.source == source for b in self.location.lookup(f"sip:{uri.user}@{self.domain}", now))

    def _admit(self, request: Request, source: Address, now: float, from_peer: bool) -> _Plan:
        """Everything decided before any state is kept: validation (section 16.3), authentication of players,
        and for in-dialog requests the target and the dialog check. Raises :class:`_Reject`."""
        ruri = request.request_uri
        # Section 16.3 step 2: URI scheme.
        if not ruri.is_sip:
            raise _Reject(416, "Unsupported URI Scheme")
        # Step 3: Max-Forwards.
        max_forwards = request.max_forwards
        if max_forwards == 0:
            raise _Reject(483, "Too Many Hops")
        # Step 4: loop detection (only requests that already passed us can loop).
        # (The hash is also the start of the branch the request is forwarded with: computed there when not here,
        # so a challenged request, which is never forwarded, does not pay for it.)
        loop_hash = ""
        vias = request.vias  # parsed by the parser already
        if len(vias) > 1:
            loop_hash = self._loop_hash(request)
            mark = f"{BRANCH_MAGIC_COOKIE}{loop_hash}."
            for via in vias[1:]:
                if via.host.lower() == self.via_host and via.port == self.via_port and (via.branch or "").startswith(
                        mark):
                    raise _Reject(482, "Loop Detected")
        # Step 5: Proxy-Require; we implement no proxy extensions.
        proxy_require = request.headers.values("Proxy-Require")
        if proxy_require:
            raise _Reject(420, "Bad Extension", (("Unsupported", ", ".join(proxy_require)),))
        routes, route_popped = self._routes(request)
        in_dialog = _has_tag(request.headers.get("To") or "")
        caller_local = False
        if from_peer:
            # A peer speaks for its own players only: a request from a peer never acts as one of ours.
            from_uri = request.from_.uri
            if self.is_us(from_uri):
                raise _Reject(403, "A peer region cannot speak for a player of this region")
        elif not in_dialog:
            self._authenticate(request, source, now)
            caller_local = True
        target: Target | None = None
        if in_dialog:
            target = self._resolve(request.uri, ruri, routes, out_of_dialog=False, now=now, from_peer=from_peer)
            if not self._may_relay(source, target.dest, request.call_id, now):
                raise _Reject(403, "In-dialog requests are relayed only within calls set up here")
        return _Plan(routes, route_popped, loop_hash, max_forwards, in_dialog, caller_local, from_peer, target)

    def _route_new(self, tx: ServerTx, request: Request, source: Address, now: float, out: Out, plan: _Plan) -> None:
        method = request.method
        target = plan.target or self._resolve(request.uri, request.request_uri, plan.routes, out_of_dialog=True,
                                              now=now, from_peer=plan.from_peer)
        extra_headers: tuple[tuple[str, str], ...] = ()
        if method == "INVITE":
            # Section 16.2: 100 Trying at once, so the caller stops retransmitting while we work.
            trying = trying_bytes(tx)
            tx.last_response = trying
            out.append((trying, source))
            if not plan.in_dialog:
                call = self._call_info(request, source, target, plan.caller_local, plan.from_peer)
                tx.call = call
                asked = self.hooks.invite_received(call, now)
                if isinstance(asked, PolicyQuery):
                    # The policy is a separate process: the INVITE waits (its retransmissions get the 100 Trying)
                    # while the driver asks; the loop goes on with other messages meanwhile.
                    def resume(verdict: InviteVerdict, at: float, later: Out) -> None:
                        self._invite_verdict(tx, request, source, plan, target, verdict, at, later)

                    asked.then = resume
                    self.queries.append(asked)
                    self.stats.policy_queries += 1
                    return
                extra_headers = _verdict_headers(asked)
        self._forward_new(tx, request, source, now, out, plan, target, extra_headers)

    def _invite_verdict(self, tx: ServerTx, request: Request, source: Address, plan: _Plan, target: Target,
                        verdict: InviteVerdict, now: float, out: Out) -> None:
        """The policy's answer to a parked INVITE: forward it, or refuse it (unless it was cancelled meanwhile)."""
        if tx.final_status != 0 or self.server_txs.get(tx.key) is not tx:
            if tx.call is not None:
                self.hooks.invite_failed(tx.call, tx.final_status or 487, now)
            return
        try:
            self._forward_new(tx, request, source, now, out, plan, target, _verdict_headers(verdict))
        except _Reject as rej:
            self.stats.rejected += 1
            self._answer(tx, rej.status, rej.reason, rej.extra, now, out)
        except RemoteProtocolError as exc:
            self.stats.rejected += 1
            log.info("proxy: INVITE from %s:%d rejected: %s", source[0], source[1], clip(exc.message))
            self._answer(tx, exc.status_hint, exc.message, (), now, out)

    def _forward_new(self, tx: ServerTx, request: Request, source: Address, now: float, out: Out, plan: _Plan,
                     target: Target, extra_headers: tuple[tuple[str, str], ...]) -> None:
        method = request.method
        via = request.top_via
        back_to = (source[0], source[1] if via.rport is not None else (via.port or 5060))
        branch = self._new_branch(plan.loop_hash or self._loop_hash(request), back_to)
        our_via = self._via(branch)
        hide = not plan.from_peer or target.peer_domain is None
        # RFC 8224: the INVITE of a player authenticated here goes on with this region's Identity alone.
        signs = plan.caller_local and method == "INVITE" and not plan.in_dialog
        identity = self._identity_of(request) if signs else None
        fwd: Request | None = None
        data = self._spliced_new(request, source, plan, target, our_via, hide, signs, identity, extra_headers)
        if data is None:
            fwd = self._forward_copy(request, target, plan.route_popped, plan.max_forwards)
            headers = fwd.headers
            if plan.caller_local:
                self._strip_own_credentials(headers)
                if signs:
                    headers.remove("Identity")
                    if identity is not None:
                        headers.add("Identity", identity)
            for name, value in extra_headers:
                headers.add(name, value)
            self._push_via(headers, request, source, branch, hide=hide)
            data = fwd.to_bytes()
        self._send_new(tx, method, fwd, target.dest, target.uri, target.routes, branch, our_via, data, now, out)

    def _send_new(self, tx: ServerTx, method: str, fwd: Request | None, dest: Address, uri: str,
                  routes: tuple[str, ...], branch: str, our_via: str, data: bytes, now: float, out: Out) -> None:
        """Section 16.6 steps 10-11: the client transaction of a request forwarded as ``data``, and its timers."""
        invite = method == "INVITE"
        t1 = self.t.t1_s
        # Timer A/E (retransmit, UDP) and B/F (give up) (section 17.1.1.2 and 17.1.2.2), armed as the transaction
        # is made: the first on the heap (TimerHeap.track), the second behind it (later, as TimerHeap.arm leaves it).
        first = now + t1
        timers = {_TIMER_A: first, _TIMER_B: now + self._timeout_64t1} if invite else {
            _TIMER_E: first, _TIMER_F: now + self._timeout_64t1}
        ctx = ClientTx(branch, method, fwd, dest, _CALLING if invite else _TRYING, request_bytes=data,
                       server=tx, timers=timers, interval=t1, uri=uri, via=our_via, routes=routes)
        tx.client = ctx
        self.client_txs[(branch, method)] = ctx
        self.timers.track(ctx, _TIMER_A if invite else _TIMER_E, first)
        self.stats.forwarded += 1
        out.append((data, dest))

    def _spliced_new(self, request: Request, source: Address, plan: _Plan, target: Target, our_via: str, hide: bool,
                     signs: bool, identity: str | None, extra_headers: tuple[tuple[str, str], ...]) -> bytes | None:
        """What :meth:`_forward_copy`, :meth:`_strip_own_credentials`, the Identity, the policy's headers and
        :meth:`_push_via` make of a request, as byte edits of the request as received (:mod:`server.splice`); None
        when it is not in a shape splicing handles (the serialiser's way then)."""
        if request.raw_unchanged() is None or plan.route_popped or (target.routes and plan.routes):
            return None
        drop: tuple[bytes, ...] = ()
        add = [f"Route: {value}" for value in target.routes]
        if plan.caller_local:
            if len(request.headers.get_all("Proxy-Authorization")) > 1:
                return None  # credentials for other realms stay: the serialiser sorts them
            drop = _CREDENTIALS_AND_IDENTITY if signs else _CREDENTIALS
            if identity is not None:
                add.append(f"Identity: {identity}")
        add.extend(f"{name}: {value}" for name, value in extra_headers)
        return self._spliced(request, target, False, plan.max_forwards, source, our_via, hide, drop, add)

    def _routes(self, request: Request) -> tuple[list[str], bool]:
        """Section 16.4: the Route set left to follow, and whether its top entry named us and was taken off (nobody
        record-routes us, but a UA may preload it)."""
        routes = request.headers.values("Route") if "route" in request.headers else []
        if routes and self.is_us(request.routes[0].uri):
            return routes[1:], True
        return routes, False

    @staticmethod
    def _forward_copy(request: Request, target: Target, route_popped: bool, max_forwards: int | None) -> Request:
        """Section 16.6 steps 1-3: the copy sent to ``target``, without our Route entry and with Max-Forwards
        decremented (70 when absent, section 8.1.1.6)."""
        fwd = Request(request.method, target.uri, request.headers.copy(), request.body, request.version)
        if route_popped:
            fwd.headers.remove_first("Route")
        fwd.headers.set("Max-Forwards", str(69 if max_forwards is None else max_forwards - 1))
        for value in reversed(target.routes):  # RFC 3327 section 5.3: the Path becomes the route set
            fwd.headers.insert_first("Route", value)
        return fwd

    def _spliced(self, request: Request, target: Target, route_popped: bool, max_forwards: int | None,
                 source: Address, our_via: str, hide: bool, drop: tuple[bytes, ...] = (),
                 add: list[str] | None = None) -> bytes | None:
        """Sections 16.6 steps 1-8 as byte edits of the request as received (:mod:`server.splice`): what
        :meth:`_forward_copy` and :meth:`_push_via` make, without serialising the message again; ``drop`` and
        ``add`` as :func:`~server.splice.forward_request` takes them (``add`` carries the Path's Route lines).
        None when the request is not in the plain shape splicing handles (or carries a route set to edit)."""
        raw = request.raw_unchanged()
        if raw is None or route_popped or (target.routes and add is None):
            return None
        return self._splice_raw(raw, request.method, request.uri, request.version, request.top_via,
                                request.headers.get("Via") or "", target, max_forwards, source, our_via, hide, drop,
                                add, cast("tuple[int, int, list[tuple[int, int, bytes]]] | None",
                                          request.headers._cache.get(CALL_SPANS)))

    @staticmethod
    def _splice_head(head: Head, via: Via, uri: str, max_forwards: int | None, source: Address,
                     our_via: str, hide: bool) -> bytes:
        """:meth:`_splice_raw` of a request read by :func:`server.splice.read_head` (whose top Via line holds one
        Via: :meth:`~server.splice.Head.top_via` parsed it), from the places the reader noted."""
        line = head.via_lines[0]
        if hide:
            vias = [our_via]
        elif via.host != source[0] or via.rport is not None:
            vias = [our_via, marked_via(via, line, source)]
        else:
            vias = [our_via, line]
        start = None if uri == head.uri else f"{head.method} {uri} SIP/2.0".encode()
        return spliced(head, start, vias, not hide, 69 if max_forwards is None else max_forwards - 1)

    @staticmethod
    def _splice_raw(raw: bytes, method: str, uri: str, version: str, via: Via, via_text: str, target: Target,
                    max_forwards: int | None, source: Address, our_via: str, hide: bool,
                    drop: tuple[bytes, ...] = (), add: list[str] | None = None,
                    at: tuple[int, int, list[tuple[int, int, bytes]]] | None = None) -> bytes | None:
        """:meth:`_spliced` on the bytes ``raw`` of a request whose top Via is ``via`` (its line's text
        ``via_text``); ``at`` where its lines are when its reader noted them (``forward_request``'s)."""
        top: str | None = None
        if not hide and (via.host != source[0] or via.rport is not None):
            if "," in via_text:
                return None
            top = marked_via(via, via_text, source)
        line = None if target.uri == uri else f"{method} {target.uri} {version}".encode()
        return forward_request(raw, request_line=line, our_via=our_via, top_via=top, hide=hide,
                               max_forwards=69 if max_forwards is None else max_forwards - 1, drop=drop,
                               add=add or (), at=at)

    def _push_via(self, headers: Headers, request: Request, source: Address, branch: str, *, hide: bool) -> None:
        """Section 16.6 step 8: note where the request came from in its Via, then put ours on top.

        ``hide`` (topology hiding): ours is the only Via that goes on. A player's Via never leaves its region
        and a player never receives another's, whose ``received``/``rport`` would tell it the other player's
        public address (what ``relay_only`` keeps secret). Responses get the Vias back from the server
        transaction (:meth:`~server.proxy_responses.TransactionSide._forward_up`). Between regions the Vias of
        regions stay, so section 16.3's loop detection still sees them."""
        if hide:
            headers.remove("Via")
        else:
            mark_received(headers, request.top_via, source)
        headers.insert_first("Via", self._via(branch))

    def _authenticate(self, request: Request, source: Address, now: float) -> str:
        outcome = self.login.authenticate(request, self.client_of(request, source), now, proxy=True)
        if isinstance(outcome, Challenge):
            if outcome.status == 407:
                self.stats.challenges += 1
            elif outcome.status == 403:
                self.stats.auth_failures += 1
            raise _Reject(outcome.status, outcome.reason, outcome.headers, outcome.delay_s)
        user = outcome.user
        from_uri = request.from_.uri
        if not self.is_us(from_uri) or from_uri.user != user:
            raise _Reject(403, "From does not match the authenticated user")
        return user

    def _identity_of(self, request: Request) -> str | None:
        """RFC 8224 authentication service: the INVITE of a player authenticated here gets this region's
        PASSporT (orig, dest, iat, mky of the offer's channel key); an Identity the player put there is dropped
        (by :meth:`_forward_new`). None without a signing key."""
        if self.identity is None:
            return None
        self.stats.identities_signed += 1
        return self.identity.sign(request.from_.uri.aor, request.to.uri.aor, request.body)

    def _strip_own_credentials(self, headers: Headers) -> None:
        # Credentials for our realm are of no use downstream (RFC 3261 section 22.3 lets a proxy remove them).
        values = headers.get_all("Proxy-Authorization")
        if not values:
            return
        headers.remove("Proxy-Authorization")
        if len(values) == 1:
            return  # the one we just verified
        for value in values:
            try:
                _, params = parse_auth_params_untrusted(value)
            except RemoteProtocolError:
                continue
            if params.get("realm") != self.login.realm:
                headers.add("Proxy-Authorization", value)

    def _resolve(self, uri: str, ruri: SipUri, routes: list[str], *, out_of_dialog: bool,
                 now: float, from_peer: bool = False) -> Target:
        """Section 16.5: the target and next hop of a request with the Request-URI ``uri`` (``ruri`` parsed).

        Out of a dialog a request goes only to a player registered here or to a configured peer: never to an
        address named in the Request-URI or a Route (the server is no open relay). In a dialog it goes to the
        address in the Request-URI (a party's Contact), and :meth:`_may_relay` checks the dialog."""
        if not routes and not out_of_dialog and not from_peer:
            dest = self._direct_dest(uri)
            if dest is not None:
                return Target(uri, dest)
        if routes:
            next_hop = SipUri.parse(routes[0].strip().lstrip("<").split(">", 1)[0])
            dest = self._address_of(next_hop)
            if out_of_dialog and self.federation.by_address(dest) is None:
                raise _Reject(403, "Routes are followed only to peer regions")
            # A preloaded route beyond us: send there (loose routing, section 16.12), Request-URI unchanged.
            return Target(uri, dest)
        host = ruri.host.lower()
        if self.is_us(ruri):
            if not ruri.user:
                raise _Reject(405, "Method Not Allowed", (("Allow", "REGISTER, OPTIONS, PUBLISH"),))
            aor = f"sip:{ruri.user}@{self.domain}"
            bindings = self.location.lookup(aor, now)
            if bindings and not self.user_exists(ruri.user):
                # Removed (or locked) while logged in: the old binding gets no call, and is dropped.
                gone = self.location.remove_all(aor)
                log.info("proxy: %s has no account any more: %d binding(s) dropped", aor, len(gone))
                bindings = []
            if not bindings:
                if not self.user_exists(ruri.user):
                    raise _Reject(404, "No such user")
                raise _Reject(480, "Temporarily Unavailable (not logged in)")
            binding = bindings[0]  # no forking (DESIGN section 2): the most recent registration
            return Target(binding.contact, binding.next_hop, local=True, access_network=binding.access_network,
                          routes=binding.path)
        peer = self.federation.by_domain(host)
        if peer is not None:
            return Target(uri, peer.address, peer_domain=peer.domain)
        if is_ip_literal(host):
            if out_of_dialog or from_peer:
                # Calls go to players by name; a peer never gets us to send to an address it picked.
                raise _Reject(403, "Requests are forwarded only to players and peer regions")
            # In-dialog requests and ACKs target a party's Contact directly (DESIGN section 2).
            dest = (host.strip("[]"), ruri.port or 5060)
            if len(uri) <= _DIRECT_MAX_LEN:
                if len(self._direct_targets) >= _DIRECT_MAX:
                    self._direct_targets.clear()
                self._direct_targets[uri] = (host, dest)
            return Target(uri, dest)
        if out_of_dialog:
            raise _Reject(604, "Does Not Exist Anywhere (unknown domain)")
        raise _Reject(404, "Unknown domain")

    def _direct_dest(self, uri: str) -> Address | None:
        """The address the in-dialog Request-URI ``uri`` resolved to before (:attr:`_direct_targets`), while its
        host is no peer's domain: what :meth:`_resolve` makes of it in a dialog, from a player. None otherwise."""
        direct = self._direct_targets.get(uri)
        if direct is None or self.federation.by_domain(direct[0]) is not None:
            return None
        return direct[1]

    def _may_relay(self, source: Address, dest: Address, call_id: str, now: float) -> bool:
        """In-dialog requests and 2xx ACKs are not authenticated (RFC 3261 section 22.1 for ACK; there is no
        challenge in a dialog we are not part of). So they are relayed only within a call this server set up,
        and only from one of its two parties to the other (matched on IP address and port): never from a
        stranger, nor to an address of the sender's choosing (the server must not be a reflector)."""
        parties = self._dialogs.get(call_id)
        if parties is None:
            return False
        if parties.expires_at <= now:
            del self._dialogs[call_id]
            return False
        return parties.allows(source, dest)

    def _dialog_opened(self, tx: ServerTx, ctx: ClientTx, response: Response, now: float) -> None:
        """A 2xx of an INVITE forwarded here (by ``ctx``): remember the call's two parties for its in-dialog
        requests. The caller's side comes from the INVITE at the first 2xx and is kept on ``tx`` for another
        (with another To tag), which may come after the INVITE is let go."""
        invite = tx.request
        caller = tx.caller
        if caller is None:
            caller = tx.caller = _party_of(tx.source, None if invite is None else first_contact_addr(invite))
        callee = _party_of(ctx.dest, first_contact_addr(response))
        call_id = invite.call_id if invite is not None else tx.call_id
        dialogs = self._dialogs
        dialogs.pop(call_id, None)
        parties = DialogParties(caller, callee, now + DIALOG_RELAY_S)
        dialogs[call_id] = parties
        if len(self.opened_dialogs) < MAX_RELAYED_DIALOGS:
            self.opened_dialogs.append((call_id, parties))
        # Insertion order is expiry order: drop the expired (and the oldest beyond the cap) from the front.
        while dialogs:
            oldest, parties = next(iter(dialogs.items()))
            if parties.expires_at > now and len(dialogs) <= MAX_RELAYED_DIALOGS:
                break
            del dialogs[oldest]

    def restore_dialogs(self, dialogs: list[tuple[str, DialogParties]], now: float) -> None:
        """Calls read back at start (their ``expires_at`` on this clock), oldest first."""
        for call_id, parties in sorted(dialogs, key=lambda d: d[1].expires_at)[-MAX_RELAYED_DIALOGS:]:
            if parties.expires_at > now:
                self._dialogs[call_id] = parties

    def _address_of(self, uri: SipUri) -> Address:
        host = uri.host.lower()
        peer = self.federation.by_domain(host)
        if peer is not None:
            return peer.address
        if is_ip_literal(host):
            return (host.strip("[]"), uri.port or 5060)
        raise _Reject(404, "Route to an unknown host")

    def _call_info(self, request: Request, source: Address, target: Target, caller_local: bool,
                   from_peer: bool) -> CallInfo:
        from_uri = request.from_.uri
        peer = target.peer_domain
        if from_peer:
            src_peer = self.federation.authenticated_peer(source)
            peer = src_peer.domain if src_peer is not None else peer
        return CallInfo(
            call_id=request.call_id,
            from_tag=request.from_.tag,
            caller=from_uri.aor,
            callee=request.request_uri.aor,
            caller_local=caller_local,
            callee_local=target.local,
            caller_network=self.location.networks.lookup(source[0]) if caller_local else None,
            callee_network=target.access_network if target.local else None,
            caller_address=source if caller_local else None,
            callee_address=target.dest if target.local else None,
            peer_domain=peer,
            offer=request.body,
            content_type=request.content_type,
            invite=request,
        )

    # -- ACK and CANCEL --------------------------------------------------------------------------------------

    def _on_ack(self, request: Request, source: Address, now: float, out: Out) -> None:
        key = _server_key(request, "INVITE")
        tx = self.server_txs.get(key)
        if tx is not None and tx.state in (_COMPLETED, _CONFIRMED):
            # The ACK for our non-2xx: it ends here (hop by hop, section 17.2.1); Timer I absorbs repeats.
            if tx.state is _COMPLETED:
                tx.state = _CONFIRMED
                tx.last_response = None  # Confirmed sends nothing more
                self.timers.stop(tx, _TIMER_G)
                self.timers.stop(tx, _TIMER_H)
                t4 = self.t.t4_s
                if not self._server_ended(tx, ENDED_CONFIRMED, t4, now):
                    self.timers.arm(tx, _TIMER_I, now + t4)
            return
        if tx is None:
            ended = self.ended_server.get(key)
            if ended is not None and ended[0] == ENDED_CONFIRMED:
                return  # a repeat of that ACK
        # The ACK for a 2xx is end to end: forward it statelessly by Request-URI (section 16.11).
        # Dropped ACKs are counted, not logged at INFO: the ACK of every challenged call (its 407 went out
        # statelessly) ends here, one per call on the hot path.
        max_forwards = request.max_forwards
        if max_forwards == 0:
            self.stats.acks_dropped += 1
            log.debug("proxy: ACK from %s:%d dropped: Max-Forwards 0", *source)
            return
        if request.call_id not in self._dialogs:
            # Not within a call set up here (the ACK of every challenge): dropped before any routing, which
            # :meth:`_may_relay` would refuse anyway.
            self.stats.acks_dropped += 1
            log.debug("proxy: ACK from %s:%d dropped: not within a call set up here", *source)
            return
        routes, route_popped = self._routes(request)
        try:
            target = self._resolve(request.uri, request.request_uri, routes, out_of_dialog=False, now=now)
        except _Reject as rej:
            self.stats.acks_dropped += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug("proxy: ACK for %s dropped: %d %s", clip(request.uri), rej.status, rej.reason or "")
            return
        if not self._may_relay(source, target.dest, request.call_id, now):
            self.stats.acks_dropped += 1
            log.debug("proxy: ACK from %s:%d dropped: not within a call set up here", *source)
            return
        incoming = request.top_via.branch or request.call_id
        branch = _stateless_ack_branch(incoming)
        from_peer = self.federation.authenticated_peer(source) is not None
        hide = not from_peer or target.peer_domain is None
        data = self._spliced(request, target, route_popped, max_forwards, source, self._via(branch), hide)
        if data is None:
            fwd = self._forward_copy(request, target, route_popped, max_forwards)
            self._push_via(fwd.headers, request, source, branch, hide=hide)
            data = fwd.to_bytes()
        self.stats.stateless_acks += 1
        out.append((data, target.dest))

    def relay_request(self, head: Head, source: Address, now: float, out: Out) -> bool:
        """The relay path of a request inside a call set up here (a BYE, INFO, UPDATE, PRACK from one of its
        players; read by :func:`server.splice.read_head`, never parsed in full): what :meth:`handle_request`
        does with it, spliced, and its retransmissions absorbed. Its server transaction keeps no request: the
        Vias its responses go up with and the strings log lines name (nothing of ours ever answers it: a
        non-INVITE gets no 408, RFC 4320, and no CANCEL applies). False, with nothing changed, for what the
        full path decides: every refusal (which copies the request into an answer), a Route, Proxy-Require or
        several Vias to read, a request from a peer region, a head splicing does not handle."""
        if head.routes or head.proxy_require or len(head.via_lines) != 1 or not _has_tag(head.to):
            return False
        try:
            via = head.top_via()
            ruri = request_uri(head.uri)
        except RemoteProtocolError:
            return False
        # find_param rather than the Via's branch and rport properties: a property of a named tuple is an
        # attribute lookup through the interpreter compiled, the function a native call.
        params = via.params
        branch = find_param(params, "branch")
        if not ruri.is_sip or not branch or not branch.startswith(BRANCH_MAGIC_COOKIE):
            return False
        if self.federation.authenticated_peer(source) is not None:
            return False  # a peer's: the full path checks that it speaks for its own players
        method = head.method
        host, port = via.sent_by
        key = (branch, host, str(port), method)
        stats = self.stats
        tx = self.server_txs.get(key)
        if tx is not None:
            # A retransmission (as in handle_request): the last response again, to the original sender only.
            stats.requests += 1
            stats.retransmissions_absorbed += 1
            if (source == tx.source and tx.last_response is not None
                    and tx.state in (_PROCEEDING, _COMPLETED)):
                out.append((tx.last_response, source))
            return True
        ended = self.ended_server.get(key)
        if ended is not None:
            stats.requests += 1
            stats.retransmissions_absorbed += 1
            _answer_again(ended, source, out)
            return True
        max_forwards = head.max_forwards
        if max_forwards == 0 or self.transaction_count() >= self.max_transactions:
            return False
        uri = head.uri
        routes: tuple[str, ...] = ()
        dest = self._direct_dest(uri)
        if dest is None:
            try:
                target = self._resolve(uri, ruri, [], out_of_dialog=False, now=now)
            except (_Reject, RemoteProtocolError):
                return False
            dest, uri, routes = target.dest, target.uri, target.routes
        if routes or not self._may_relay(source, dest, head.call_id, now):
            return False  # a player's Path to put on (or a refusal): the full path's
        loop_hash = _loop_hash_of(head.uri, head.from_, head.to, head.call_id, head.cseq_text)
        rport = find_param(params, "rport")  # (a scan of the Via's parameters: read once)
        back_to = (source[0], source[1] if rport is not None else (via.port or 5060))
        new_branch = self._new_branch(loop_hash, back_to)
        our_via = self._via(new_branch)
        line = head.via_lines[0]
        # A player's request: its Via stays here (topology hiding, as _push_via with hide).
        data = self._splice_head(head, via, uri, max_forwards, source, our_via, True)
        tx = ServerTx(key, method, None, source, call_id=head.call_id, from_=head.from_, uri=head.uri)
        tx.upstream_vias = [line] if via.host == source[0] and rport is None else [
            marked_via(via, line, source)]
        self.server_txs[key] = tx
        stats.requests += 1
        self._send_new(tx, method, None, dest, uri, routes, new_branch, our_via, data, now, out)
        return True

    def relay_ack(self, head: Head, source: Address, now: float, out: Out) -> bool:
        """The relay path of an ACK (read by :func:`server.splice.read_head`, never parsed in full): what
        :meth:`_on_ack` does with the ACK of a 2xx, spliced, and the drop of an ACK that is not within a call set
        up here (the ACK of every stateless 407) after reading no more than its top Via, Max-Forwards and
        Call-ID. False, with nothing changed, for what the full path decides (an ACK of one of our finals, a Route
        to follow, a head splicing does not handle, a top Via or Request-URI that does not parse)."""
        try:
            via = head.top_via()
        except RemoteProtocolError:
            return False
        incoming = find_param(via.params, "branch")  # (as in relay_request)
        if not incoming or not incoming.startswith(BRANCH_MAGIC_COOKIE):
            return False  # an RFC 2543 ACK: its transaction key needs more than the relay path reads
        host, port = via.sent_by
        key = (incoming, host, str(port), "INVITE")
        if key in self.server_txs or key in self.ended_server:
            return False  # the ACK of a final of ours (hop by hop): the transaction's
        call_id = head.call_id
        max_forwards = head.max_forwards
        if self._ack_dropped(call_id, max_forwards, source):
            return True
        stats = self.stats
        if head.routes:
            return False
        uri = head.uri
        peer_domain: str | None = None
        try:
            ruri = request_uri(uri)
            dest = self._direct_dest(uri)
            if dest is None:
                target = self._resolve(uri, ruri, [], out_of_dialog=False, now=now)
                if target.routes:
                    return False  # a player's Path to put on: the full path's
                dest, uri, peer_domain = target.dest, target.uri, target.peer_domain
        except RemoteProtocolError:
            return False
        except _Reject as rej:
            stats.requests += 1
            stats.acks_dropped += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug("proxy: ACK for %s dropped: %d %s", clip(head.uri), rej.status, rej.reason or "")
            return True
        if not self._may_relay(source, dest, call_id, now):
            stats.requests += 1
            stats.acks_dropped += 1
            log.debug("proxy: ACK from %s:%d dropped: not within a call set up here", *source)
            return True
        branch = _stateless_ack_branch(incoming)
        hide = peer_domain is None or self.federation.authenticated_peer(source) is None
        data = self._splice_head(head, via, uri, max_forwards, source, self._via(branch), hide)
        stats.requests += 1
        stats.stateless_acks += 1
        out.append((data, dest))
        return True

    def drop_plain_ack(self, via: Via, call_id: str, max_forwards: int | None, source: Address) -> bool:
        """The ACK of a stateless challenge read by :func:`server.splice.read_ack` (its top Via, Call-ID and
        Max-Forwards): dropped as :meth:`relay_ack` drops it. False, with nothing done, for an ACK of a final of
        ours or one within a call set up here (the relay path's or the full path's)."""
        host, port = via.sent_by
        key = (via.branch or "", host, str(port), "INVITE")  # the shape has a z9hG4bK branch
        if key in self.server_txs or key in self.ended_server:
            return False
        return self._ack_dropped(call_id, max_forwards, source)

    def _ack_dropped(self, call_id: str, max_forwards: int | None, source: Address) -> bool:
        """Drop (counted) an ACK that no transaction of ours absorbs when it cannot be relayed: Max-Forwards 0, or
        not within a call set up here (the ACK of every stateless 407). False, with nothing done, otherwise."""
        if max_forwards != 0 and call_id in self._dialogs:
            return False
        stats = self.stats
        stats.requests += 1
        stats.acks_dropped += 1
        log.debug("proxy: ACK from %s:%d dropped: %s", source[0], source[1],
                  "Max-Forwards 0" if max_forwards == 0 else "not within a call set up here")
        return True

    def _on_cancel(self, request: Request, source: Address, now: float, out: Out, size: int,
                   unverified: Unverified | None, from_peer: bool) -> None:
        key = _server_key(request, "CANCEL")
        tx = self.server_txs.get(key)
        if tx is not None:
            if tx.last_response is not None and source == tx.source:
                out.append((tx.last_response, source))
            return
        ended = self.ended_server.get(key)
        if ended is not None:
            _answer_again(ended, source, out)
            return
        invite_key = _server_key(request, "INVITE")
        invite = self.server_txs.get(invite_key)
        if invite is None:
            ended = self.ended_server.get(invite_key)
            if ended is not None and source == (ended[2], ended[3]):
                # The INVITE has its final (ended): the CANCEL is answered and changes nothing (section 9.2).
                tx = ServerTx(key, "CANCEL", request, source)
                self.server_txs[key] = tx
                self._answer(tx, 200, None, (), now, out)
                return
        if invite is None or invite.method != "INVITE" or invite.source != source:
            # Nothing of this sender's to cancel: answered once, statelessly (no state for strangers).
            self._stateless(request, source, _Reject(481, "Call/Transaction Does Not Exist"), now, out, size,
                            None if from_peer else unverified)
            return
        tx = ServerTx(key, "CANCEL", request, source)  # Trying until the 200 below
        self.server_txs[key] = tx
        # Section 16.10: answer the CANCEL ourselves, then cancel downstream if still pending.
        self._answer(tx, 200, None, (), now, out)
        ctx = invite.client
        if invite.final_status == 0 and ctx is not None and ctx.state in (_CALLING, _PROCEEDING):
            if ctx.got_provisional:
                self._send_cancel(ctx, now, out)
            else:
                ctx.cancel_pending = True
        elif invite.final_status == 0:
            self._answer(invite, 487, "Request Terminated", (), now, out)
