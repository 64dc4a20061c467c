"""server/policy/core: the policy server: admission, reservations and their lifetime (sans-IO).

Driving contract (as the SIP cores): ``now`` in, decisions out; ``get_timer()`` says when to call
``handle_timer(now)``, which releases what ran out and retries writes the database refused. ``now`` is a
monotonic clock (the driver's loop time): deadlines and billed durations never follow a wall clock step. The wall
clock (epoch seconds) is passed in as ``wall`` where a record starts (FINAL, start-up); every later time of a
reservation is its start plus monotonic elapsed time.

Lifetime (DESIGN section 4, research/protocol.md (d)):

- ``final`` holds resources in state RESERVED with a confirm deadline of 2xx + 32 s (64*T1);
- ``activate`` (PUBLISH ``confirmed``) moves to ACTIVE, billing START, lease = now + Expires + 32 s slack;
- ``refresh`` (PUBLISH refresh) extends the lease, billing INTERIM;
- ``release`` (PUBLISH ``terminated``, registration expiry, timers, restart) ends it with exactly one STOP.

Durable first (DESIGN section 10): each change and its billing events are one :class:`~server.policy.ledger.Change`
committed to the ledger in one transaction before memory follows. A FINAL is idempotent only while its
reservation is held; a key that was used (ended, or refused) is refused, not answered from a cache (the proxy
caches the 2xx headers per INVITE transaction for retransmissions).
"""

from __future__ import annotations

import enum
import heapq
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

from server.billing.model import BillingEvent, BillingRecord, BillingSink, EventKind

from .admission import NetworkUsage, admit, class_demand
from .config import PolicyConfig
from .ledger import Change, Journal, Ledger, LedgerUnavailable, SplitLedger, new_change
from .lifetime import Activate, PolicyOperation, Refresh, Release
from .model import (
    NATIVE_MAKERS,
    AppSession,
    Decision,
    Deny,
    DialogRef,
    EndReason,
    Grant,
    Reservation,
    ReservationState,
    Resource,
    SessionKey,
    Side,
    _grant_native,
    _reservation_native,
    new_grant,
    new_reservation,
)

__all__ = ["FINAL_BATCH_ROWS", "FinalBatch", "LedgerUnavailable", "NetworkCapacity", "PolicyServer", "ReservationStore", "hex_token_factory"]

log: Final = logging.getLogger(__name__)


class ReservationStore(Protocol):
    """Persistence of held reservations (the SQLite store in ``server.policy.store``)."""

    def save(self, reservation: Reservation) -> None: ...

    def delete(self, key: SessionKey) -> None: ...

    def load_all(self) -> list[Reservation]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkCapacity:
    """One access network's capacity and what is held in it (``gamesdk-server sessions``)."""

    network: str
    sessions: int
    max_sessions: int
    uplink_used_kbps: int
    uplink_kbps: int
    downlink_used_kbps: int
    downlink_kbps: int

    @property
    def uplink_free_kbps(self) -> int:
        return self.uplink_kbps - self.uplink_used_kbps

    @property
    def downlink_free_kbps(self) -> int:
        return self.downlink_kbps - self.downlink_used_kbps


def hex_token_factory(random_bytes: Callable[[int], bytes], nbytes: int = 16) -> Callable[[], str]:
    """Token factory for ``P-Media-Authorization`` (RFC 3313: 1*HEXDIG). Pass ``os.urandom`` in production."""

    def make() -> str:
        return random_bytes(nbytes).hex()

    return make


class _Write(enum.Enum):
    COMMITTED = "committed"  #: in the database
    JOURNALED = "journaled"  #: in the journal, the database retried with backoff
    PENDING = "pending"  #: in memory only (journal failed too), retried with backoff: not durable yet


@dataclass(slots=True)
class _Pending:
    change: Change
    journaled: bool


#: Backoff of database retries: first after 50 ms, doubling up to 5 s, for as long as it takes.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 5.0
#: How long a used key (ended or refused) and an INVITE's first To-tag are remembered, and how many at most.
USED_KEY_TTL_S: Final = 300.0
USED_KEY_MAX = 65536
#: Changes that may wait for the database before new sessions and PUBLISHes are refused (back-pressure).
OUTBOX_MAX = 10000
#: The state of a new reservation, read per FINAL from a module global (``ReservationState.RESERVED`` is a lookup on
#: the enum class: its metaclass's, a Python call on CPython 3.11).
_RESERVED: Final = ReservationState.RESERVED


#: A used key's refusal, as :meth:`PolicyServer.final` answers it again: its network, the entry's deadline (the
#: place :func:`_nothing_to_forget` reads), then its resource's value, reason, status hint and warning code.
_UsedEntry = tuple[str | None, float, str, str, int, int]


def _used_id(key: SessionKey) -> tuple[str, str, str]:
    """``key`` as :attr:`PolicyServer._used` holds it: (Call-ID, To-tag, side's value)."""
    return (key.call_id, key.to_tag, key.side._value_)


def _used_deny(used: _UsedEntry) -> Deny:
    """The refusal a used key's entry was made from (an equal :class:`Deny`)."""
    return Deny(network=used[0], resource=Resource(used[2]), reason=used[3], status_hint=used[4],
                warning_code=used[5])


def _nothing_to_forget(table: OrderedDict[Any, Any], now: float) -> bool:
    """Whether ``table`` (oldest first, each value's [1] its deadline) has nothing to forget: it is empty, or its
    oldest entry is live and it is within its bound. The usual case, asked for each side of every FINAL."""
    return not table or (len(table) <= USED_KEY_MAX and next(iter(table.values()))[1] > now)


