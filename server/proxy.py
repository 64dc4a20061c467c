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
from collections.abc import Callable
from dataclasses import dataclass

from gamesdk.errors import RemoteProtocolError
from gamesdk.sip.digest import parse_auth_params_untrusted
from gamesdk.sip.ids import BRANCH_MAGIC_COOKIE, IdFactory
from gamesdk.sip.message import Headers, Request, response_for
from gamesdk.sip.uri import SipUri
from server.auth import AuthStatus, DigestAuthenticator, FailureThrottle
from server.config import TimerSettings
from server.federation import FederationTable
from server.hooks import CallInfo, NullPolicy, PolicyHooks
from server.location import LocationService, is_ip_literal
from server.proxy_responses import Out, ProxyStats, TransactionSide, mark_received
from server.txn import Addr, ClientState, ClientTx, ServerState, ServerTx, TimerHeap

__all__ = ["ProxyCore", "ProxyStats", "Target", "mark_received"]

log = logging.getLogger(__name__)

#: How long in-dialog requests of a call authenticated here are relayed (a long game; the SDK never needs it).
DIALOG_RELAY_S = 4 * 3600.0
#: At most this many such calls are remembered (the oldest are forgotten first).
MAX_RELAYED_DIALOGS = 200_000

#: Methods that never get a 407 (RFC 3261 section 22.1: ACK and CANCEL cannot be challenged).
_NEVER_CHALLENGED = frozenset({"ACK", "CANCEL"})
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, PUBLISH, UPDATE, INFO, PRACK, MESSAGE, NOTIFY, SUBSCRIBE, REFER"


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes: the new Request-URI text and the next hop's address."""

    uri: str
    dest: Addr
    #: The callee is registered here (the location service found it).
    local: bool = False
    access_network: str | None = None
    peer_domain: str | None = None


