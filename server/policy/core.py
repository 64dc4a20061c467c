"""server/policy/core: the policy server: admission, reservations and their lifetime (sans-IO).

Driving contract (as the SIP cores): ``now`` in, decisions out; ``get_timer()`` says when to call
``handle_timer(now)``, which releases what ran out. ``now`` is wall-clock seconds since the epoch (``time.time()``
in the driver), because reservations are persisted and billed and must survive a restart.

Lifetime (DESIGN section 4, research/protocol.md (d)):

- ``final`` holds resources in state RESERVED with a confirm deadline of 2xx + 32 s (64*T1);
- ``activate`` (PUBLISH ``confirmed``) moves to ACTIVE, billing START, lease = now + Expires + 32 s slack;
- ``refresh`` (PUBLISH refresh) extends the lease, billing INTERIM;
- ``release`` (PUBLISH ``terminated``, registration expiry, timers, restart) frees and writes exactly one STOP.

FINAL decisions are cached per (Call-ID, To-tag, side) so a 2xx retransmission gets the identical answer
(research/protocol.md (b) "Both decisions are cached"): grants while held and at least 32 s after the decision,
denies for 32 s.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from server.billing.model import BillingEvent, BillingRecord, BillingSink, EventKind

from .admission import NetworkUsage, admit, class_demand
from .config import PolicyConfig
from .lifetime import Activate, PolicyOperation, Refresh
from .model import (
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
)

__all__ = ["NetworkCapacity", "PolicyServer", "ReservationStore", "hex_token_factory"]

log = logging.getLogger(__name__)


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


class PolicyServer:
    """The region's policy server (PCF-like): PRELIMINARY checks, FINAL reservations and their lifetime.

    Args:
        config: the validated region policy config.
        token_factory: returns a fresh hex token per reservation (``hex_token_factory(os.urandom)``).
        region: region name written into billing records.
        store: persists reservations (``None`` = memory only); call :meth:`restore` once at start-up.
        billing: receives START / INTERIM / STOP events (``None`` = not billed).
    """

    def __init__(
        self,
        config: PolicyConfig,
        *,
        token_factory: Callable[[], str],
        region: str = "",
        store: ReservationStore | None = None,
        billing: BillingSink | None = None,
    ) -> None:
        self.config = config
        self.region = region
        self._token_factory = token_factory
        self._store = store
        self._billing = billing
        self._usage: dict[str, NetworkUsage] = {n.name: NetworkUsage() for n in config.networks}
        self._held: dict[SessionKey, Reservation] = {}
        self._by_call_id: dict[str, set[SessionKey]] = {}
        # (decision, forget-not-before): the FINAL cache for retransmitted 2xx.
        self._decisions: dict[SessionKey, tuple[Decision, float]] = {}
        # Lazy-deletion heap of (when, kind, key): kind "held" = reservation deadline, "cache" = forget decision.
        self._timers: list[tuple[float, int, str, SessionKey]] = []
        self._seq = 0  # heap tie-breaker: keys themselves do not order
        self.stats = {"preliminary": 0, "final": 0, "granted": 0, "denied": 0, "released": 0}

    # ------------------------------------------------------------------------------------------------------------
    # N5-shaped operations

    def preliminary(self, request: AppSession, now: float) -> Decision:
        """Check ``request`` (the offer, INVITE path) against current usage. Nothing is held.

        Returns a :class:`Grant` with ``token=None``, or a :class:`Deny` to answer with 580 + Warning 370.
        """
        del now  # A check depends only on what is held now; kept in the signature for the uniform contract.
        self.stats["preliminary"] += 1
        return self._decide(request)

    def final(self, request: AppSession, now: float) -> Decision:
        """Reserve for the answer (2xx path). Idempotent per (Call-ID, To-tag, side).

        A Grant carries the ``P-Media-Authorization`` token; a Deny means: forward the 2xx with
        ``Warning: 370`` and no token. A denied FINAL is billed as an attempt (STOP ``qos-failed``).
        Call :meth:`get_timer` afterwards: the confirm deadline was armed.
        """
        key = request.key
        cached = self._decisions.get(key)
        if cached is not None:
            return cached[0]
        self.stats["final"] += 1
        decision = self._decide(request)
        if isinstance(decision, Deny):
            self.stats["denied"] += 1
            self._remember(key, decision, now + self.config.settings.confirm_timeout_s)
            self._bill_attempt(request, decision, now)
            return decision
        grant = replace(decision, token=self._token_factory())
        reservation = Reservation(
            request=request,
            grant=grant,
            state=ReservationState.RESERVED,
            t_2xx=now,
            deadline=now + self.config.settings.confirm_timeout_s,
        )
        self._hold(reservation)
        if self._store is not None:
            self._store.save(reservation)
        self._remember(key, grant, now + self.config.settings.confirm_timeout_s)
        self.stats["granted"] += 1
        return grant

    def activate(self, key: SessionKey, now: float, expires_s: int) -> Reservation | None:
        """The player confirmed (PUBLISH ``confirmed``): open the gate, START billing, start the lease.

        Activating an ACTIVE reservation again counts as a refresh. Returns ``None`` for an unknown key.
        """
        res = self._held.get(key)
        if res is None:
            return None
        if res.state is ReservationState.ACTIVE:
            return self.refresh(key, now, expires_s)
        res = replace(
            res,
            state=ReservationState.ACTIVE,
            t_confirm=now,
            t_last_refresh=now,
            expires_s=expires_s,
            deadline=now + expires_s + self.config.settings.lease_slack_s,
        )
        # START before the store write: a crash in between is then closed by restore() with one STOP.
        self._emit(EventKind.START, res, now, charged_s=now - res.t_2xx)
        self._update(res)
        return res

    def refresh(self, key: SessionKey, now: float, expires_s: int) -> Reservation | None:
        """Extend an ACTIVE lease to ``now + expires_s + slack`` and bill an INTERIM. No-op while RESERVED."""
        res = self._held.get(key)
        if res is None:
            return None
        if res.state is not ReservationState.ACTIVE:
            return res
        res = replace(
            res,
            t_last_refresh=now,
            expires_s=expires_s,
            interim_count=res.interim_count + 1,
            deadline=now + expires_s + self.config.settings.lease_slack_s,
        )
        self._emit(EventKind.INTERIM, res, now, charged_s=now - res.t_2xx)
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
    ) -> Reservation | None:
        """Free the reservation and write its one STOP. ``end_time`` (default ``now``) bounds the charge.

        Returns the released reservation, or ``None`` if nothing is held under ``key`` (already released).
        """
        res = self._held.pop(key, None)
        if res is None:
            return None
        keys = self._by_call_id.get(key.call_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_call_id[key.call_id]
        self._usage_of(res).add(class_demand(self.config, res.request), -1)
        stop_at = now if end_time is None else min(end_time, now)
        charged = max(0.0, stop_at - res.t_2xx) if res.state is ReservationState.ACTIVE else 0.0
        self._emit(EventKind.STOP, res, stop_at, charged_s=charged, end_reason=reason, sip_reason=sip_reason)
        if self._store is not None:
            self._store.delete(key)
        # Keep the cached grant for retransmissions only within the 2xx retransmission span.
        cached = self._decisions.get(key)
        if cached is not None and cached[1] <= now:
            del self._decisions[key]
        self.stats["released"] += 1
        log.info("released %s in %s: %s", key, res.grant.network, reason.value)
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

    def find(self, ref: DialogRef) -> Reservation | None:
        """The reservation a player's PUBLISH names (RFC 4235 call-id, local-tag, remote-tag).

        The caller's To-tag is its remote tag, the callee's its local tag; only the publisher's own
        reservations match.
        """
        for key in self._by_call_id.get(ref.call_id, ()):
            res = self._held[key]
            if res.request.player != ref.player:
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
        """
        res = self.find(op.ref)
        if res is None:
            return None
        if isinstance(op, Activate):
            return self.activate(res.key, now, op.expires_s)
        if isinstance(op, Refresh):
            return self.refresh(res.key, now, op.expires_s)
        return self.release(res.key, now, op.reason, sip_reason=op.sip_reason)

    def get(self, key: SessionKey) -> Reservation | None:
        return self._held.get(key)

    # ------------------------------------------------------------------------------------------------------------
    # Timers and start-up

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next run (epoch seconds), or ``None``."""
        while self._timers:
            when, _, kind, key = self._timers[0]
            if self._timer_is_live(when, kind, key):
                return when
            heapq.heappop(self._timers)
        return None

    def handle_timer(self, now: float) -> list[Reservation]:
        """Release every reservation whose deadline passed; forget stale cached decisions.

        Unconfirmed reservations end ``not-established``; ACTIVE ones ``lease-expired`` billed up to the last
        refresh + Expires (the lease the player asked for; the slack is not charged).
        """
        released: list[Reservation] = []
        while self._timers and self._timers[0][0] <= now:
            when, _, kind, key = heapq.heappop(self._timers)
            if not self._timer_is_live(when, kind, key):
                continue
            if kind == "cache":
                if key not in self._held:
                    del self._decisions[key]
                continue
            res = self._held[key]
            if res.state is ReservationState.RESERVED:
                out = self.release(key, now, EndReason.NOT_ESTABLISHED)
            else:
                out = self.release(key, now, EndReason.LEASE_EXPIRED, end_time=self._lease_end(res))
            if out is not None:
                released.append(out)
        return released

    def restore(self, now: float) -> list[Reservation]:
        """Load persisted reservations at start-up: re-hold the live ones, release (``server-restart``) the
        ones whose deadline passed while the server was down. Returns the released ones.
        """
        if self._store is None:
            return []
        released: list[Reservation] = []
        for res in self._store.load_all():
            if res.key in self._held:
                continue
            self._hold(res)
            if res.deadline <= now or self.config.network(res.grant.network) is None:
                # Ran out while we were down, or its network left the config: close it with one STOP.
                out = self.release(res.key, now, EndReason.SERVER_RESTART, end_time=self._lease_end(res))
                if out is not None:
                    released.append(out)
            else:
                self._remember(res.key, res.grant, res.t_2xx + self.config.settings.confirm_timeout_s)
        return released

    # ------------------------------------------------------------------------------------------------------------
    # Views

    def reservations(self) -> list[Reservation]:
        return sorted(self._held.values(), key=lambda r: r.t_2xx)

    def capacity(self) -> list[NetworkCapacity]:
        return capacity_view(self.config, self._held.values())

    def is_idle(self) -> bool:
        """True when nothing is held anywhere (every network at full capacity)."""
        return not self._held and all(u.is_idle() for u in self._usage.values())

    # ------------------------------------------------------------------------------------------------------------
    # Internals

    def _decide(self, request: AppSession) -> Decision:
        net = self.config.network_for_address(request.player_ip)
        if net is None:
            return Deny(
                network=None,
                resource=Resource.NETWORK,
                reason=f"no access network for {request.player_ip}",
            )
        return admit(self.config, self._usage[net.name], net, request)

    def _usage_of(self, res: Reservation) -> NetworkUsage:
        return self._usage.setdefault(res.grant.network, NetworkUsage())

    def _hold(self, res: Reservation) -> None:
        self._usage_of(res).add(class_demand(self.config, res.request))
        self._by_call_id.setdefault(res.key.call_id, set()).add(res.key)
        self._held[res.key] = res
        self._push(res.deadline, "held", res.key)

    def _update(self, res: Reservation) -> None:
        self._held[res.key] = res
        self._push(res.deadline, "held", res.key)
        if self._store is not None:
            self._store.save(res)

    def _remember(self, key: SessionKey, decision: Decision, until: float) -> None:
        self._decisions[key] = (decision, until)
        self._push(until, "cache", key)

    def _push(self, when: float, kind: str, key: SessionKey) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, kind, key))

    def _timer_is_live(self, when: float, kind: str, key: SessionKey) -> bool:
        if kind == "held":
            res = self._held.get(key)
            return res is not None and res.deadline == when
        cached = self._decisions.get(key)
        return cached is not None and cached[1] == when and key not in self._held

    def _lease_end(self, res: Reservation) -> float:
        if res.state is ReservationState.ACTIVE and res.t_last_refresh is not None:
            return res.t_last_refresh + res.expires_s
        return res.t_2xx

    def _record(self, request: AppSession, grant: Grant | None, network: str | None, t_2xx: float) -> BillingRecord:
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
        )

    def _emit(
        self,
        kind: EventKind,
        res: Reservation,
        time: float,
        *,
        charged_s: float,
        end_reason: EndReason | None = None,
        sip_reason: str | None = None,
    ) -> None:
        if self._billing is None:
            return
        record = self._record(res.request, res.grant, res.grant.network, res.t_2xx)
        self._billing.append(
            BillingEvent(
                kind=kind,
                time=time,
                record=record,
                end_reason=end_reason.value if end_reason else None,
                sip_reason=sip_reason,
                charged_s=max(0.0, charged_s),
            )
        )

    def _bill_attempt(self, request: AppSession, deny: Deny, now: float) -> None:
        if self._billing is None:
            return
        record = self._record(request, None, deny.network, now)
        self._billing.append(
            BillingEvent(
                kind=EventKind.STOP,
                time=now,
                record=record,
                end_reason=EndReason.QOS_FAILED.value,
                sip_reason=f"SIP;cause={deny.status_hint};text=\"{deny.reason}\"",
            )
        )


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