class PolicyServer:
    """The region's policy server (PCF-like): PRELIMINARY checks, FINAL reservations and their lifetime.

    Durable first, memory second: every change and its billing events are committed as one :class:`Change` to
    the ledger before memory moves. A FINAL whose write fails is refused (nothing held: its capacity is free at
    once); any other change the database refuses goes to the journal and is retried with backoff until it
    commits; an ended reservation keeps its capacity until its STOP is in the database.

    Times: ``now`` is a monotonic clock (the driver's loop time); ``wall`` (epoch seconds) is passed in where a
    record is created (FINAL, restore), defaulting to ``now``. Deadlines and durations are monotonic.

    Args:
        config: the validated region policy config.
        token_factory: returns a fresh hex token per reservation (``hex_token_factory(os.urandom)``); also the
            billing records' identities.
        region: region name written into billing records.
        ledger: durable reservations + billing (``SqliteLedger``); call :meth:`restore` once at start-up.
        journal: where changes the ledger refused wait (``FileJournal``); ``None`` = memory only.
        store, billing: a separate store and sink instead of a ledger (memory, tests; not atomic).
    """

    def __init__(
        self,
        config: PolicyConfig,
        *,
        token_factory: Callable[[], str],
        region: str = "",
        ledger: Ledger | None = None,
        journal: Journal | None = None,
        store: ReservationStore | None = None,
        billing: BillingSink | None = None,
    ) -> None:
        self.config = config
        self.region = region
        self._token_factory = token_factory
        self._ledger: Ledger = ledger if ledger is not None else SplitLedger(store, billing)
        # A ledger that commits several changes in one transaction lets final_many write both sides at once.
        self._commit_many: Callable[[list[Change]], None] | None = getattr(self._ledger, "commit_many", None)
        # A ledger with a connection of the signalling loop's own writes new rows there when the database takes
        # them at once (FinalBatch.commit_now); False: nothing written, the policy's thread writes them.
        self._commit_many_now: Callable[[list[Change]], bool] | None = getattr(self._ledger, "commit_many_now",
                                                                               None)
        self._persistent = ledger is not None or store is not None
        self._journal = journal
        self._usage: dict[str, NetworkUsage] = {n.name: NetworkUsage() for n in config.networks}
        self._held: dict[SessionKey, Reservation] = {}
        # Released, STOP not in the database yet: capacity still counted, repeats of the release are no-ops.
        self._ending: dict[SessionKey, Reservation] = {}
        self._by_call_id: dict[str, set[SessionKey]] = {}
        self._per_player: dict[str, int] = {}
        # Keys that were used (ended, or refused): a FINAL for one is refused, never answered from a cache. Held
        # as texts and numbers ((Call-ID, To-tag, side's value) -> :data:`_UsedEntry`), not as the SessionKey and
        # Deny: an ended call leaves two for USED_KEY_TTL_S, and tuples of atomic values are left out of the
        # cyclic collector's walks after one young collection (six objects per call it examined until then).
        self._used: OrderedDict[tuple[str, str, str], _UsedEntry] = OrderedDict()
        # (Call-ID, From-tag, side's value) -> the To-tag of its FINAL: one FINAL per INVITE transaction. (The
        # value, not the member: an Enum member's hash is a Python call, two per FINAL.)
        self._invites: OrderedDict[tuple[str, str, str], tuple[str, float]] = OrderedDict()
        self._outbox: deque[_Pending] = deque()
        self._retry_at: float | None = None
        self._retry_delay = RETRY_FIRST_S
        # Lazy-deletion heap of (monotonic deadline, seq, key).
        self._timers: list[tuple[float, int, SessionKey]] = []
        self._seq = 0  # heap tie-breaker: keys themselves do not order
        self.stats = {"preliminary": 0, "final": 0, "granted": 0, "denied": 0, "released": 0,
                      "write_failures": 0, "journaled": 0, "retried": 0}

    def reconfigure(self, config: PolicyConfig) -> None:
        """Use a reloaded region file (networks, classes, tariff, settings) from now on. Reservations already held
        keep what they were granted; a network that left the file keeps its usage until they are released."""
        self.config = config
        for net in config.networks:
            self._usage.setdefault(net.name, NetworkUsage())
        set_tariff = getattr(self._ledger, "set_tariff", None)
        if set_tariff is not None:
            set_tariff(config.tariff)

    # ------------------------------------------------------------------------------------------------------------
    # N5-shaped operations

    def preliminary(self, request: AppSession, now: float, *, wall: float | None = None) -> Decision:
        """Check ``request`` (the offer, INVITE path) against current usage. Nothing is held.

        Returns a :class:`Grant` with ``token=None``, or a :class:`Deny` to answer with 580 + Warning 370.
        """
        del now, wall  # A check depends only on what is held now; kept in the signature for the uniform contract.
        self.stats["preliminary"] += 1
        return self._decide(request)

    def final(self, request: AppSession, now: float, *, wall: float | None = None) -> Decision:
        """Reserve for the answer (2xx path).

        A Grant carries the ``P-Media-Authorization`` token; a Deny means: forward the 2xx with ``Warning: 370``
        and no token. The same request again while held (a retransmission reaching a restarted server, a retried
        HTTP call) gets the held grant; a key that was used before is refused. A denied FINAL is billed as an
        attempt (STOP ``qos-failed``). Call :meth:`get_timer` afterwards: the confirm deadline was armed.
        """
        wall = now if wall is None else wall
        key = request.key
        held = self._held.get(key)
        if held is not None and held.request == request:
            return held.grant
        self._forget(now)
        used = self._used.get(_used_id(key))
        if used is not None:
            return _used_deny(used)
        self.stats["final"] += 1
        decision = self._decide(request) if held is None and key not in self._ending else self._key_in_use(key)
        if isinstance(decision, Grant):
            decision = self._one_final_per_invite(request, now) or self._player_cap(request) or decision
        if isinstance(decision, Deny):
            self.stats["denied"] += 1
            self._used_key(key, decision, now)
            self._bill_attempt(request, decision, now, wall)
            return decision
        reservation = self._new_reservation(request, decision, now, wall)
        try:
            # A grant the books do not show would be capacity given away: durable (database or journal) or none.
            self._change(Change(key=key, save=reservation), now, must_be_durable=True)
        except LedgerUnavailable as exc:
            return self._not_recorded(reservation, exc)
        self._hold(reservation)
        return self._granted(reservation, now)

    def final_many(self, requests: Sequence[AppSession], now: float, *, wall: float | None = None,
                   on_fault: Callable[[AppSession, Exception], Decision] | None = None) -> list[Decision]:
        """FINAL for each of ``requests`` in order, stopping after the first refusal: the decisions :meth:`final`
        gives one after the other, but the new reservations' rows are committed in one transaction (the callee's
        and the caller's side of a call at a server with both players).

        Durable first as in :meth:`final`: a grant is returned only once its row is in the database or the
        journal. If the database refuses the transaction, the rows go to the journal one by one, in order (as
        :meth:`final` does once the database has refused); the first one the journal refuses too is refused and
        the later requests were never asked (nothing of theirs is held). A request whose decision raises ends the
        list with ``on_fault(request, exc)`` (re-raised without ``on_fault``), after the grants before it are
        recorded.
        """
        wall = now if wall is None else wall
        decisions: list[Decision] = []
        staged: list[Reservation] = []
        # Whether the tables of used keys and INVITEs were trimmed at ``now`` since they last changed: staging adds
        # to neither, so the call's second side skips that pass (it would find nothing to forget).
        trimmed = False
        for request in requests:
            try:
                reservation = self._stage_final(request, now, wall, trimmed=trimmed)
                if reservation is not None:
                    staged.append(reservation)
                    trimmed = True
                    continue
                if staged:
                    decisions += self._record_staged(staged, now)
                    staged = []
                    if isinstance(decisions[-1], Deny):
                        return decisions
                trimmed = False
                decision = self.final(request, now, wall=wall)
            except Exception as exc:
                if staged:
                    decisions += self._record_staged(staged, now)
                    if isinstance(decisions[-1], Deny):
                        return decisions
                if on_fault is None:
                    raise
                decisions.append(on_fault(request, exc))
                return decisions
            decisions.append(decision)
            if isinstance(decision, Deny):
                return decisions
        if staged:
            decisions += self._record_staged(staged, now)
        return decisions

    def final_batch(self) -> FinalBatch:
        """A :class:`FinalBatch`: the FINALs of several queries (the policy thread's wake-up), their new rows in
        one write."""
        return FinalBatch(self)

    def _stage_final(self, request: AppSession, now: float, wall: float, *, trimmed: bool = False
                     ) -> Reservation | None:
        """A new grant for ``request``, held in memory, its row not written yet (:meth:`_record_staged` writes
        it); ``None`` for anything else (a retransmission, a used key, a refusal, writes already queued), which
        :meth:`final` then decides as always. ``trimmed``: the used keys and INVITEs were forgotten up to ``now``
        and have not changed since."""
        if self._outbox or self._commit_many is None:
            return None
        key = request.key
        if key in self._held or key in self._ending:
            return None
        if not trimmed:
            self._forget(now)
        if _used_id(key) in self._used:
            return None
        decision = self._decide(request)
        if (not isinstance(decision, Grant) or self._one_final_per_invite(request, now) is not None
                or self._player_cap(request) is not None):
            return None
        self.stats["final"] += 1
        reservation = self._new_reservation(request, decision, now, wall)
        self._hold(reservation)
        return reservation

    def _record_staged(self, staged: list[Reservation], now: float) -> list[Decision]:
        """Commit the staged reservations' rows in one transaction; the journal, one by one, if that fails."""
        assert self._commit_many is not None  # staged only with a ledger that commits many
        changes = [new_change(res.request.key, res, False, ()) for res in staged]
        try:
            self._commit_many(changes)
        except Exception as exc:  # noqa: BLE001 - any store fault journals the changes, never loses them
            self.stats["write_failures"] += 1
            log.warning("database write for %s failed (journaled, retried): %s", changes[0].key, exc)
        else:
            return [self._granted(res, now) for res in staged]
        decisions: list[Decision] = []
        for index, (res, change) in enumerate(zip(staged, changes, strict=True)):
            try:
                self._queue(change, now, must_be_durable=True)
            except LedgerUnavailable as exc:
                for later in staged[index:]:  # not recorded, or never asked: nothing of theirs stays held
                    self._held.pop(later.key, None)
                    self._free(later)
                self.stats["final"] -= len(staged) - index - 1
                decisions.append(self._not_recorded(res, exc))
                return decisions
            decisions.append(self._granted(res, now))
        return decisions

    def _new_reservation(self, request: AppSession, d: Grant, now: float, wall: float) -> Reservation:
        token = self._token_factory
        if NATIVE_MAKERS:  # (the same makers, called directly)
            grant = _grant_native(token(), d.network, d.qos_class, d.priority, d.uplink_kbps, d.downlink_kbps,
                                  d.latency_ms)
            return _reservation_native(request, grant, _RESERVED, wall,
                                       wall + self.config.settings.confirm_timeout_s, None, None, 0, 0, token(),
                                       wall - now)
        grant = new_grant(token(), d.network, d.qos_class, d.priority, d.uplink_kbps, d.downlink_kbps, d.latency_ms)
        return new_reservation(request, grant, _RESERVED, wall,
                               wall + self.config.settings.confirm_timeout_s, None, None, 0, 0, token(), wall - now)

    def _granted(self, res: Reservation, now: float) -> Grant:
        request = res.request
        self._invites[(request.call_id, request.from_tag, request.side._value_)] = (request.to_tag,
                                                                                   now + USED_KEY_TTL_S)
        self.stats["granted"] += 1
        return res.grant

    def _not_recorded(self, res: Reservation, exc: Exception) -> Deny:
        self.stats["denied"] += 1
        log.warning("FINAL for %s refused: %s", res.key, exc)
        return Deny(network=res.grant.network, resource=Resource.POLICY,
                    reason="the reservation could not be recorded; try again")

    def activate(self, key: SessionKey, now: float, expires_s: int) -> Reservation | None:
        """The player confirmed (PUBLISH ``confirmed``): open the gate, START billing, start the lease.

        Activating an ACTIVE reservation again counts as a refresh. Returns ``None`` for an unknown key, the
        ending reservation unchanged for one already released. Raises :class:`LedgerUnavailable` when the
        change could not be made durable (nothing changed: answer 5xx so the player retries).
        """
        if key in self._ending:
            return self._ending[key]
        res = self._held.get(key)
        if res is None:
            return None
        if res.state is ReservationState.ACTIVE:
            return self.refresh(key, now, expires_s)
        t = now + res.clock_offset
        res = replace(
            res,
            state=ReservationState.ACTIVE,
            t_confirm=t,
            t_last_refresh=t,
            expires_s=expires_s,
            deadline=t + expires_s + self.config.settings.lease_slack_s,
        )
        event = self._event(EventKind.START, res, t, charged_s=t - res.t_2xx)
        self._change(Change(key=key, save=res, events=(event,)), now, must_be_durable=True)
        self._update(res)
        return res

    def refresh(self, key: SessionKey, now: float, expires_s: int) -> Reservation | None:
        """Extend an ACTIVE lease to ``now + expires_s + slack`` and bill an INTERIM. No-op while RESERVED.

        Raises :class:`LedgerUnavailable` like :meth:`activate`.
        """
        if key in self._ending:
            return self._ending[key]
        res = self._held.get(key)
        if res is None:
            return None
        if res.state is not ReservationState.ACTIVE:
            return res
        t = now + res.clock_offset
        if res.t_last_refresh is not None and t < res.t_last_refresh:
            return res  # a late duplicate: the lease already runs from a later refresh
        res = replace(
            res,
            t_last_refresh=t,
            expires_s=expires_s,
            interim_count=res.interim_count + 1,
            deadline=t + expires_s + self.config.settings.lease_slack_s,
        )
        event = self._event(EventKind.INTERIM, res, t, charged_s=t - res.t_2xx, seq=res.interim_count)
        self._change(Change(key=key, save=res, events=(event,)), now, must_be_durable=True)
        self._update(res)
        return res

    def release(
        self,
        key: SessionKey,
        now: float,
        reason: EndReason,
        *,
        sip_reason: str | None = None,
        end_time: float | None = None,
        must_be_durable: bool = False,
    ) -> Reservation | None:
        """End the reservation and write its one STOP. ``end_time`` (monotonic, default ``now``) is when the end
        was observed; it bounds the charge. Held time is billed whether or not the session was confirmed.

        Never lost: if the database refuses the STOP, the change is journaled and retried, and the capacity stays
        counted until it commits. Returns the released reservation (also for a repeat while the STOP is still
        on its way), or ``None`` if nothing is held under ``key``. With ``must_be_durable``, raises
        :class:`LedgerUnavailable` when the STOP is only in memory so far (it is still retried).
        """
        ending = self._ending.get(key)
        if ending is not None:
            if must_be_durable and self._pending_in_memory(key):
                raise LedgerUnavailable("the end of this session is not recorded yet")
            return ending
        res = self._held.get(key)
        if res is None:
            return None
        stop_m = now if end_time is None else min(end_time, now)
        stop_at = max(stop_m + res.clock_offset, res.t_confirm or res.t_2xx)
        event = self._event(EventKind.STOP, res, stop_at, charged_s=stop_at - res.t_2xx, end_reason=reason,
                            sip_reason=sip_reason)
        written = self._change(Change(key=key, delete=True, events=(event,)), now, must_be_durable=False)
        self._unhold(res, now)
        self.stats["released"] += 1
        log.info("released %s in %s: %s", key, res.grant.network, reason.value)
        if written is _Write.COMMITTED:
            self._free(res)
        else:
            self._ending[key] = res
            if must_be_durable and written is _Write.PENDING:
                raise LedgerUnavailable("the end of this session is not recorded yet")
        return res

    def release_player(
        self, player: str, now: float, reason: EndReason = EndReason.REG_EXPIRED, *, player_ip: str | None = None
    ) -> list[Reservation]:
        """Release every reservation of ``player`` (its registration expired or was removed).

        With ``player_ip``, only the reservations made for the player at that address (one binding of several).
        """
        keys = [
            k for k, r in self._held.items()
            if r.request.player == player and (player_ip is None or r.request.player_ip == player_ip)
        ]
        return [r for k in keys if (r := self.release(k, now, reason)) is not None]

    def find(self, ref: DialogRef, *, peer_domain: str | None = None) -> Reservation | None:
        """The reservation a player's PUBLISH names (RFC 4235 call-id, local-tag, remote-tag).

        The caller's To-tag is its remote tag, the callee's its local tag; only the publisher's own
        reservations match. Ending reservations are found too (a repeated ``terminated`` is a no-op). With
        ``peer_domain`` (a peer region speaks), only a reservation whose other player is of that domain matches.
        """
        for key in self._by_call_id.get(ref.call_id, ()):
            res = self._held.get(key) or self._ending.get(key)
            if res is None or res.request.player != ref.player:
                continue
            if peer_domain is not None and _domain(res.request.peer) != peer_domain.lower():
                continue
            if (key.side is Side.ORIG and key.to_tag == ref.remote_tag) or (
                key.side is Side.TERM and key.to_tag == ref.local_tag
            ):
                return res
        return None

    def apply(self, op: PolicyOperation, now: float) -> Reservation | None:
        """Carry out an operation derived from a PUBLISH (``lifetime.operations_for_publish``).

        Returns the reservation after the change (for a release: the released one), or ``None`` when the
        publisher holds no reservation for that dialog (unknown, already released, or someone else's).
        Raises :class:`LedgerUnavailable` when the change is not durable: the PUBLISH must not be acknowledged.
        """
        res = self.find(op.ref, peer_domain=op.peer_domain if isinstance(op, Release) else None)
        if res is None:
            return None
        if isinstance(op, Activate):
            return self.activate(res.key, now, op.expires_s)
        if isinstance(op, Refresh):
            return self.refresh(res.key, now, op.expires_s)
        return self.release(res.key, now, op.reason, sip_reason=op.sip_reason, must_be_durable=True)

    def get(self, key: SessionKey) -> Reservation | None:
        return self._held.get(key)

    # ------------------------------------------------------------------------------------------------------------
    # Timers and start-up

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next run (monotonic, like ``now``), or ``None``."""
        while self._timers:
            when, _, key = self._timers[0]
            if self._timer_is_live(when, key):
                return when if self._retry_at is None else min(when, self._retry_at)
            heapq.heappop(self._timers)
        return self._retry_at

    def handle_timer(self, now: float) -> list[Reservation]:
        """Retry journaled writes; release every reservation whose deadline passed.

        Unconfirmed reservations end ``not-established`` billed for the time held; ACTIVE ones ``lease-expired``
        billed up to the last evidence of play (the last confirm or refresh).
        """
        if self._retry_at is not None and self._retry_at <= now:
            self._flush(now)
        released: list[Reservation] = []
        while self._timers and self._timers[0][0] <= now:
            when, _, key = heapq.heappop(self._timers)
            if not self._timer_is_live(when, key):
                continue
            res = self._held[key]
            if res.state is ReservationState.RESERVED:
                # Billed to the deadline itself, not to when this timer got to run (a stalled server would
                # otherwise bill its stall).
                out = self.release(key, now, EndReason.NOT_ESTABLISHED, end_time=when)
            else:
                out = self.release(key, now, EndReason.LEASE_EXPIRED, end_time=self._lease_end(res))
            if out is not None:
                released.append(out)
        return released

    def restore(self, now: float, *, wall: float | None = None) -> list[Reservation]:
        """At start-up: replay the journal into the database, then re-hold the persisted reservations and release
        (``server-restart``) the ones whose deadline passed while the server was down. Returns the released ones.

        Raises if the journal cannot be replayed (the database refuses it): starting without it would lose books.
        """
        wall = now if wall is None else wall
        if self._journal is not None:
            entries = self._journal.entries()
            for change in entries:
                self._ledger.commit(change)
            if entries:
                log.info("replayed %d journaled change(s) into the database", len(entries))
                self._journal.clear()
        if not self._persistent:
            return []
        released: list[Reservation] = []
        offset = wall - now
        for res in self._ledger.load_all():
            if res.key in self._held:
                continue
            res = replace(res, clock_offset=offset)
            self._hold(res)
            if res.deadline <= wall or self.config.network(res.grant.network) is None:
                # Ran out while we were down, or its network left the config: close it with one STOP.
                out = self.release(res.key, now, EndReason.SERVER_RESTART, end_time=self._lease_end(res))
                if out is not None:
                    released.append(out)
            else:
                self._invites[(res.key.call_id, res.request.from_tag, res.key.side._value_)] = (
                    res.key.to_tag, now + USED_KEY_TTL_S)
        return released

    # ------------------------------------------------------------------------------------------------------------
    # Views

    def reservations(self) -> list[Reservation]:
        return sorted(self._held.values(), key=lambda r: r.t_2xx)

    def capacity(self) -> list[NetworkCapacity]:
        return capacity_view(self.config, [*self._held.values(), *self._ending.values()])

    def is_idle(self) -> bool:
        """True when nothing is held anywhere (every network at full capacity) and every write is in."""
        return (not self._held and not self._ending and not self._outbox
                and all(u.is_idle() for u in self._usage.values()))

    @property
    def pending_writes(self) -> int:
        """Changes waiting for the database (journaled or in memory)."""
        return len(self._outbox)

    # ------------------------------------------------------------------------------------------------------------
    # Internals: decisions

    def _decide(self, request: AppSession) -> Decision:
        net = self.config.network_for_address(request.player_ip)
        if net is None:
            return Deny(
                network=None,
                resource=Resource.NETWORK,
                reason=f"no access network for {request.player_ip}",
            )
        return admit(self.config, self._usage[net.name], net, request)

    @staticmethod
    def _key_in_use(key: SessionKey) -> Deny:
        return Deny(network=None, resource=Resource.REQUEST, status_hint=400,
                    reason=f"dialog {key.call_id} already holds a different reservation")

    def _one_final_per_invite(self, request: AppSession, now: float) -> Deny | None:
        first = self._invites.get((request.call_id, request.from_tag, request.side._value_))
        if first is None or first[0] == request.to_tag or first[1] <= now:
            return None
        return Deny(network=None, resource=Resource.REQUEST, status_hint=400,
                    reason="one reservation per INVITE: another 2xx of this INVITE holds it")

    def _player_cap(self, request: AppSession) -> Deny | None:
        cap = self.config.settings.max_reservations_per_player
        held = self._per_player.get(request.player, 0)
        if held < cap:
            return None
        return Deny(network=None, resource=Resource.SESSIONS,
                    reason=f"{request.player} already holds {held} reservations (limit {cap})")

    def _used_key(self, key: SessionKey, deny: Deny, now: float) -> None:
        used = _used_id(key)
        self._used[used] = (deny.network, now + USED_KEY_TTL_S, deny.resource._value_, deny.reason,
                            deny.status_hint, deny.warning_code)
        self._used.move_to_end(used)
        while len(self._used) > USED_KEY_MAX:
            self._used.popitem(last=False)

    def _forget(self, now: float) -> None:
        for table in (self._used, self._invites):
            while not _nothing_to_forget(table, now):
                table.popitem(last=False)

    # ------------------------------------------------------------------------------------------------------------
    # Internals: durability

    def _change(self, change: Change, now: float, *, must_be_durable: bool) -> _Write:
        """Make ``change`` durable: the database, or else the journal (retried). Raises LedgerUnavailable when
        ``must_be_durable`` and neither took it (then nothing is queued: the caller changes nothing)."""
        if must_be_durable and len(self._outbox) >= OUTBOX_MAX:
            # Back-pressure: a database down for long must not grow the queue without bound. New sessions and
            # PUBLISHes are refused (and retried by the players); ends are always taken.
            raise LedgerUnavailable(f"{len(self._outbox)} changes already wait for the database")
        if not self._outbox:
            try:
                self._ledger.commit(change)
                return _Write.COMMITTED
            except Exception as exc:  # noqa: BLE001 - any store fault journals the change, never loses it
                self.stats["write_failures"] += 1
                log.warning("database write for %s failed (journaled, retried): %s", change.key, exc)
        return self._queue(change, now, must_be_durable=must_be_durable)

    def _queue(self, change: Change, now: float, *, must_be_durable: bool) -> _Write:
        """The database did not take ``change`` (or writes already wait): the journal, then the retry queue."""
        journaled = False
        if self._journal is not None:
            try:
                self._journal.append(change)
                journaled = True
                self.stats["journaled"] += 1
            except Exception as exc:  # noqa: BLE001 - then it waits in memory, retried all the same
                log.error("journal write for %s failed: %s", change.key, exc)
        if not journaled and must_be_durable:
            raise LedgerUnavailable(f"could not record the change of {change.key}")
        if not journaled:
            log.error("change of %s kept in memory until the database takes it", change.key)
        self._outbox.append(_Pending(change, journaled))
        if self._retry_at is None:
            self._retry_at = now + self._retry_delay
        return _Write.JOURNALED if journaled else _Write.PENDING

    def _flush(self, now: float) -> None:
        """Retry the queued changes in order; stop at the first failure and back off."""
        while self._outbox:
            pending = self._outbox[0]
            try:
                self._ledger.commit(pending.change)
            except Exception as exc:  # noqa: BLE001 - still refused: back off and try again later
                self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_S)
                self._retry_at = now + self._retry_delay
                log.warning("database still refuses writes (%d queued, next try in %.2f s): %s",
                            len(self._outbox), self._retry_delay, exc)
                return
            self._outbox.popleft()
            self.stats["retried"] += 1
            if pending.change.delete:
                res = self._ending.pop(pending.change.key, None)
                if res is not None:
                    self._free(res)
        self._retry_at = None
        self._retry_delay = RETRY_FIRST_S
        if self._journal is not None:
            try:
                self._journal.clear()
            except Exception as exc:  # noqa: BLE001 - the replay at start-up is idempotent: a stale journal only costs time
                log.warning("could not clear the journal: %s", exc)

    def _pending_in_memory(self, key: SessionKey) -> bool:
        return any(p.change.key == key and not p.journaled for p in self._outbox)

    # ------------------------------------------------------------------------------------------------------------
    # Internals: memory

    def _usage_of(self, res: Reservation) -> NetworkUsage:
        usage = self._usage.get(res.grant.network)
        if usage is None:  # (setdefault would build a NetworkUsage on every call)
            usage = self._usage[res.grant.network] = NetworkUsage()
        return usage

    def _hold(self, res: Reservation) -> None:
        request = res.request
        key = request.key
        self._usage_of(res).add(class_demand(self.config, request))
        self._by_call_id.setdefault(key.call_id, set()).add(key)
        player = request.player
        self._per_player[player] = self._per_player.get(player, 0) + 1
        self._held[key] = res
        self._seq += 1
        heapq.heappush(self._timers, (res.deadline - res.clock_offset, self._seq, key))

    def _unhold(self, res: Reservation, now: float) -> None:
        """Out of the live set (timers, lifecycle); its capacity stays counted until :meth:`_free`."""
        key = res.key
        self._held.pop(key, None)
        self._used_key(key, Deny(network=res.grant.network, resource=Resource.REQUEST, status_hint=400,
                                 reason=f"the reservation of dialog {key.call_id} already ended"), now)

    def _free(self, res: Reservation) -> None:
        key = res.key
        self._usage_of(res).add(class_demand(self.config, res.request), -1)
        player = res.request.player
        left = self._per_player.get(player, 1) - 1
        if left > 0:
            self._per_player[player] = left
        else:
            self._per_player.pop(player, None)
        keys = self._by_call_id.get(key.call_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_call_id[key.call_id]

    def _update(self, res: Reservation) -> None:
        self._held[res.key] = res
        self._push(res)

    def _push(self, res: Reservation) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (res.deadline - res.clock_offset, self._seq, res.key))

    def _timer_is_live(self, when: float, key: SessionKey) -> bool:
        res = self._held.get(key)
        return res is not None and res.deadline - res.clock_offset == when

    @staticmethod
    def _lease_end(res: Reservation) -> float:
        """The monotonic time billing stops for a lease that ran out: the last evidence of play (the last
        confirm or refresh), since a player that vanished played no longer than that as far as anyone knows."""
        if res.state is ReservationState.ACTIVE and res.t_last_refresh is not None:
            return res.t_last_refresh - res.clock_offset
        return res.deadline - res.clock_offset

    # ------------------------------------------------------------------------------------------------------------
    # Internals: billing

    def _record(self, request: AppSession, grant: Grant | None, network: str | None, t_2xx: float,
                uid: str) -> BillingRecord:
        if grant is not None:
            qos_class = grant.qos_class
        else:
            first = request.components[0].qos_class if request.components else None
            qos_class = self.config.qos_class(first).name
        return BillingRecord(
            call_id=request.call_id,
            from_tag=request.from_tag,
            to_tag=request.to_tag,
            side=request.side.value,
            player=request.player,
            peer=request.peer,
            region=self.region,
            network=network or "",
            qos_class=qos_class,
            game_format=request.game_format,
            qos_text=request.qos_text,
            uplink_kbps=grant.uplink_kbps if grant else request.uplink_kbps,
            downlink_kbps=grant.downlink_kbps if grant else request.downlink_kbps,
            token=(grant.token or "") if grant else "",
            t_2xx=t_2xx,
            uid=uid,
        )

    def _event(
        self,
        kind: EventKind,
        res: Reservation,
        time: float,
        *,
        charged_s: float,
        end_reason: EndReason | None = None,
        sip_reason: str | None = None,
        seq: int = 0,
    ) -> BillingEvent:
        return BillingEvent(
            kind=kind,
            time=time,
            record=self._record(res.request, res.grant, res.grant.network, res.t_2xx, res.record_id),
            end_reason=end_reason.value if end_reason else None,
            sip_reason=sip_reason,
            charged_s=max(0.0, charged_s),
            seq=seq,
        )

    def _bill_attempt(self, request: AppSession, deny: Deny, now: float, wall: float) -> None:
        record = self._record(request, None, deny.network, wall, self._token_factory())
        event = BillingEvent(
            kind=EventKind.STOP,
            time=wall,
            record=record,
            end_reason=EndReason.QOS_FAILED.value,
            sip_reason=f"SIP;cause={deny.status_hint};text=\"{deny.reason}\"",
        )
        self._change(Change(key=request.key, events=(event,)), now, must_be_durable=False)


def capacity_view(config: PolicyConfig, held: Iterable[Reservation]) -> list[NetworkCapacity]:
    """Per access network: sessions and kbit/s held versus capacity (also used on the database by the CLI)."""
    usage = {n.name: NetworkUsage() for n in config.networks}
    for res in held:
        if res.grant.network in usage:
            usage[res.grant.network].add(class_demand(config, res.request))
    return [
        NetworkCapacity(
            network=net.name,
            sessions=usage[net.name].sessions,
            max_sessions=net.max_sessions,
            uplink_used_kbps=usage[net.name].uplink_kbps,
            uplink_kbps=net.uplink_kbps,
            downlink_used_kbps=usage[net.name].downlink_kbps,
            downlink_kbps=net.downlink_kbps,
        )
        for net in config.networks
    ]


def _domain(aor: str) -> str:
    """The domain of an AOR (``sip:bob@na.example`` -> ``na.example``), lower-case."""
    return aor.rpartition("@")[2].split(";", 1)[0].split(">", 1)[0].strip().lower()


#: Rows a :class:`FinalBatch` writes at a time, at most: one statement of ``SqliteReservationStore.write_many``
#: (``store.WRITE_MANY_MAX``); more rows would be one transaction with a statement per row.
FINAL_BATCH_ROWS = 64


class FinalBatch:
    """The FINALs of several queries, each with its own times, whose new reservations' rows are committed together
    (:meth:`PolicyServer.final_batch`): the policy thread answers the 2xx queries of one wake-up with one statement
    instead of one each (each statement hands the GIL to the signalling loop and back, twice).

    :meth:`add` decides a query's requests as :meth:`PolicyServer.final_many` would after the queries added before
    it: what is staged is held in memory at once (a check in between sees it, as it would see it committed), its
    row not written yet. A query that is not only plain new grants (a retransmission, a used key, a refusal, writes
    already queued, a fault) first commits what is staged, then goes through ``final_many`` alone: the writes stay
    in order. :meth:`commit` writes the staged rows and returns every query's decisions, in the order added.
    Durable first as ever: no grant is returned before its row is in the database; when the database refuses the
    batch, the staged reservations are let go and each of their queries is decided again, in order, through
    ``final_many`` (the journal path), as if the batch had not been tried. On the signalling loop, :meth:`stage`
    and :meth:`commit_now` decide and write without ever waiting or journaling (a refusal leaves it all staged for
    :meth:`commit` on the policy's thread).
    """

    def __init__(self, policy: PolicyServer) -> None:
        self._policy = policy
        self._queries: list[tuple[Sequence[AppSession], float, float,
                                  Callable[[AppSession, Exception], Decision] | None]] = []
        self._decisions: list[list[Decision] | None] = []
        #: (query index, reservation, the query's now): staged, not written yet.
        self._staged: list[tuple[int, Reservation, float]] = []

    def add(self, requests: Sequence[AppSession], now: float, *, wall: float | None = None,
            on_fault: Callable[[AppSession, Exception], Decision] | None = None) -> int:
        """Stage the FINALs of one query; returns its index in :meth:`commit`'s list."""
        policy = self._policy
        wall = now if wall is None else wall
        index = len(self._queries)
        self._queries.append((requests, now, wall, on_fault))
        self._decisions.append(None)
        plain = policy._commit_many is not None
        if plain and len(self._staged) + len(requests) > FINAL_BATCH_ROWS:
            self._write_staged()  # one statement per FINAL_BATCH_ROWS rows, each atomic by itself
        mine = self._stage_all(requests, now, wall) if plain else None
        if mine is not None:
            self._staged += [(index, res, now) for res in mine]
            return index
        self._write_staged()  # what was staged before it is written first
        self._decisions[index] = policy.final_many(requests, now, wall=wall, on_fault=on_fault)
        return index

    def stage(self, requests: Sequence[AppSession], now: float, *, wall: float | None = None,
              on_fault: Callable[[AppSession, Exception], Decision] | None = None) -> int | None:
        """Stage the FINALs of one query when they are all plain new grants and fit the statement: decided in
        memory, nothing written (the signalling loop decides, the policy thread writes with :meth:`commit`).
        Returns its index in :meth:`commit`'s list, or None with nothing staged or written for it (anything
        else, or a fault: :meth:`add` or ``final_many`` decides it, where writing is allowed)."""
        policy = self._policy
        if policy._commit_many is None or len(self._staged) + len(requests) > FINAL_BATCH_ROWS:
            return None
        wall = now if wall is None else wall
        mine = self._stage_all(requests, now, wall)
        if mine is None:
            return None
        index = len(self._queries)
        self._queries.append((requests, now, wall, on_fault))
        self._decisions.append(None)
        self._staged += [(index, res, now) for res in mine]
        return index

    def _stage_all(self, requests: Sequence[AppSession], now: float, wall: float) -> list[Reservation] | None:
        """Each request's FINAL staged as a plain new grant, held in memory; None, with none of them held, when
        one is anything else or faults (``final_many`` then decides the query, by its rules, where it may write)."""
        mine: list[Reservation] = []
        for request in requests:
            try:
                reservation = self._policy._stage_final(request, now, wall)
            except Exception:  # noqa: BLE001 - decided again by final_many, which answers a fault by its rules
                reservation = None
            if reservation is None:
                self._let_go(mine)
                return None
            mine.append(reservation)
        return mine

    def abandon(self) -> None:
        """Let go of what is staged (never written, never answered): as if it had not been decided."""
        staged, self._staged = self._staged, []
        self._let_go([res for _, res, _ in staged])
        self._queries, self._decisions = [], []

    def commit(self) -> list[list[Decision]]:
        """Write what is staged; every query's decisions, in the order added."""
        self._write_staged()
        return self._taken()

    def commit_now(self) -> list[list[Decision]] | None:
        """On the signalling loop: write what is staged with the ledger's loop connection when the database takes
        it at once (never waited for, never journaled); every query's decisions, in the order added, as
        :meth:`commit` returns them. None, with nothing written and everything still staged, when it does not:
        then :meth:`commit` on the policy's thread writes it (waiting for the database, the journal path if it
        refuses). Durable first as ever: no grant is returned before its row is in the database."""
        policy = self._policy
        write_now = policy._commit_many_now
        staged = self._staged
        if staged:
            if write_now is None or not write_now([new_change(res.key, res, False, ()) for _, res, _ in staged]):
                return None
            self._staged = []
            self._granted_all(staged)
        return self._taken()

    def _taken(self) -> list[list[Decision]]:
        """Every query's decisions, in the order added, the batch emptied (what :meth:`commit` returns)."""
        decisions = [d if d is not None else [] for d in self._decisions]
        self._queries, self._decisions = [], []
        return decisions

    def _granted_all(self, staged: list[tuple[int, Reservation, float]]) -> None:
        """The staged reservations' rows are in the database: their grants, each in its query's decisions."""
        policy = self._policy
        for index, res, now in staged:
            decisions = self._decisions[index]
            if decisions is None:
                decisions = self._decisions[index] = []
            decisions.append(policy._granted(res, now))

    def _write_staged(self) -> None:
        staged, self._staged = self._staged, []
        if not staged:
            return
        policy = self._policy
        assert policy._commit_many is not None  # staged only with a ledger that commits many
        changes = [new_change(res.key, res, False, ()) for _, res, _ in staged]
        try:
            policy._commit_many(changes)
        except Exception as exc:  # noqa: BLE001 - decided again below through the journal path, never lost
            policy.stats["write_failures"] += 1
            log.warning("database write of %d FINAL row(s) failed (decided again one query at a time): %s",
                        len(changes), exc)
        else:
            self._granted_all(staged)
            return
        self._let_go([res for _, res, _ in staged])
        for index in dict.fromkeys(index for index, _, _ in staged):
            requests, now, wall, on_fault = self._queries[index]
            self._decisions[index] = policy.final_many(requests, now, wall=wall, on_fault=on_fault)

    def _let_go(self, reservations: list[Reservation]) -> None:
        """Undo the staging of ``reservations`` (held in memory, never written, never answered)."""
        policy = self._policy
        for res in reversed(reservations):
            policy._held.pop(res.key, None)
            policy._free(res)
            policy.stats["final"] -= 1

