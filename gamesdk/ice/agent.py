"""A sans-IO ICE agent (RFC 8445, full implementation, one component, UDP) with consent freshness (RFC 7675).

One agent serves one game session and owns one UDP socket's worth of traffic: the driver hands it every datagram
(:meth:`IceAgent.receive`) and sends what :meth:`IceAgent.datagrams_to_send` returns, all from the same socket. What
is not STUN or TURN comes back out of :meth:`receive` as ``(payload, peer address)`` for the game channel; TURN
ChannelData is told from our channel's packets by the 5-tuple (only the TURN server's address sends ChannelData;
RFC 9443 resolves QUIC's identical overlap the same way). The channel's datagrams go back through :meth:`wrap`,
which relays them when the selected pair is relayed.

Time comes in as ``now``; randomness (transaction ids, tie-breaker, consent jitter) from ``random_bytes``.

Life cycle::

    agent = IceAgent(controlling=True, local_addr=sock_addr, stun_servers=[...], turn_servers=[...], ...)
    agent.gather(now)                  # host at once; srflx/relay when the servers answer
    ... until agent.gathering_done     # then agent.local_candidates go into the SDP
    agent.set_remote(ufrag, pwd, candidates, now)
    ... events: Connected(pair) -> channel runs on agent.selected; Failed(reason); ConsentLost; ConsentRestored
"""

from __future__ import annotations

import hmac
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gamesdk.address import Address
from gamesdk.ice import stun
from gamesdk.ice.candidate import Candidate, candidate_priority, foundation_for
from gamesdk.ice.servers import TurnServer
from gamesdk.ice.turn import TurnAllocation, TurnState

__all__ = ["CandidatePair", "Connected", "ConsentLost", "ConsentRestored", "Failed", "IceAgent", "IceConfig",
           "IceEvent", "PairState"]

#: The related address of a relayed candidate when the player hides its address (RFC 8839 section 5.1: "for
#: privacy reasons ... the address MUST be set to 0.0.0.0 ... and the port to 9"); it would be the player's
#: public address otherwise (the mapped address of the Allocate answer).
HIDDEN_RELATED: Address = ("0.0.0.0", 9)


@dataclass(frozen=True, slots=True)
class IceConfig:
    """Timers. Ta = 20 ms paces new checks (RFC 8445 section 14.2 allows less than 50 ms for few pairs)."""

    ta_s: float = 0.02
    #: First retransmission of a check; doubles up to ``max_rto_s``. RFC 8445 leaves it to the agent; 100 ms
    #: keeps a dropped first check (the peer's NAT not yet open) from costing half a second.
    rto_s: float = 0.1
    max_rto_s: float = 1.6
    check_tries: int = 7
    #: A relayed pair is nominated only once no direct pair can still succeed, or after this long.
    relay_grace_s: float = 1.0
    #: Gathering stops waiting for silent STUN/TURN servers after this long.
    gather_timeout_s: float = 3.0
    #: ICE gives up when nothing is selected this long after the remote candidates arrived.
    connect_timeout_s: float = 10.0
    consent_interval_s: float = 5.0
    consent_timeout_s: float = 30.0


class PairState:
    FROZEN = "frozen"
    WAITING = "waiting"
    IN_PROGRESS = "in-progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(slots=True, eq=False)
class CandidatePair:
    """A local base (host socket or one TURN allocation) and a remote candidate."""

    local: Candidate
    remote: Candidate
    #: The TURN allocation the pair sends through, or None for the host socket.
    relay: TurnAllocation | None
    state: str = PairState.FROZEN
    nominated: bool = False
    #: Controlled side: a USE-CANDIDATE check arrived before our own check succeeded.
    nominate_on_success: bool = False
    priority: int = 0

    @property
    def foundation(self) -> tuple[str, str]:
        return self.local.foundation, self.remote.foundation

    @property
    def relayed(self) -> bool:
        return self.relay is not None or self.remote.kind == "relay"

    def __repr__(self) -> str:
        return (f"CandidatePair({self.local.kind} {self.local.host}:{self.local.port} -> {self.remote.kind} "
                f"{self.remote.host}:{self.remote.port}, {self.state}{', nominated' if self.nominated else ''})")


class IceEvent:
    """Base class of the agent's events."""


