"""server/policy/hooks: the policy server wired into the proxy's hook points (``server.hooks.PolicyHooks``), sans-IO.

- INVITE path (``invite_received``): PRELIMINARY for each player of this region in the call (the caller at the
  caller's server, the callee at the callee's, both when they share the region). A refusal answers 580 with
  ``Warning: 370 <domain> "<reason>"``. INVITEs without a game stream (a plain SIPp call) are not policed:
  there is nothing to reserve.
- 2xx path (``answer_received``): FINAL on the **answer**, callee's side first; headers to add:
  ``P-Media-Authorization: <token>`` (RFC 3313) and ``P-Gamesdk-Reservation: <domain>;network=..;up=..;down=..``
  per grant, ``Warning: 370`` and no token on a refusal. A 2xx that already carries a ``Warning: 370`` (the
  callee's server refused) gets no reservation here either (research/protocol.md (c)).
- PUBLISH (``publish_received``): RFC 3903 processing (``server.publish``), then the lifetime operations.
- ``bindings_removed``: the player's reservations from that address end (``reg-expired``).

The access round trip of the other side travels between the servers in ``P-Gamesdk-Access-Rtt`` (added to the
forwarded INVITE by the caller's server and to the 2xx by the callee's server), so each server can check the
whole latency budget: its access + measured transit (federation OPTIONS) + the peer's access. Only the last
value counts: the peer server appends it after anything the player itself put there.

Each SDP body is parsed once per call (research: parsing was 18% of the eu server's CPU when done three times):
the offer's terms from the INVITE path are kept per (Call-ID, From-tag) until the first 2xx or the failure of
the INVITE, at most ``OFFER_CACHE_MAX`` calls and ``OFFER_CACHE_TTL_S`` (64*T1, the INVITE transaction's life,
RFC 3261 17.1.1.2); a miss parses again, so the cache never changes a decision.

Time: the node's ``now`` is its loop's monotonic clock and goes to the policy as is (deadlines, durations); the
wall clock (``wall_clock()``) is passed along where a record starts, so the policy core never reads a clock.

A separate policy process (``[policy] url``) is never called from here: with ``backend=None`` each hook returns a
:class:`~server.hooks.PolicyQuery` (the calls as :class:`~server.policy.queries.PolicyCall` data and how to finish the
verdict), which the node parks and its driver answers over HTTP without blocking the signalling loop. The embedded
policy does the same once the server runs it on its own thread (:meth:`RegionPolicyHooks.use_worker`,
:class:`~server.policy.worker.PolicyWorker`): its database writes and journal fsyncs then never run on the loop
either. Without a worker (sans-IO tests, tools) the embedded policy answers at once.

Durability: a PUBLISH is acknowledged only once what it changes is durable (database or journal) or, with a
separate policy process, applied there. Otherwise it is answered 503 with ``Retry-After`` and its entity-tag is
left as it was, so the player's SDK retries the same PUBLISH.
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol, TypeVar

from gamesdk.address import Address
from gamesdk.errors import GameSdkError
from gamesdk.qos.model import SessionTerms
from gamesdk.qos.model import Side as QosSide
from gamesdk.qos.negotiation import demand
from gamesdk.sdp.codec import parse_sdp_untrusted
from gamesdk.sdp.game import Role, find_game_media, game_from_sdp, quick_game_terms
from gamesdk.sdp.model import SessionDescription
from gamesdk.sip.dialog_info import DialogState, parse_dialog_info_untrusted
from gamesdk.sip.message import Request, Response, response_for
from server.hooks import CallInfo, InviteVerdict, PolicyQuery, QueryAnswer
from server.location import Binding
from server.publish import DialogPublications, PublishRequest, PublishResult

from .bridge import DemandParts, demand_parts
from .config import PolicyConfig
from .lifetime import Activate, PolicyOperation, Release, operations_for_publish
from .model import (
    AppSession,
    Decision,
    Deny,
    DialogRef,
    EndReason,
    Grant,
    Reservation,
    Resource,
    Side,
    new_app_session,
)
from .queries import PolicyCall, answer_now, new_policy_call, policy_fault

__all__ = ["ACCESS_RTT_HEADER", "RESERVATION_HEADER", "PolicyBackend", "RegionPolicyHooks"]

log: Final = logging.getLogger(__name__)

ACCESS_RTT_HEADER: Final = "P-Gamesdk-Access-Rtt"
#: Read by the SDK next to the tokens (gamesdk.session.requests.RESERVATION_HEADER).
RESERVATION_HEADER: Final = "P-Gamesdk-Reservation"
_SDP: Final = "application/sdp"
#: Offers whose terms are kept between the INVITE and its 2xx (bounded; the oldest go first).
OFFER_CACHE_MAX = 4096
OFFER_CACHE_TTL_S = 32.0
#: Requests' parts kept per terms (a few games' texts in practice; emptied when full).
DEMAND_CACHE_MAX: Final = 256
#: Reservation header values kept (a few networks and games' rates in practice; emptied when full).
RESERVATION_VALUES_MAX: Final = 256
#: An event older than this on the driver's clock is not a loop time (see ``RegionPolicyHooks._wall_at``).
MAX_EVENT_AGE_S: Final = 60.0
#: Retry-After of a PUBLISH the policy could not record (RFC 3261 21.5.4): short, the fault is usually brief.
PUBLISH_RETRY_AFTER_S = 1

T = TypeVar("T")
#: An INVITE admitted with no header to add (a value: shared, never changed; a frozen dataclass made per call
#: cost some 10k instructions).
_ADMITTED = InviteVerdict()
_CachedOffer = tuple[bytes, str | None, SessionTerms | None, float]
#: Enum members read per call from module globals: ``Role.OFFER`` and ``QosSide.CALLER`` are attribute lookups on the
#: enum class (its metaclass's, some 500 instructions each on CPython 3.11).
_OFFER: Final = Role.OFFER
_ANSWER: Final = Role.ANSWER
_CALLER: Final = QosSide.CALLER
_CALLEE: Final = QosSide.CALLEE


class PolicyThread(Protocol):
    """Where the embedded policy runs when it has its own thread (:class:`server.policy.worker.PolicyWorker`; the
    hooks stay sans-IO and only hand it work nobody waits for)."""

    def post(self, task: Callable[[Any], None], *, bounded: bool = True) -> bool: ...


class PolicyBackend(Protocol):
    """The synchronous policy API the hooks need: :class:`~server.policy.core.PolicyServer` (embedded). A separate
    policy process is never called from here: the hooks emit :class:`~server.hooks.PolicyQuery` for it."""

    def preliminary(self, request: AppSession, now: float, *, wall: float | None = None) -> Decision: ...

    def final(self, request: AppSession, now: float, *, wall: float | None = None) -> Decision: ...

    def apply(self, op: PolicyOperation, now: float) -> Reservation | None:
        """Raises (``LedgerUnavailable``, ``PolicyUnavailable``) when the change was not made durable."""
        ...

    def release_player(
        self, player: str, now: float, reason: EndReason = EndReason.REG_EXPIRED, *, player_ip: str | None = None
    ) -> list[Reservation]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> list[Reservation]: ...


def _terms_untrusted(body: bytes, content_type: str | None, role: Role,
                     parse: Callable[[bytes], SessionDescription] = parse_sdp_untrusted) -> SessionTerms | None:
    """The game terms of an SDP body; None when there is no game stream at all. Raises GameSdkError if broken.
    (``parse``: the full parser, for the bodies the quick reader leaves to it; tests count its calls.)"""
    if not body or body.isspace():  # (what ``not body.strip()`` says, without the copy)
        return None
    if (content_type is not None and content_type != _SDP
            and content_type.split(";", 1)[0].strip().lower() != _SDP):
        return None
    # The usual body (the SDK's) is read without building the description; anything else, and every fault,
    # goes through the full parser and game reader, so the terms and the errors are theirs.
    terms = quick_game_terms(body, role)
    if terms is not None:
        return terms
    desc = parse(body)
    try:
        find_game_media(desc)
    except GameSdkError:
        return None  # an ordinary (audio) session: not ours to police
    return game_from_sdp(desc, role).terms


class RegionPolicyHooks:
    """Implements ``server.hooks.PolicyHooks`` over a policy backend.

    Args:
        backend: the policy in this process (``PolicyServer``); ``None`` when it is a separate process: every
            decision and operation is then a :class:`~server.hooks.PolicyQuery` the node's driver answers.
        config: the region's policy config (access round trips of its networks).
        domain: this region's domain (Warning agent, reservation header).
        publications: the PUBLISH state (RFC 3903).
        wall_clock: epoch seconds (``time.time``), for the records' start times.
        clock: the node's monotonic clock (the clock of ``now``), when the driver has one: a record is then stamped
            with the wall time of its event, not of the moment the hooks ran after it (a batch, a busy loop).
        tag_factory: To-tags for PUBLISH responses.
        transit_rtt_ms: measured round trip to a peer domain (``node.federation.rtt_ms``), None if unknown.
        player_vanished: ``node.player_vanished``: called when our player's ``terminated`` says the other player
            went silent (``event="timeout"``) and that player is of a peer region, so that region releases it.
        read_terms: an SDP body's game terms (body, Content-Type, role): the SDK's readers by default; tests pass a
            reader that counts the bodies read (a compiled build calls its module functions directly, past any
            patch of the module).
    """

    def __init__(
        self,
        *,
        backend: PolicyBackend | None,
        config: PolicyConfig,
        domain: str,
        publications: DialogPublications,
        wall_clock: Callable[[], float],
        tag_factory: Callable[[], str],
        clock: Callable[[], float] | None = None,
        transit_rtt_ms: Callable[[str], float | None],
        player_vanished: Callable[[str, str, str, str, str, float], None] | None = None,
        read_terms: Callable[[bytes, str | None, Role], SessionTerms | None] = _terms_untrusted,
    ) -> None:
        self.backend = backend
        #: Answers this region's queries: ``HttpQueryRunner`` when the policy is a separate process (set by
        #: ``make_policy_hooks``), the ``PolicyWorker`` thread of the embedded policy (:meth:`use_worker`). The
        #: driver uses it.
        self.runner: object | None = None
        #: The embedded policy's thread, when it has one: every call to ``backend`` then runs there.
        self.worker: PolicyThread | None = None
        self.config = config
        self.domain = domain
        self.publications = publications
        self._wall_clock = wall_clock
        self._clock = clock
        self._tag = tag_factory
        self._transit = transit_rtt_ms
        # (player of the peer region, our player, Call-ID, the vanished player's tag, ours, now): the node tells
        # the peer region (server/peer_notice.py).
        self._player_vanished = player_vanished
        self._read_terms = read_terms
        # (Call-ID, From-tag) -> (offer body, Content-Type, its terms or None, expiry on the node clock).
        self._offers: OrderedDict[tuple[str, str], _CachedOffer] = OrderedDict()
        # (id(offer terms), id(answer terms), caller's side or not) -> (offer terms, answer terms, what a request
        # takes from them). (A bool, not the side: an Enum's hash is a Python call, two per request.)
        self._demands: dict[tuple[int, int, bool], tuple[SessionTerms, SessionTerms | None, DemandParts]] = {}
        # (network, uplink, downlink) -> (domain, the reservation header's value): :meth:`_reservation_value`.
        self._reservation_values: dict[tuple[str, int, int], tuple[str, str]] = {}

    # -- helpers -----------------------------------------------------------------------------------------------

    def use_worker(self, worker: PolicyThread) -> None:
        """Run the embedded policy on ``worker``'s thread from now on: every hook that needs it returns a
        :class:`~server.hooks.PolicyQuery` the driver hands to the worker, and the worker runs its timers."""
        if self.backend is None:
            raise ValueError("a separate policy process is asked over HTTP, not on a thread")
        self.worker = worker
        self.runner = worker

    def reconfigure(self, config: PolicyConfig) -> None:
        """A reloaded region file: the embedded policy server and these hooks use ``config`` from now on (a
        separate policy process reloads its own file)."""
        self.config = config
        reconfigure = getattr(self.backend, "reconfigure", None) if self.backend is not None else None
        if reconfigure is None:
            return
        if self.worker is not None:
            self.worker.post(lambda backend: backend.reconfigure(config), bounded=False)
        else:
            reconfigure(config)

    def _offer_terms(self, call: CallInfo, now: float, *, keep: bool) -> SessionTerms | None:
        """The offer's terms, parsed once per call. Raises GameSdkError if broken (never cached)."""
        key = (call.call_id, call.from_tag or "")
        cached = self._offers.pop(key, None) if not keep else self._offers.get(key)
        # The body must be the same too: a new INVITE reusing the key (a re-INVITE) is parsed afresh.
        if (cached is not None and cached[3] > now and cached[1] == call.content_type
                and (cached[0] is call.offer or cached[0] == call.offer)):
            return cached[2]
        terms = self._read_terms(call.offer, call.content_type, _OFFER)
        if keep:
            offers = self._offers
            offers.pop(key, None)
            offers[key] = (call.offer, call.content_type, terms, now + OFFER_CACHE_TTL_S)
            while offers:
                oldest = next(iter(offers.values()))
                if len(offers) <= OFFER_CACHE_MAX and oldest[3] > now:
                    break
                offers.popitem(last=False)
        return terms

    def _access_rtt(self, address: Address | None) -> int:
        if address is None:
            return 0
        net = self.config.network_for_address(address[0])
        return net.rtt_ms if net is not None else 0

    def _transit_ms(self, call: CallInfo) -> int:
        if call.peer_domain is None or (call.caller_local and call.callee_local):
            return 0
        rtt = self._transit(call.peer_domain)
        return round(rtt) if rtt is not None else 0

    @staticmethod
    def _stated_rtt(values: list[str]) -> int:
        # The LAST value is the peer server's: servers append it, so a value a player put in its own INVITE or
        # 2xx comes first and is ignored.
        if not values:
            return 0
        text = values[-1].strip()
        # ASCII digits only (RFC 5234 B.1 DIGIT): str.isdigit also takes U+00B2, which int() refuses.
        return min(int(text), 10_000) if text.isascii() and text.isdigit() and len(text) <= 6 else 0

    def _request(self, call: CallInfo, offer: SessionTerms, answer: SessionTerms | None, side: QosSide,
                 to_tag: str, peer_rtt: int) -> AppSession:
        caller = side == _CALLER
        address = call.caller_address if caller else call.callee_address
        # The terms of a game's usual texts are shared values (quick_game_terms keeps them), so what the request
        # takes from them is kept too, by the terms' identity (held alive by the entry, so an id is never reused).
        cache_key = (id(offer), id(answer), caller)
        cached = self._demands.get(cache_key)
        if cached is not None and cached[0] is offer and cached[1] is answer:
            parts = cached[2]
        else:
            parts = demand_parts(demand(offer, answer, side))
            if len(self._demands) >= DEMAND_CACHE_MAX:
                self._demands.clear()
            self._demands[cache_key] = (offer, answer, parts)
        policy_side, components, game_format, qos_text = parts
        # (app_session_from_parts's value, made positionally: four per call)
        return new_app_session(call.call_id, call.from_tag or "", to_tag, policy_side,
                               call.caller if caller else call.callee, call.callee if caller else call.caller,
                               address[0] if address is not None else "", components, self._transit_ms(call),
                               peer_rtt, game_format, qos_text)

    def _ask(self, calls: list[PolicyCall], finish: Callable[[QueryAnswer], T], now: float,
             purpose: str) -> T | PolicyQuery[T]:
        """Ask the policy: at once when it runs in this process, else as a query the node's driver answers."""
        backend = self.backend
        if backend is None or self.worker is not None:
            return PolicyQuery(tuple(calls), finish, purpose=purpose, now=now, wall=self._wall_at(now))
        return finish(answer_now(backend, tuple(calls), now, self._wall_at(now)))

    def _wall_at(self, now: float) -> float:
        """The wall time of the event the node saw at ``now``.

        A record's wall offset is taken here, so two regions that saw one end at the same moment stamp it alike
        only if the time the message waited before the hooks ran (the rest of a batch, a preempted process) is
        taken off. A ``now`` that is not on the driver's clock (a test's fake clock) is left as it is.
        """
        wall = self._wall_clock()
        if self._clock is not None:
            waited = self._clock() - now
            if 0.0 < waited < MAX_EVENT_AGE_S:
                wall -= waited
        return wall

    def _reservation_value(self, grant: Grant) -> str:
        """The ``P-Gamesdk-Reservation`` value of ``grant``: the same text for every grant of a network and a game's
        rates (both sides of a call, call after call), kept by those values (bounded)."""
        key = (grant.network, grant.uplink_kbps, grant.downlink_kbps)
        kept = self._reservation_values.get(key)
        domain = self.domain
        if kept is not None and kept[0] == domain:
            return kept[1]
        value = f"{domain};network={grant.network};up={grant.uplink_kbps};down={grant.downlink_kbps}"
        if len(self._reservation_values) >= RESERVATION_VALUES_MAX:
            self._reservation_values.clear()
        self._reservation_values[key] = (domain, value)
        return value

    def _warning(self, deny: Deny) -> tuple[str, str]:
        return ("Warning", deny.warning_value(self.domain))

    # -- INVITE path -------------------------------------------------------------------------------------------

    def invite_received(self, call: CallInfo, now: float) -> InviteVerdict | PolicyQuery[InviteVerdict]:
        if not (call.caller_local or call.callee_local):
            return InviteVerdict()
        try:
            offer = self._offer_terms(call, now, keep=True)
        except GameSdkError as exc:
            text = str(exc).replace('"', "'")
            return InviteVerdict(ok=False, status=488, reason="Not Acceptable Here",
                                 warning=f'399 {self.domain} "{text}"')
        if offer is None:
            return InviteVerdict()
        caller_rtt = self._access_rtt(call.caller_address) if call.caller_local else None
        callee_rtt = self._access_rtt(call.callee_address) if call.callee_local else None
        if call.callee_local and caller_rtt is None and call.invite is not None:
            # The caller's server stated its player's access round trip (we only get INVITEs from peers here).
            caller_rtt = self._stated_rtt(call.invite.headers.get_all(ACCESS_RTT_HEADER))
        checks: list[tuple[QosSide, int]] = []
        if call.caller_local:
            checks.append((_CALLER, callee_rtt or 0))
        if call.callee_local:
            checks.append((_CALLEE, caller_rtt or 0))
        calls = [new_policy_call("preliminary", self._request(call, offer, None, side, "", peer_rtt), None, "", None)
                 for side, peer_rtt in checks]
        headers: tuple[tuple[str, str], ...] = ()
        if call.caller_local and not call.callee_local:
            headers = ((ACCESS_RTT_HEADER, str(caller_rtt or 0)),)

        def finish(answer: QueryAnswer) -> InviteVerdict:
            for decision in answer.results:
                if isinstance(decision, Deny):
                    log.info("INVITE %s refused: %s", call.call_id, decision.reason)
                    return InviteVerdict(ok=False, status=decision.status_hint, reason="Precondition Failure",
                                         warning=decision.warning_value(self.domain))
            if answer.error is not None or len(answer.results) < len(calls):
                # The service could not be asked (too many queries under way): back-pressure, not a refusal of
                # this session; the caller's UA may try again after Retry-After (RFC 3261 21.5.4).
                deny = policy_fault(answer.error or "policy server error")
                return InviteVerdict(ok=False, status=503, reason="Policy service busy",
                                     warning=deny.warning_value(self.domain), retry_after=PUBLISH_RETRY_AFTER_S)
            return InviteVerdict(headers=headers) if headers else _ADMITTED

        return self._ask(calls, finish, now, "invite")

    # -- 2xx path ----------------------------------------------------------------------------------------------

    def answer_received(self, call: CallInfo, response: Response,
                        now: float) -> list[tuple[str, str]] | PolicyQuery[list[tuple[str, str]]]:
        if not (call.caller_local or call.callee_local) or not 200 <= response.status < 300:
            return []
        try:
            offer = self._offer_terms(call, now, keep=False)  # the transaction ends with this 2xx
        except GameSdkError:
            return []  # refused on the INVITE path already; nothing was checked, nothing to reserve
        if offer is None:
            return []
        if not call.callee_local and _has_policy_warning(response):
            return []  # the callee's server refused: the caller will BYE; we hold nothing (research (c))
        to_tag = response.to.tag or ""
        problem = "the 2xx carries no game answer"
        try:
            answer = self._read_terms(response.body, response.content_type, _ANSWER)
        except GameSdkError as exc:
            answer, problem = None, f"no usable game answer in the 2xx: {exc}"
        if answer is None:
            # Still a 2xx to forward (RFC 3261 16.7): without a token and with the reason, the caller BYEs.
            return [self._warning(Deny(network=None, resource=Resource.REQUEST, reason=problem))]
        caller_rtt = self._access_rtt(call.caller_address) if call.caller_local else 0
        callee_rtt = self._access_rtt(call.callee_address) if call.callee_local else 0
        if call.caller_local and not call.callee_local:
            callee_rtt = self._stated_rtt(response.headers.get_all(ACCESS_RTT_HEADER))
        # The callee's side first (DESIGN section 4), then the caller's; one refusal stops the rest.
        order = [(_CALLEE, caller_rtt)] if call.callee_local else []
        if call.caller_local:
            order.append((_CALLER, callee_rtt))
        calls = [new_policy_call("final", self._request(call, offer, answer, side, to_tag, peer_rtt), None, "", None)
                 for side, peer_rtt in order]

        def finish(reply: QueryAnswer) -> list[tuple[str, str]]:
            headers: list[tuple[str, str]] = []
            results = list(reply.results)
            if len(results) < len(calls) and not any(isinstance(r, Deny) for r in results):
                results.append(policy_fault(reply.error or "policy server error"))
            for decision in results:
                if isinstance(decision, Grant):
                    headers.append(("P-Media-Authorization", decision.token or ""))
                    headers.append((RESERVATION_HEADER, self._reservation_value(decision)))
                elif isinstance(decision, Deny):
                    log.info("2xx of %s: reservation refused: %s", call.call_id, decision.reason)
                    headers.append(self._warning(decision))
                    break
            if call.callee_local and not call.caller_local:
                headers.append((ACCESS_RTT_HEADER, str(callee_rtt)))
            return headers

        return self._ask(calls, finish, now, "answer")

    def invite_failed(self, call: CallInfo, status: int, now: float) -> None:
        # PRELIMINARY holds nothing (DESIGN section 4), so a failed INVITE leaves nothing to release.
        self._offers.pop((call.call_id, call.from_tag or ""), None)

    # -- PUBLISH -----------------------------------------------------------------------------------------------

    def publish_received(self, request: Request, user: str, source: Address,
                         now: float) -> Response | PolicyQuery[Response]:
        aor = request.request_uri.aor
        try:
            expires = request.expires
        except GameSdkError as exc:
            return response_for(request, 400, str(exc), to_tag=self._tag())
        result = self.publications.handle(
            PublishRequest(
                aor=aor,
                event=request.headers.get("Event"),
                expires=expires,
                if_match=request.headers.get("SIP-If-Match"),
                content_type=request.content_type,
                body=request.body,
            ),
            now,
        )
        extra = list(result.headers())
        if not result.ok:
            return response_for(request, result.status, result.reason, to_tag=self._tag(), extra=extra)
        ops = operations_for_publish(result, aor)

        def finish(answer: QueryAnswer) -> Response:
            if answer.error is not None or len(answer.results) < len(ops):
                # Not applied, so not acknowledged: the entity-tag stays as it was and the SDK sends it again.
                # (Operations applied before the failure are idempotent when the PUBLISH comes again.)
                self.publications.undo(result)
                log.warning("PUBLISH from %s not applied (answered 503, retried by the player): %s", aor,
                            answer.error)
                return response_for(request, 503, "Policy update not recorded, try again", to_tag=self._tag(),
                                    extra=[("Retry-After", str(PUBLISH_RETRY_AFTER_S))])
            headers = list(extra)
            self._tell_peer_regions(result, ops, answer.results, now)
            for op, held in zip(ops, answer.results, strict=True):
                if held is None:
                    log.info("PUBLISH from %s names no reservation of its own (%s)", aor, op.ref.call_id)
                elif isinstance(op, Activate) and isinstance(held, Reservation):
                    # The 200 to the "confirmed" PUBLISH is how the callee learns what its own region
                    # reserved: the headers this region adds to the 2xx travel on to the caller only.
                    grant = held.grant
                    headers.append(("P-Media-Authorization", grant.token or ""))
                    headers.append((RESERVATION_HEADER, self._reservation_value(grant)))
            return response_for(request, result.status, result.reason, to_tag=self._tag(), extra=headers)

        if not ops:
            return finish(QueryAnswer())
        return self._ask([PolicyCall("apply", op=op) for op in ops], finish, now, "publish")

    def _tell_peer_regions(self, result: PublishResult, ops: list[PolicyOperation], held: tuple[object, ...],
                           now: float) -> None:
        """Our player lost the other one (``terminated`` with ``event="timeout"``): if that player is of a peer
        region, tell it, so it stops holding and billing a player who is gone (a crashed game sends nothing); if
        it is one of ours, release it here (the embedded policy; a separate process waits for the lease)."""
        if result.info is None:
            return
        lost = {d.call_id for d in result.info.dialogs
                if d.state is DialogState.TERMINATED and d.event == "timeout" and d.call_id}
        if not lost:
            return
        for op, res in zip(ops, held, strict=False):
            if not isinstance(op, Release) or not isinstance(res, Reservation) or res.key.call_id not in lost:
                continue
            request = res.request
            # The caller's reservation is keyed by the callee's To-tag; the callee's by its own.
            peer_tag, our_tag = ((res.key.to_tag, request.from_tag) if res.key.side is Side.ORIG
                                 else (request.from_tag, res.key.to_tag))
            if _domain_of(request.peer) != self.domain.lower():
                if self._player_vanished is not None:
                    self._player_vanished(request.peer, request.player, res.key.call_id, peer_tag, our_tag, now)
                continue
            if self.backend is None:
                continue
            ref = DialogRef(call_id=res.key.call_id, local_tag=peer_tag, remote_tag=our_tag, player=request.peer)
            release = Release(ref=ref, reason=EndReason.PEER_REGION,
                              sip_reason=f"{request.player}: the player went silent", peer_domain=self.domain)
            if self.worker is not None:
                # On the policy thread, at this PUBLISH's time; nobody waits for it (its lease ends it otherwise).
                who = (request.player, request.peer)
                self.worker.post(functools.partial(_release_vanished, op=release, now=now, who=who))
                continue
            _release_vanished(self.backend, release, now, (request.player, request.peer))

    def peer_publish_received(self, request: Request, peer_domain: str,
                              now: float) -> Response | PolicyQuery[Response]:
        """A peer region reports that our player went silent in a session with one of its players: release that
        reservation now, billed ``peer-region`` (see server/peer_notice.py). Only terminated dialogs count, and only
        sessions whose other player is of ``peer_domain``."""
        try:
            info = parse_dialog_info_untrusted(request.body)
        except GameSdkError as exc:
            return response_for(request, 400, str(exc), to_tag=self._tag())
        aor = request.request_uri.aor
        ops: list[PolicyOperation] = [
            Release(ref=DialogRef(call_id=d.call_id, local_tag=d.local_tag, remote_tag=d.remote_tag, player=aor),
                    reason=EndReason.PEER_REGION, sip_reason=f"{peer_domain}: the player went silent",
                    peer_domain=peer_domain)
            for d in info.dialogs
            if d.state is DialogState.TERMINATED and d.call_id and d.local_tag and d.remote_tag
        ]

        def finish(answer: QueryAnswer) -> Response:
            if answer.error is not None or len(answer.results) < len(ops):
                return response_for(request, 503, "Not recorded, try again", to_tag=self._tag(),
                                    extra=[("Retry-After", str(PUBLISH_RETRY_AFTER_S))])
            released = sum(1 for r in answer.results if r is not None)
            if released:
                log.info("%s reported that %s went silent: released %d reservation(s)", peer_domain, aor, released)
            return response_for(request, 200, "OK", to_tag=self._tag())

        if not ops:
            return finish(QueryAnswer())
        return self._ask([PolicyCall("apply", op=op) for op in ops], finish, now, "peer")

    # -- registrations -----------------------------------------------------------------------------------------

    def bindings_removed(self, bindings: Sequence[Binding], now: float) -> PolicyQuery[None] | None:
        if not bindings:
            return None
        calls = [PolicyCall("release_player", player=b.aor, player_ip=b.source[0]) for b in bindings]

        def finish(answer: QueryAnswer) -> None:
            for call, released in zip(calls, answer.results, strict=False):
                if released:
                    log.info("registration of %s at %s ended: released %s reservation(s)", call.player,
                             call.player_ip, released)
            if answer.error is not None:
                log.warning("releasing the sessions of ended registrations failed: %s", answer.error)

        asked = self._ask(calls, finish, now, "release")
        return asked if isinstance(asked, PolicyQuery) else None

    # -- timers ------------------------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        deadlines = []
        # The policy's own timers run where the policy runs: here, or on its worker thread.
        when = self.backend.get_timer() if self.backend is not None and self.worker is None else None
        if when is not None:
            deadlines.append(when)
        esc = self.publications.get_timer()
        if esc is not None:
            deadlines.append(esc)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        self.publications.handle_timer(now)
        if self.backend is None or self.worker is not None:
            return  # a separate policy process, or the policy's thread, runs its own timers
        try:
            self.backend.handle_timer(now)
        except Exception:
            # Logged, not raised: the node's other timers must still run. The core never loses a release to a
            # failed write (it journals and retries), so this is a bug, not a write fault.
            log.exception("policy timers failed")


def _release_vanished(backend: PolicyBackend, op: Release, now: float, who: tuple[str, str]) -> None:
    """Release ``op`` (the other player of ``who[0]``'s session went silent); a failure is logged, never raised."""
    try:
        gone = backend.apply(op, now)
    except Exception as exc:  # noqa: BLE001 - its lease still ends it; this only ends it sooner
        log.warning("releasing %s after %s saw it gone failed: %s", who[1], who[0], exc)
        return
    if gone is not None:
        log.info("%s saw %s gone: released its reservation", who[0], who[1])


def _has_policy_warning(response: Response) -> bool:
    try:
        return any(w.code == 370 for w in response.warnings)
    except GameSdkError:
        return False


def _domain_of(aor: str) -> str:
    return aor.rpartition("@")[2].split(";", 1)[0].split(">", 1)[0].strip().lower()
