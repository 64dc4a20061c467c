"""server/policy/admission: the admission rules, as pure functions over the config and current usage.

DESIGN section 4: admission checks bandwidth in both directions, the class share, the session count and the
latency budget (this access network's round-trip + transit to the peer region + the peer's access round-trip
must fit the session's ``lat``). We also refuse a network whose typical loss or jitter is already worse than the
session allows, since no reservation can fix that. The first rule that fails names the network and the resource.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from .config import AccessNetwork, PolicyConfig, QosClass
from .model import AppSession, Deny, Grant, MediaComponent, Resource

__all__ = ["NetworkUsage", "admit", "class_demand"]


@dataclass(slots=True)
class NetworkUsage:
    """What is currently held in one access network (mutable bookkeeping inside the policy server)."""

    sessions: int = 0
    uplink_kbps: int = 0
    downlink_kbps: int = 0
    class_uplink_kbps: dict[str, int] = field(default_factory=dict)
    class_downlink_kbps: dict[str, int] = field(default_factory=dict)

    def add(self, demand: dict[str, tuple[int, int]], sign: int = 1) -> None:
        self.sessions += sign
        class_up = self.class_uplink_kbps
        class_down = self.class_downlink_kbps
        for cls, (up, down) in demand.items():
            self.uplink_kbps += sign * up
            self.downlink_kbps += sign * down
            new_up = class_up.get(cls, 0) + sign * up
            new_down = class_down.get(cls, 0) + sign * down
            # Drop zero entries so an idle network compares equal to a fresh one (the leak test relies on it).
            if new_up == 0 and new_down == 0:
                class_up.pop(cls, None)
                class_down.pop(cls, None)
            else:
                class_up[cls] = new_up
                class_down[cls] = new_down

    def is_idle(self) -> bool:
        return self.sessions == 0 and self.uplink_kbps == 0 and self.downlink_kbps == 0


class _Asked:
    """What admission reads from a request's media components under one config, gathered once per components
    tuple (a call's requests share the tuple: the hooks keep it per game text): the component fault, the classes,
    the demand per class, the sums and the tightest budgets."""

    __slots__ = ("budget_ms", "class_demand", "classes", "down", "first_class", "grants", "jitter_ms", "loss_ppm",
                 "priority", "problem", "shares", "unknown", "up")

    def __init__(self, config: PolicyConfig, components: tuple[MediaComponent, ...]) -> None:
        #: The first fault of the components themselves (before the request's round trips are looked at).
        self.problem: str | None = _components_problem(components)
        #: The first classification no class of the config serves, if any (``None`` if all are served).
        self.unknown: tuple[str | None] | None = None
        self.classes: list[QosClass] = []
        #: (up, down) kbit/s per resolved class name, as :func:`class_demand` gives it.
        self.class_demand: dict[str, tuple[int, int]] = {}
        demand: dict[str, tuple[int, int]] = {}
        self.budget_ms = self.loss_ppm = self.jitter_ms = -1
        self.up = self.down = 0
        for comp in components:
            name = config.qos_class(comp.qos_class).name
            held_up, held_down = self.class_demand.get(name, (0, 0))
            self.class_demand[name] = (held_up + comp.uplink_kbps, held_down + comp.downlink_kbps)
            if self.unknown is not None:
                continue
            cls = config.known_class(comp.qos_class)
            if cls is None:
                self.unknown = (comp.qos_class,)
                continue
            self.classes.append(cls)
            self.up += comp.uplink_kbps
            self.down += comp.downlink_kbps
            held_up, held_down = demand.get(cls.name, (0, 0))
            demand[cls.name] = (held_up + comp.uplink_kbps, held_down + comp.downlink_kbps)
            if self.budget_ms < 0 or comp.max_latency_ms < self.budget_ms:
                self.budget_ms = comp.max_latency_ms
            if comp.max_loss_ppm is not None and (self.loss_ppm < 0 or comp.max_loss_ppm < self.loss_ppm):
                self.loss_ppm = comp.max_loss_ppm
            if comp.max_jitter_ms is not None and (self.jitter_ms < 0 or comp.max_jitter_ms < self.jitter_ms):
                self.jitter_ms = comp.max_jitter_ms
        #: The grant's class (the first component's) and priority (the highest of the classes).
        self.first_class = self.classes[0].name if self.classes else ""
        self.priority = max((c.priority for c in self.classes), default=0)
        #: The (token-less, immutable) grants admission gave, by (network, latency budget used): the same few per
        #: game and network, so they are made once. Emptied when full.
        self.grants: dict[tuple[str, int], Grant] = {}
        by_name = {c.name: c for c in self.classes}
        #: (class name, up, down, share) of each class limited to a share of the network (< 1), in demand order.
        self.shares: list[tuple[str, int, int, float]] = [
            (name, c_up, c_down, by_name[name].max_share) for name, (c_up, c_down) in demand.items()
            if by_name[name].max_share < 1.0
        ]


#: (config, components, what admission reads from them) by id(components); the entry keeps both alive, so an id
#: is not reused while its entry lives. Emptied when full.
_asked: Final[dict[int, tuple[PolicyConfig, tuple[MediaComponent, ...], _Asked]]] = {}
ASKED_MAX: Final = 256
#: Grants kept per components tuple (networks x latency budgets).
GRANTS_MAX: Final = 64


def _asked_of(config: PolicyConfig, components: tuple[MediaComponent, ...]) -> _Asked:
    found = _asked.get(id(components))
    if found is not None and found[1] is components and found[0] is config:
        return found[2]
    asked = _Asked(config, components)
    if len(_asked) >= ASKED_MAX:
        _asked.clear()
    _asked[id(components)] = (config, components, asked)
    return asked


def class_demand(config: PolicyConfig, request: AppSession) -> dict[str, tuple[int, int]]:
    """(uplink, downlink) kbit/s asked for, per resolved class name (kept per components tuple: do not change it)."""
    return _asked_of(config, request.components).class_demand


def _components_problem(components: tuple[MediaComponent, ...]) -> str | None:
    if not components:
        return "no media component to reserve"
    for comp in components:
        if comp.uplink_kbps < 0 or comp.downlink_kbps < 0:
            return f"negative bandwidth in media component {comp.number}"
        if comp.max_latency_ms <= 0:
            return f"latency budget must be positive in media component {comp.number}"
    return None


def admit(config: PolicyConfig, usage: NetworkUsage, net: AccessNetwork, request: AppSession) -> Grant | Deny:
    """Decide whether ``request`` fits into ``net`` given what ``usage`` already holds. Holds nothing.

    Returns a :class:`Grant` without a token (the caller adds one when it reserves) or a :class:`Deny` naming the
    access network and the resource that is short. The rules are checked in the order the module docstring
    gives; what they read from the media components is gathered once per components tuple (this runs on every
    INVITE and 2xx, twice each at a server with both players).
    """
    asked = _asked_of(config, request.components)
    problem = asked.problem
    if problem is None and (request.transit_rtt_ms < 0 or request.peer_access_rtt_ms < 0):
        problem = "negative round-trip time in request"
    if problem is not None:
        return Deny(network=net.name, resource=Resource.REQUEST, reason=problem, status_hint=400)
    if asked.unknown is not None:
        # never reserved and billed as another class than the agreement says
        known = ", ".join(c.name for c in config.classes)
        return Deny(
            network=net.name,
            resource=Resource.REQUEST,
            reason=f"unknown game classification {asked.unknown[0]!r} (this region serves: {known})",
        )
    budget_ms, loss_ppm, jitter_ms, up, down = asked.budget_ms, asked.loss_ppm, asked.jitter_ms, asked.up, asked.down

    if usage.sessions + 1 > net.max_sessions:
        return Deny(
            network=net.name,
            resource=Resource.SESSIONS,
            reason=f"session limit reached in {net.name} ({usage.sessions} of {net.max_sessions})",
        )

    latency_ms = net.rtt_ms + request.transit_rtt_ms + request.peer_access_rtt_ms
    if latency_ms > budget_ms:
        return Deny(
            network=net.name,
            resource=Resource.LATENCY,
            reason=(
                f"latency budget {latency_ms} ms exceeds {budget_ms} ms ({net.name} {net.rtt_ms} ms"
                f" + transit {request.transit_rtt_ms} ms + peer access {request.peer_access_rtt_ms} ms)"
            ),
        )
    if loss_ppm >= 0 and net.loss_ppm > loss_ppm:
        return Deny(
            network=net.name,
            resource=Resource.LOSS,
            reason=f"loss {net.loss_ppm} ppm in {net.name} exceeds {loss_ppm} ppm",
        )
    if jitter_ms >= 0 and net.jitter_ms > jitter_ms:
        return Deny(
            network=net.name,
            resource=Resource.JITTER,
            reason=f"jitter {net.jitter_ms} ms in {net.name} exceeds {jitter_ms} ms",
        )

    free_up = net.uplink_kbps - usage.uplink_kbps
    if up > free_up:
        return Deny(
            network=net.name,
            resource=Resource.UPLINK,
            reason=f"insufficient uplink in {net.name} (needs {up} kbit/s, {free_up} free)",
        )
    free_down = net.downlink_kbps - usage.downlink_kbps
    if down > free_down:
        return Deny(
            network=net.name,
            resource=Resource.DOWNLINK,
            reason=f"insufficient downlink in {net.name} (needs {down} kbit/s, {free_down} free)",
        )

    for cname, c_up, c_down, share in asked.shares:
        for direction, need, held, capacity in (
            ("uplink", c_up, usage.class_uplink_kbps.get(cname, 0), net.uplink_kbps),
            ("downlink", c_down, usage.class_downlink_kbps.get(cname, 0), net.downlink_kbps),
        ):
            # Integer floor of share * capacity: a class never gets a fraction of a kbit/s more than it may hold.
            allowed = int(share * capacity)
            if held + need > allowed:
                return Deny(
                    network=net.name,
                    resource=Resource.CLASS_SHARE,
                    reason=(
                        f"class share of {cname} exhausted in {net.name} {direction}"
                        f" (needs {need} kbit/s, {max(allowed - held, 0)} of {allowed} left)"
                    ),
                )

    grant = asked.grants.get((net.name, latency_ms))
    if grant is None:
        grant = Grant(token=None, network=net.name, qos_class=asked.first_class, priority=asked.priority,
                      uplink_kbps=up, downlink_kbps=down, latency_ms=latency_ms)
        if len(asked.grants) >= GRANTS_MAX:
            asked.grants.clear()
        asked.grants[(net.name, latency_ms)] = grant
    return grant