@dataclass(frozen=True, slots=True)
class Connected(IceEvent):
    """A pair was nominated: the game channel runs on it from now on."""

    pair: CandidatePair
    #: "direct" or "relayed".
    path: str


@dataclass(frozen=True, slots=True)
class Failed(IceEvent):
    reason: str


@dataclass(frozen=True, slots=True)
class ConsentLost(IceEvent):
    """No consent answer for ``consent_timeout_s``: stop sending on the pair (RFC 7675 section 5.1)."""


@dataclass(frozen=True, slots=True)
class ConsentRestored(IceEvent):
    pass


@dataclass(slots=True)
class _Check:
    pair: CandidatePair
    message: stun.Message
    data: bytes
    sent_at: float
    rto: float
    tries: int = 1
    nominating: bool = False
    consent: bool = False


@dataclass(slots=True)
class _StunQuery:
    server: Address
    data: bytes
    sent_at: float
    rto: float
    tries: int = 1


@dataclass(slots=True)
class _Stats:
    checks_sent: int = 0
    checks_received: int = 0
    triggered: int = 0
    role_conflicts: int = 0
    bad_integrity: int = 0
    unknown_stun: int = 0
    relayed_in: int = 0
    relayed_out: int = 0
    fields: dict[str, int] = field(default_factory=dict)