class _Reject(Exception):
    """Internal: answer the request with this status (never escapes the proxy)."""

    def __init__(self, status: int, reason: str | None = None, extra: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.extra = extra


def _has_tag(to_value: str) -> bool:
    """Whether a To header value carries a tag (an in-dialog request), without parsing the whole name-addr.

    Parameters after ``>`` belong to the header; without ``<>`` every parameter does (RFC 3261 section 20.10).
    """
    tail = to_value[to_value.rfind(">") + 1:] if ">" in to_value else to_value
    return ";tag=" in tail.replace(" ", "").replace("\t", "").lower()


def _server_key(request: Request, method: str) -> tuple[str, ...]:
    """Transaction key of a request (RFC 3261 section 17.2.3); ACK and CANCEL pass "INVITE" to find theirs."""
    via = request.top_via
    branch = via.branch
    if branch and branch.startswith(BRANCH_MAGIC_COOKIE):
        host, port = via.sent_by
        return (branch, host, str(port), method)
    # RFC 2543 peers: match on the fields section 17.2.3 lists for them.
    return ("2543", request.call_id, str(request.cseq.seq), request.from_.tag or "", str(via), method)


class ProxyCore(TransactionSide):
    """The stateful proxy of one region."""

    def __init__(self, *, domain: str, via_host: str, via_port: int, location: LocationService,
                 user_exists: Callable[[str], bool], authenticator: DigestAuthenticator,
                 throttle: FailureThrottle, federation: FederationTable, timers: TimerSettings,
                 ids: IdFactory, hooks: PolicyHooks | None = None) -> None:
        self.domain = domain
        self.via_host = via_host
        self.via_port = via_port
        self.identity = None
        self.location = location
        self.user_exists = user_exists
        self.auth = authenticator
        self.throttle = throttle
        self.federation = federation
        self.t = timers
        self.ids = ids
        self.hooks: PolicyHooks = hooks if hooks is not None else NullPolicy()
        self.server_txs: dict[tuple[str, ...], ServerTx] = {}
        self.client_txs: dict[tuple[str, str], ClientTx] = {}
        self.timers = TimerHeap()
        self.stats = ProxyStats()
        self._our_hosts = {domain, via_host.lower(), f"{via_host.lower()}:{via_port}"}
        # Branches we create: magic cookie + our instance + counter. The instance part keeps them unique
        # across restarts; the loop hash is put in front so section 16.3 step 4 can recognise our own Via.
        self._instance = ids.tag()[:8]
        self._counter = 0
        self._timeout_64t1 = 64 * timers.t1_s
        # Delayed answers (authentication throttling): (when, data, addr), drained by the node.
        self.delayed: list[tuple[float, bytes, Addr]] = []
        # Call-IDs of calls whose INVITE a player authenticated here -> until when their in-dialog requests
        # (SIPp sends them to its proxy) are relayed without a registration from the same address.
        self._dialogs: dict[str, float] = {}

    # -- helpers -------------------------------------------------------------------------------------------

    def is_us(self, uri: SipUri) -> bool:
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
        value = hash((request.uri, headers.get("From"), headers.get("To"), request.call_id, headers.get("CSeq")))
        return f"{value & 0xFFFFFFFFFFFF:012x}"

    def _new_branch(self, loop_hash: str) -> str:
        self._counter += 1
        return f"{BRANCH_MAGIC_COOKIE}{loop_hash}.{self._instance}{self._counter:x}"

    def get_timer(self) -> float | None:
        return self.timers.next_deadline()

    # -- requests ------------------------------------------------------------------------------------------

    def handle_request(self, request: Request, source: Addr, now: float, out: Out) -> None:
        """A request to proxy (anything but REGISTER, PUBLISH and OPTIONS for the server itself)."""
        self.stats.requests += 1
        method = request.method
        if method == "ACK":
            self._on_ack(request, source, now, out)
            return
        if method == "CANCEL":
            self._on_cancel(request, source, now, out)
            return
        key = _server_key(request, method)
        tx = self.server_txs.get(key)
        if tx is not None:
            # A retransmission (section 17.2.1/17.2.2): answer with the last response, or absorb it.
            self.stats.retransmissions_absorbed += 1
            if tx.last_response is not None and tx.state in (ServerState.PROCEEDING, ServerState.COMPLETED):
                out.append((tx.last_response, source))
            return
        tx = ServerTx(key, method, request, source)
        self.server_txs[key] = tx
        try:
            self._route_new(tx, request, source, now, out)
        except _Reject as rej:
            # A 407 is the routine first half of every call, not a rejection: DEBUG, so INFO logs stay readable.
            if rej.status == 407:
                log.debug("proxy: %s %s from %s:%d challenged", method, request.uri, *source)
            else:
                self.stats.rejected += 1
                # An INVITE's refusal gets its "session refused" line (server.sessions) when answered.
                log.log(logging.DEBUG if method == "INVITE" else logging.INFO, "proxy: %s %s from %s:%d -> %d %s",
                        method, request.uri, source[0], source[1], rej.status, rej.reason or "")
            self._answer(tx, rej.status, rej.reason, rej.extra, now, out)
        except RemoteProtocolError as exc:
            self.stats.rejected += 1
            log.info("proxy: %s from %s:%d rejected: %s", method, source[0], source[1], exc.message)
            self._answer(tx, exc.status_hint, exc.message, (), now, out)

    def _route_new(self, tx: ServerTx, request: Request, source: Addr, now: float, out: Out) -> None:
        method = request.method
        ruri = request.request_uri
        # Section 16.3 step 2: URI scheme.
        if not ruri.is_sip:
            raise _Reject(416, "Unsupported URI Scheme")
        # Step 3: Max-Forwards.
        max_forwards = request.max_forwards
        if max_forwards == 0:
            raise _Reject(483, "Too Many Hops")
        # Step 4: loop detection (only requests that already passed us can loop).
        loop_hash = self._loop_hash(request)
        vias = request.vias  # parsed by the parser already
        if len(vias) > 1:
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

        from_peer = self.federation.authenticated_peer(source) is not None
        in_dialog = _has_tag(request.headers.get("To") or "")
        caller_local = False
        if not from_peer and not in_dialog and method not in _NEVER_CHALLENGED:
            self._authenticate(request, source, now)
            caller_local = True

        target = self._resolve(request, ruri, routes, out_of_dialog=not in_dialog, now=now)
        if in_dialog and not self._may_relay(source, from_peer, target, request.call_id, now):
            raise _Reject(403, "In-dialog requests are relayed only for players logged in here")

        extra_headers: tuple[tuple[str, str], ...] = ()
        if method == "INVITE":
            # Section 16.2: 100 Trying at once, so the caller stops retransmitting while we work.
            trying_response = response_for(request, 100)
            mark_received(trying_response.headers, request.top_via, source)
            trying = trying_response.to_bytes()
            tx.last_response = trying
            out.append((trying, source))
            if not in_dialog:
                call = self._call_info(request, source, target, caller_local, from_peer)
                tx.call = call
                verdict = self.hooks.invite_received(call, now)
                if not verdict.ok:
                    extra = (("Warning", verdict.warning),) if verdict.warning else ()
                    raise _Reject(verdict.status, verdict.reason, extra)
                extra_headers = verdict.headers

        fwd = self._forward_copy(request, target, route_popped, max_forwards)
        headers = fwd.headers
        if caller_local:
            self._strip_own_credentials(headers)
            if method == "INVITE" and not in_dialog:
                self._sign_identity(headers, request)
        for name, value in extra_headers:
            headers.add(name, value)
        branch = self._new_branch(loop_hash)
        self._push_via(headers, request, source, branch)
        data = fwd.to_bytes()
        ctx = ClientTx(branch, method, fwd, target.dest, request_bytes=data, server=tx)
        tx.client = ctx
        self.client_txs[(branch, method)] = ctx
        t1 = self.t.t1_s
        ctx.interval = t1
        # Timer A/E (retransmit, UDP) and B/F (give up) (section 17.1.1.2 and 17.1.2.2).
        self.timers.arm(ctx, "A" if method == "INVITE" else "E", now + t1)
        self.timers.arm(ctx, "B" if method == "INVITE" else "F", now + self._timeout_64t1)
        self.stats.forwarded += 1
        out.append((data, target.dest))

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
        return fwd

    def _push_via(self, headers: Headers, request: Request, source: Addr, branch: str) -> None:
        """Section 16.6 step 8: note where the request came from in its Via, then put ours on top."""
        mark_received(headers, request.top_via, source)
        headers.insert_first("Via", self._via(branch))

    def _authenticate(self, request: Request, source: Addr, now: float) -> str:
        from_uri = request.from_.uri
        keys = [f"user:{from_uri.user or ''}", f"addr:{source[0]}"]
        verdict = self.throttle.check(keys, now)
        if verdict.blocked:
            raise _Reject(403, "Too many failed attempts, try later")
        outcome = self.auth.verify(request.headers.get_all("Proxy-Authorization"), request.method, now,
                                   request.uri)
        status = outcome.status
        if status is AuthStatus.OK:
            user = outcome.username or ""
            self.throttle.succeeded([f"user:{user}"])
            if from_uri.host.lower() != self.domain or from_uri.user != user:
                raise _Reject(403, "From does not match the authenticated user")
            return user
        if status is AuthStatus.MALFORMED:
            raise _Reject(400, outcome.reason)
        if status is AuthStatus.FAILED:
            self.stats.auth_failures += 1
            self.throttle.failed(keys, now)
            log.warning("proxy: authentication failed for %r from %s:%d: %s", outcome.username, source[0],
                        source[1], outcome.reason)
            raise _Reject(403, "Wrong user name or password")
        self.stats.challenges += 1
        challenge = tuple(("Proxy-Authenticate", v)
                          for v in self.auth.challenges(now, stale=status is AuthStatus.STALE))
        raise _Reject(407, None, challenge)

    def _sign_identity(self, headers: Headers, request: Request) -> None:
        """RFC 8224 authentication service: the INVITE of a player authenticated here gets this region's
        PASSporT (orig, dest, iat, mky of the offer's channel key); an Identity the player put there is dropped."""
        headers.remove("Identity")
        if self.identity is not None:
            headers.add("Identity", self.identity.sign(request.from_.uri.aor, request.to.uri.aor, request.body))
            self.stats.identities_signed += 1

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
            if params.get("realm") != self.auth.realm:
                headers.add("Proxy-Authorization", value)

    def _resolve(self, request: Request, ruri: SipUri, routes: list[str], *, out_of_dialog: bool,
                 now: float) -> Target:
        """Section 16.5: the target and next hop of a request."""
        if routes:
            # A preloaded route beyond us: send there (loose routing, section 16.12), Request-URI unchanged.
            next_hop = SipUri.parse(routes[0].strip().lstrip("<").split(">", 1)[0])
            return Target(request.uri, self._address_of(next_hop))
        host = ruri.host.lower()
        if self.is_us(ruri):
            if not ruri.user:
                raise _Reject(405, "Method Not Allowed", (("Allow", "REGISTER, OPTIONS, PUBLISH"),))
            aor = f"sip:{ruri.user}@{self.domain}"
            bindings = self.location.lookup(aor, now)
            if not bindings:
                if not self.user_exists(ruri.user):
                    raise _Reject(404, "No such user")
                raise _Reject(480, "Temporarily Unavailable (not logged in)")
            binding = bindings[0]  # no forking (DESIGN section 2): the most recent registration
            return Target(binding.contact, binding.next_hop, local=True, access_network=binding.access_network)
        peer = self.federation.by_domain(host)
        if peer is not None:
            return Target(request.uri, peer.address, peer_domain=peer.domain)
        if is_ip_literal(host):
            # In-dialog requests and ACKs target a player's Contact directly (DESIGN section 2).
            return Target(request.uri, (host.strip("[]"), ruri.port or 5060))
        if out_of_dialog:
            raise _Reject(604, "Does Not Exist Anywhere (unknown domain)")
        raise _Reject(404, "Unknown domain")

    def _may_relay(self, source: Addr, from_peer: bool, target: Target, call_id: str, now: float) -> bool:
        """In-dialog requests and 2xx ACKs are not authenticated (RFC 3261 section 22.1 for ACK; there is no
        challenge in a dialog we are not part of). So they are relayed only from peers, from an address a player
        registered from, to one of our own players, or within a call whose INVITE a player authenticated here:
        never from a stranger to an arbitrary address (the server must not be a reflector)."""
        if from_peer or target.local or self.location.has_source_ip(source[0]):
            return True
        expires = self._dialogs.get(call_id)
        return expires is not None and expires > now

    def _dialog_opened(self, call_id: str, now: float) -> None:
        dialogs = self._dialogs
        dialogs.pop(call_id, None)
        dialogs[call_id] = now + DIALOG_RELAY_S
        # Insertion order is expiry order: drop the expired (and the oldest beyond the cap) from the front.
        while dialogs:
            oldest, expires = next(iter(dialogs.items()))
            if expires > now and len(dialogs) <= MAX_RELAYED_DIALOGS:
                break
            del dialogs[oldest]

    def _address_of(self, uri: SipUri) -> Addr:
        host = uri.host.lower()
        peer = self.federation.by_domain(host)
        if peer is not None:
            return peer.address
        if is_ip_literal(host):
            return (host.strip("[]"), uri.port or 5060)
        raise _Reject(404, "Route to an unknown host")

    def _call_info(self, request: Request, source: Addr, target: Target, caller_local: bool,
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

    def _on_ack(self, request: Request, source: Addr, now: float, out: Out) -> None:
        tx = self.server_txs.get(_server_key(request, "INVITE"))
        if tx is not None and tx.state in (ServerState.COMPLETED, ServerState.CONFIRMED):
            # The ACK for our non-2xx: it ends here (hop by hop, section 17.2.1); Timer I absorbs repeats.
            if tx.state is ServerState.COMPLETED:
                tx.state = ServerState.CONFIRMED
                self.timers.cancel(tx, "G")
                self.timers.cancel(tx, "H")
                self.timers.arm(tx, "I", now + self.t.t4_s)
            return
        # The ACK for a 2xx is end to end: forward it statelessly by Request-URI (section 16.11).
        max_forwards = request.max_forwards
        if max_forwards == 0:
            log.info("proxy: ACK from %s:%d dropped: Max-Forwards 0", *source)
            return
        routes, route_popped = self._routes(request)
        try:
            target = self._resolve(request, request.request_uri, routes, out_of_dialog=False, now=now)
        except _Reject as rej:
            log.info("proxy: ACK for %s dropped: %d %s", request.uri, rej.status, rej.reason or "")
            return
        if not self._may_relay(source, self.federation.authenticated_peer(source) is not None, target,
                               request.call_id, now):
            log.info("proxy: ACK from %s:%d dropped: not a player logged in here", *source)
            return
        fwd = self._forward_copy(request, target, route_popped, max_forwards)
        # Stateless branch: a hash of the incoming one, so a retransmitted ACK gets the same (section 16.11).
        incoming = request.top_via.branch or request.call_id
        branch = BRANCH_MAGIC_COOKIE + "s" + hashlib.blake2s(incoming.encode(), digest_size=9).hexdigest()
        self._push_via(fwd.headers, request, source, branch)
        self.stats.stateless_acks += 1
        out.append((fwd.to_bytes(), target.dest))

    def _on_cancel(self, request: Request, source: Addr, now: float, out: Out) -> None:
        key = _server_key(request, "CANCEL")
        tx = self.server_txs.get(key)
        if tx is not None:
            if tx.last_response is not None:
                out.append((tx.last_response, source))
            return
        tx = ServerTx(key, "CANCEL", request, source)
        self.server_txs[key] = tx
        invite = self.server_txs.get(_server_key(request, "INVITE"))
        if invite is None or invite.method != "INVITE":
            self._answer(tx, 481, "Call/Transaction Does Not Exist", (), now, out)
            return
        # Section 16.10: answer the CANCEL ourselves, then cancel downstream if still pending.
        self._answer(tx, 200, None, (), now, out)
        ctx = invite.client
        if invite.final_status == 0 and ctx is not None and ctx.state in (ClientState.CALLING,
                                                                          ClientState.PROCEEDING):
            if ctx.got_provisional:
                self._send_cancel(ctx, now, out)
            else:
                ctx.cancel_pending = True
        elif invite.final_status == 0:
            self._answer(invite, 487, "Request Terminated", (), now, out)