class IceAgent:
    """One ICE agent (RFC 8445). See the module docstring for the driving contract."""

    def __init__(self, *, controlling: bool, local_addr: Address, random_bytes: Callable[[int], bytes],
                 stun_servers: Iterable[Address] = (), turn_servers: Iterable[TurnServer] = (),
                 relay_only: bool = False, host_addrs: Iterable[str] = (), config: IceConfig | None = None) -> None:
        self.config = config or IceConfig()
        self.controlling = controlling
        self.local_addr: Address = (local_addr[0], local_addr[1])
        self._random = random_bytes
        self.tie_breaker = int.from_bytes(random_bytes(8), "big")
        self.local_ufrag = random_bytes(6).hex()
        self.local_pwd = random_bytes(16).hex()
        self.relay_only = relay_only
        self._stun_servers = [(s[0], s[1]) for s in stun_servers]
        self._turns = [TurnAllocation(server, random_bytes) for server in turn_servers]
        self._turn_by_addr = {t.server.address: t for t in self._turns}
        hosts = list(host_addrs) or [self.local_addr[0]]
        self.local_candidates: list[Candidate] = []
        if not relay_only:
            for i, host in enumerate(hosts):
                self.local_candidates.append(Candidate(
                    foundation=foundation_for("host", host), priority=candidate_priority("host", 65535 - i),
                    host=host, port=self.local_addr[1], kind="host"))
        self._host_candidate = Candidate(foundation=foundation_for("host", hosts[0]),
                                         priority=candidate_priority("host"), host=hosts[0], port=self.local_addr[1],
                                         kind="host")
        self._relay_candidates: dict[int, Candidate] = {}
        self._queries: dict[bytes, _StunQuery] = {}
        self._gather_started: float | None = None
        self._gather_deadline: float | None = None
        self.gathering_done = False

        self.remote_ufrag = ""
        self.remote_pwd = ""
        self.remote_candidates: list[Candidate] = []
        self._remote_set = False
        self.pairs: list[CandidatePair] = []
        self._triggered: deque[CandidatePair] = deque()
        self._checks: dict[bytes, _Check] = {}
        self._next_check_at: float | None = None
        self._connect_deadline: float | None = None
        self._first_valid_relay_at: float | None = None
        self.selected: CandidatePair | None = None
        self.failed = False
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[IceEvent] = deque()
        # consent freshness
        self._consent_at: float | None = None
        self._consent_expires: float | None = None
        self.consent = True
        self.stats = _Stats()

    # -- gathering -------------------------------------------------------------------------------------------

    def gather(self, now: float) -> None:
        """Ask every STUN server for our server-reflexive address and allocate at every TURN server."""
        self._gather_started = now
        self._gather_deadline = now + self.config.gather_timeout_s
        if not self.relay_only:
            for server in self._stun_servers:
                message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, transaction_id=self._random(12))
                message.add_fingerprint()
                data = bytes(message)
                self._queries[message.transaction_id] = _StunQuery(server, data, now, self.config.rto_s)
                self._out.append((data, server))
        for turn in self._turns:
            turn.start(now)
            self._flush_turn(turn)
        self._check_gathering(now)

    def _check_gathering(self, now: float) -> None:
        if self.gathering_done:
            return
        pending = bool(self._queries) or any(t.state == TurnState.ALLOCATING for t in self._turns)
        if pending and not (self._gather_deadline is not None and now >= self._gather_deadline):
            return
        self.gathering_done = True
        self._queries.clear()
        for turn in self._turns:
            if turn.state == TurnState.READY and turn.relayed is not None:
                self._add_relay_candidate(turn)
        self._pair_up(now)

    def _add_relay_candidate(self, turn: TurnAllocation) -> None:
        assert turn.relayed is not None
        if id(turn) in self._relay_candidates:
            return
        index = self._turns.index(turn)
        candidate = Candidate(foundation=foundation_for("relay", turn.relayed[0], turn.server.host),
                              priority=candidate_priority("relay", 65535 - index), host=turn.relayed[0],
                              port=turn.relayed[1], kind="relay",
                              related=HIDDEN_RELATED if self.relay_only else turn.mapped)
        self._relay_candidates[id(turn)] = candidate
        self.local_candidates.append(candidate)

    def _add_srflx(self, mapped: Address, server: Address) -> None:
        if any(c.address == mapped for c in self.local_candidates):
            return  # not behind a NAT toward this server: the host candidate says it all
        self.local_candidates.append(Candidate(
            foundation=foundation_for("srflx", self.local_addr[0], server[0]), priority=candidate_priority("srflx"),
            host=mapped[0], port=mapped[1], kind="srflx", related=self.local_addr))

    @property
    def default_candidate(self) -> Candidate:
        """What goes in c=/m= (RFC 8839 section 4.2.1.2): relay when offered, else srflx, else host."""
        for kind in ("relay", "srflx", "host"):
            for candidate in self.local_candidates:
                if candidate.kind == kind:
                    return candidate
        return self._host_candidate

    # -- remote side -----------------------------------------------------------------------------------------

    def set_remote(self, ufrag: str, pwd: str, candidates: Iterable[Candidate], now: float) -> None:
        """The peer's ``a=ice-ufrag``, ``a=ice-pwd`` and candidates (all of them: no trickle)."""
        self.remote_ufrag, self.remote_pwd = ufrag, pwd
        for candidate in candidates:
            if all(c.address != candidate.address for c in self.remote_candidates):
                self.remote_candidates.append(candidate)
        self._remote_set = True
        self._connect_deadline = now + self.config.connect_timeout_s
        self._pair_up(now)

    def _bases(self) -> list[tuple[Candidate, TurnAllocation | None]]:
        bases: list[tuple[Candidate, TurnAllocation | None]] = []
        if not self.relay_only:
            bases.append((self._host_candidate, None))
        for turn in self._turns:
            candidate = self._relay_candidates.get(id(turn))
            if candidate is not None:
                bases.append((candidate, turn))
        return bases

    def _pair_priority(self, local: Candidate, remote: Candidate) -> int:
        g, d = (local.priority, remote.priority) if self.controlling else (remote.priority, local.priority)
        return (1 << 32) * min(g, d) + 2 * max(g, d) + (1 if g > d else 0)

    def _pair_up(self, now: float) -> None:
        if not (self._remote_set and self.gathering_done):
            return
        known = {(p.local.address, p.remote.address) for p in self.pairs}
        for local, relay in self._bases():
            for remote in self.remote_candidates:
                if (local.address, remote.address) in known:
                    continue
                if (":" in local.host) != (":" in remote.host):
                    continue
                pair = CandidatePair(local, remote, relay)
                pair.priority = self._pair_priority(local, remote)
                self.pairs.append(pair)
                known.add((local.address, remote.address))
                if relay is not None:
                    relay.permit(remote.host, now)
                    self._flush_turn(relay)
        self.pairs.sort(key=lambda p: p.priority, reverse=True)
        # RFC 8445 section 6.1.2.6: per foundation the highest-priority pair starts Waiting, the rest Frozen
        seen: set[tuple[str, str]] = {p.foundation for p in self.pairs if p.state != PairState.FROZEN}
        for pair in self.pairs:
            if pair.state == PairState.FROZEN and pair.foundation not in seen:
                pair.state = PairState.WAITING
                seen.add(pair.foundation)
        if self._next_check_at is None:
            self._next_check_at = now

    # -- checks ----------------------------------------------------------------------------------------------

    def _send_check(self, pair: CandidatePair, now: float, *, nominate: bool = False, consent: bool = False) -> None:
        if pair.relay is not None and not pair.relay.has_permission(pair.remote.host):
            pair.relay.permit(pair.remote.host, now)
            self._flush_turn(pair.relay)
        attributes: dict[str, object] = {
            "USERNAME": f"{self.remote_ufrag}:{self.local_ufrag}",
            "PRIORITY": candidate_priority("prflx"),
        }
        attributes["ICE-CONTROLLING" if self.controlling else "ICE-CONTROLLED"] = self.tie_breaker
        if nominate:
            attributes["USE-CANDIDATE"] = None
        message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, transaction_id=self._random(12),
                               attributes=attributes)
        message.add_message_integrity(self.remote_pwd.encode())
        data = bytes(message)
        self._checks[message.transaction_id] = _Check(pair, message, data, now, self.config.rto_s,
                                                      nominating=nominate, consent=consent)
        if pair.state in (PairState.WAITING, PairState.FROZEN):
            pair.state = PairState.IN_PROGRESS
        self.stats.checks_sent += 1
        self._send_on(pair, data)

    def _send_on(self, pair: CandidatePair, data: bytes) -> None:
        if pair.relay is not None:
            self.stats.relayed_out += 1
            self._out.append((pair.relay.wrap(data, pair.remote.address), pair.relay.server.address))
        else:
            self._out.append((data, pair.remote.address))

    def _next_ordinary(self) -> CandidatePair | None:
        for pair in self.pairs:
            if pair.state == PairState.WAITING:
                return pair
        for pair in self.pairs:
            if pair.state == PairState.FROZEN:
                return pair
        return None

    def _tick_checks(self, now: float) -> None:
        if self._next_check_at is None or now < self._next_check_at or self.selected is not None or self.failed:
            return
        pair: CandidatePair | None = None
        while self._triggered:
            candidate = self._triggered.popleft()
            if candidate.state != PairState.FAILED or candidate.nominate_on_success:
                pair = candidate
                break
        if pair is None:
            pair = self._next_ordinary()
        if pair is None:
            self._next_check_at = None
            return
        self._send_check(pair, now)
        self._next_check_at = now + self.config.ta_s

    def _trigger(self, pair: CandidatePair, now: float) -> None:
        # RFC 8445 section 7.3.1.4: a check from the peer on a pair makes us check it too, at once (this is what
        # gets the answer through the peer's NAT, which has just opened toward us).
        if pair.state == PairState.SUCCEEDED:
            return
        self.stats.triggered += 1
        if pair.state == PairState.FAILED:
            pair.state = PairState.WAITING
        if self.selected is None and not self.failed:
            self._send_check(pair, now)

    # -- input -----------------------------------------------------------------------------------------------

    def receive(self, data: bytes, source: Address, now: float) -> tuple[bytes, Address] | None:
        """One datagram from the socket. Returns ``(payload, peer)`` for the game channel, or None (consumed)."""
        source = (source[0], source[1])
        turn = self._turn_by_addr.get(source)
        if turn is not None:
            relayed = turn.receive(data, now)
            self._flush_turn(turn)
            if turn.state != TurnState.ALLOCATING:
                self._check_gathering(now)
            if relayed is None:
                return None
            payload, peer = relayed
            self.stats.relayed_in += 1
            if payload and payload[0] < 4:
                self._on_stun(payload, peer, turn, now)
                return None
            return payload, peer
        if data and data[0] < 4:
            self._on_stun(data, source, None, now)
            return None
        if self.relay_only:
            return None  # nothing reaches the game directly: our host address is not offered
        return data, source

    def _on_stun(self, data: bytes, source: Address, via: TurnAllocation | None, now: float) -> None:
        message = stun.parse_untrusted(data)
        if message is None or message.message_method != stun.Method.BINDING:
            self.stats.unknown_stun += 1
            return
        if message.message_class == stun.Class.REQUEST:
            self._on_check(message, source, via, now)
        elif message.message_class in (stun.Class.RESPONSE, stun.Class.ERROR):
            query = self._queries.pop(message.transaction_id, None)
            if query is not None and via is None:
                mapped = message.attributes.get("XOR-MAPPED-ADDRESS")
                if message.message_class == stun.Class.RESPONSE and mapped is not None and source == query.server:
                    self._add_srflx((mapped[0], mapped[1]), query.server)
                self._check_gathering(now)
                return
            self._on_check_answer(message, source, via, now)

    def _on_check(self, message: stun.Message, source: Address, via: TurnAllocation | None, now: float) -> None:
        username = message.attributes.get("USERNAME", "")
        if not self.remote_set_or_early(username) or not message.check_message_integrity(self.local_pwd.encode()):
            self.stats.bad_integrity += 1
            return  # RFC 8445 section 7.3: not for us (or forged): no answer at all
        if via is None and self.relay_only:
            return  # never answer from our host address: it would tell the peer where we are
        self.stats.checks_received += 1
        theirs_controlling = "ICE-CONTROLLING" in message.attributes
        their_tie = message.attributes.get("ICE-CONTROLLING" if theirs_controlling else "ICE-CONTROLLED", 0)
        if theirs_controlling == self.controlling:
            # role conflict (RFC 8445 section 7.3.1.1)
            self.stats.role_conflicts += 1
            we_win = self.tie_breaker >= their_tie
            if we_win:
                self._answer(message, source, via, error=(487, "Role Conflict"))
                return
            self._switch_role(now)
        self._answer(message, source, via)
        if not self._remote_set:
            return  # checks before the answer arrived: answered (opens the path), paired once we know the peer
        pair = self._pair_for(source, via, message, now)
        if pair is None:
            return
        if "USE-CANDIDATE" in message.attributes and not self.controlling:
            if pair.state == PairState.SUCCEEDED:
                self._nominated(pair, now)
            else:
                pair.nominate_on_success = True
        if self.selected is not None and pair is self.selected:
            return  # a consent check: answered, nothing else to do
        self._trigger(pair, now)

    def remote_set_or_early(self, username: str) -> bool:
        # USERNAME is "<our ufrag>:<their ufrag>"; before the answer we only know our half.
        ours, _, theirs = username.partition(":")
        if not hmac.compare_digest(ours, self.local_ufrag):
            return False
        return not self._remote_set or hmac.compare_digest(theirs, self.remote_ufrag)

    def _pair_for(self, source: Address, via: TurnAllocation | None, message: stun.Message,
                  now: float) -> CandidatePair | None:
        local_address = (self._relay_candidates[id(via)].address if via is not None and id(via) in
                         self._relay_candidates else self._host_candidate.address)
        for pair in self.pairs:
            if pair.remote.address == source and pair.local.address == local_address and pair.relay is via:
                return pair
        if not self.gathering_done:
            return None
        # peer-reflexive remote candidate (RFC 8445 section 7.3.1.3)
        priority = int(message.attributes.get("PRIORITY", candidate_priority("prflx")))
        remote = Candidate(foundation=foundation_for("prflx", source[0]), priority=priority, host=source[0],
                           port=source[1], kind="prflx")
        self.remote_candidates.append(remote)
        local = self._relay_candidates.get(id(via)) if via is not None else self._host_candidate
        if local is None:
            return None
        pair = CandidatePair(local, remote, via, state=PairState.WAITING)
        pair.priority = self._pair_priority(local, remote)
        self.pairs.append(pair)
        self.pairs.sort(key=lambda p: p.priority, reverse=True)
        return pair

    def _answer(self, request: stun.Message, source: Address, via: TurnAllocation | None, *,
                error: tuple[int, str] | None = None) -> None:
        if error is None:
            reply = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=request.transaction_id,
                                 attributes={"XOR-MAPPED-ADDRESS": source})
        else:
            reply = stun.Message(stun.Method.BINDING, stun.Class.ERROR, transaction_id=request.transaction_id,
                                 attributes={"ERROR-CODE": error})
        reply.add_message_integrity(self.local_pwd.encode())
        data = bytes(reply)
        if via is not None:
            self._out.append((via.wrap(data, source), via.server.address))
        else:
            self._out.append((data, source))

    def _switch_role(self, now: float) -> None:
        self.controlling = not self.controlling
        for pair in self.pairs:
            pair.priority = self._pair_priority(pair.local, pair.remote)
        self.pairs.sort(key=lambda p: p.priority, reverse=True)

    def _on_check_answer(self, message: stun.Message, source: Address, via: TurnAllocation | None,
                         now: float) -> None:
        check = self._checks.get(message.transaction_id)
        if check is None:
            return
        if not message.check_message_integrity(self.remote_pwd.encode()):
            self.stats.bad_integrity += 1
            return  # forged: the real answer may still come
        del self._checks[message.transaction_id]
        pair = check.pair
        if source != pair.remote.address or via is not pair.relay:
            pair.state = PairState.FAILED  # not symmetric (RFC 8445 section 7.2.5.2.1)
            self._maybe_failed(now)
            return
        if check.consent:
            if message.message_class == stun.Class.RESPONSE:
                self._consent_expires = now + self.config.consent_timeout_s
                if not self.consent:
                    self.consent = True
                    self._events.append(ConsentRestored())
            return
        if message.message_class == stun.Class.ERROR:
            if message.error_code == 487:
                # role conflict: take the other role and check again (RFC 8445 section 7.2.5.1)
                self.stats.role_conflicts += 1
                self._switch_role(now)
                pair.state = PairState.WAITING
                self._triggered.append(pair)
                if self._next_check_at is None:
                    self._next_check_at = now
                return
            pair.state = PairState.FAILED
            self._maybe_failed(now)
            return
        mapped = message.attributes.get("XOR-MAPPED-ADDRESS")
        if mapped is not None and via is None and all(c.address != (mapped[0], mapped[1])
                                                      for c in self.local_candidates):
            # local peer-reflexive candidate (RFC 8445 section 7.2.5.3.1); the pair still sends from its base
            self.stats.fields["local_prflx"] = self.stats.fields.get("local_prflx", 0) + 1
        pair.state = PairState.SUCCEEDED
        # unfreeze the pairs of the same foundation (RFC 8445 section 7.2.5.3.3)
        for other in self.pairs:
            if other.state == PairState.FROZEN and other.foundation == pair.foundation:
                other.state = PairState.WAITING
        if check.nominating or pair.nominate_on_success:
            self._nominated(pair, now)
            return
        if pair.relayed and self._first_valid_relay_at is None:
            self._first_valid_relay_at = now
        self._maybe_nominate(now)

    def _maybe_nominate(self, now: float) -> None:
        if not self.controlling or self.selected is not None or self.failed:
            return
        if any(c.nominating for c in self._checks.values()):
            return
        valid = [p for p in self.pairs if p.state == PairState.SUCCEEDED]
        if not valid:
            return
        best = max(valid, key=lambda p: p.priority)
        if best.relayed:
            # a direct pair still in the running wins over the relay (research: prefer direct whenever it works)
            direct_pending = any(not p.relayed and p.state in (PairState.WAITING, PairState.IN_PROGRESS,
                                                               PairState.FROZEN) for p in self.pairs)
            started = self._first_valid_relay_at if self._first_valid_relay_at is not None else now
            if direct_pending and now < started + self.config.relay_grace_s:
                return
        self._send_check(best, now, nominate=True)

    def _nominated(self, pair: CandidatePair, now: float) -> None:
        if self.selected is not None:
            return
        pair.nominated = True
        self.selected = pair
        self._checks = {k: c for k, c in self._checks.items() if c.pair is pair}
        self._triggered.clear()
        self._next_check_at = None
        self._consent_expires = now + self.config.consent_timeout_s
        self._consent_at = now + self._consent_delay()
        if pair.relay is not None:
            pair.relay.bind_channel(pair.remote.address, now)
            self._flush_turn(pair.relay)
        self._events.append(Connected(pair=pair, path="relayed" if pair.relayed else "direct"))

    def _maybe_failed(self, now: float) -> None:
        if self.selected is not None or self.failed or not (self._remote_set and self.gathering_done):
            return
        if all(p.state == PairState.FAILED for p in self.pairs):
            self._fail("every candidate pair failed its connectivity checks" if self.pairs
                       else "no candidate pair to check (no common address family or no candidates)")
        else:
            self._maybe_nominate(now)

    def _fail(self, reason: str) -> None:
        self.failed = True
        self._next_check_at = None
        self._checks.clear()
        self._events.append(Failed(reason))

    # -- the channel's datagrams -----------------------------------------------------------------------------

    def wrap(self, data: bytes, peer: Address) -> tuple[bytes, Address]:
        """Where a channel datagram for ``peer`` goes: through the TURN server when the selected pair is relayed."""
        pair = self.selected
        if pair is not None and pair.relay is not None:
            return pair.relay.wrap(data, peer), pair.relay.server.address
        return data, peer

    @property
    def may_send(self) -> bool:
        """Consent holds on the selected pair (RFC 7675): the channel may send."""
        return self.selected is not None and self.consent

    # -- output and timers -----------------------------------------------------------------------------------

    def _flush_turn(self, turn: TurnAllocation) -> None:
        for data in turn.datagrams_to_send():
            self._out.append((data, turn.server.address))

    def datagrams_to_send(self, now: float | None = None) -> list[tuple[bytes, Address]]:
        """The agent's own datagrams (checks, answers, STUN and TURN requests), each with its destination."""
        out, self._out = self._out, []
        return out

    def next_event(self) -> IceEvent | None:
        return self._events.popleft() if self._events else None

    def _consent_delay(self) -> float:
        # RFC 7675 section 5.1: randomised 0.8-1.2 x the interval
        jitter = int.from_bytes(self._random(2), "big") / 65535
        return self.config.consent_interval_s * (0.8 + 0.4 * jitter)

    def get_timer(self) -> float | None:
        times: list[float] = [c.sent_at + c.rto for c in self._checks.values()]
        times += [q.sent_at + q.rto for q in self._queries.values()]
        for value in (self._next_check_at, self._consent_at, self._consent_expires if self.consent else None,
                      None if self.gathering_done else self._gather_deadline,
                      None if self.selected or self.failed else self._connect_deadline,
                      self._first_valid_relay_at + self.config.relay_grace_s
                      if self._first_valid_relay_at is not None and self.selected is None else None):
            if value is not None:
                times.append(value)
        for turn in self._turns:
            when = turn.get_timer()
            if when is not None:
                times.append(when)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for tid, query in list(self._queries.items()):
            if now >= query.sent_at + query.rto:
                if query.tries >= self.config.check_tries:
                    del self._queries[tid]
                    continue
                query.tries += 1
                query.sent_at = now
                query.rto = min(query.rto * 2, self.config.max_rto_s)
                self._out.append((query.data, query.server))
        for turn in self._turns:
            when = turn.get_timer()
            if when is not None and now >= when:
                was = turn.state
                turn.handle_timer(now)
                self._flush_turn(turn)
                if was == TurnState.ALLOCATING and turn.state != was:
                    self._check_gathering(now)
        self._check_gathering(now)
        for tid, check in list(self._checks.items()):
            if now < check.sent_at + check.rto:
                continue
            if check.tries >= self.config.check_tries:
                del self._checks[tid]
                if not check.consent:
                    check.pair.state = PairState.FAILED
                    self._maybe_failed(now)
                continue
            check.tries += 1
            check.sent_at = now
            check.rto = min(check.rto * 2, self.config.max_rto_s)
            self.stats.checks_sent += 1
            self._send_on(check.pair, check.data)
        self._tick_checks(now)
        if self.selected is None and not self.failed:
            self._maybe_nominate(now)
            if self._connect_deadline is not None and now >= self._connect_deadline:
                self._fail(f"no working path within {self.config.connect_timeout_s:g} s")
        # consent freshness on the selected pair
        pair = self.selected
        if pair is not None and self._consent_at is not None and now >= self._consent_at:
            self._consent_at = now + self._consent_delay()
            self._send_check(pair, now, consent=True)
        if pair is not None and self.consent and self._consent_expires is not None and now >= self._consent_expires:
            self.consent = False
            self._events.append(ConsentLost())

    def close(self, now: float) -> None:
        """Release the TURN allocations."""
        for turn in self._turns:
            turn.close(now)
            self._flush_turn(turn)
