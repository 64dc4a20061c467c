"""server/policy/admission: the admission rules, as pure functions over the config and current usage.

DESIGN section 4: admission checks bandwidth in both directions, the class share, the session count and the
latency budget (this access network's round-trip + transit to the peer region + the peer's access round-trip
must fit the session's ``lat``). We also refuse a network whose typical loss or jitter is already worse than the
session allows, since no reservation can fix that. The first rule that fails names the network and the resource.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import AccessNetwork, PolicyConfig, QosClass
from .model import AppSession, Deny, Grant, Resource

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
        for cls, (up, down) in demand.items():
            self.uplink_kbps += sign * up
            self.downlink_kbps += sign * down
            self.class_uplink_kbps[cls] = self.class_uplink_kbps.get(cls, 0) + sign * up
            self.class_downlink_kbps[cls] = self.class_downlink_kbps.get(cls, 0) + sign * down
            # Drop zero entries so an idle network compares equal to a fresh one (the leak test relies on it).
            if self.class_uplink_kbps[cls] == 0 and self.class_downlink_kbps[cls] == 0:
                del self.class_uplink_kbps[cls]
                del self.class_downlink_kbps[cls]

    def is_idle(self) -> bool:
        return self.sessions == 0 and self.uplink_kbps == 0 and self.downlink_kbps == 0


def class_demand(config: PolicyConfig, request: AppSession) -> dict[str, tuple[int, int]]:
    """(uplink, downlink) kbit/s asked for, per resolved class name."""
    demand: dict[str, tuple[int, int]] = {}
    for comp in request.components:
        name = config.qos_class(comp.qos_class).name
        up, down = demand.get(name, (0, 0))
        demand[name] = (up + comp.uplink_kbps, down + comp.downlink_kbps)
    return demand


def _request_problem(request: AppSession) -> str | None:
    if not request.components:
        return "no media component to reserve"
    for comp in request.components:
        if comp.uplink_kbps < 0 or comp.downlink_kbps < 0:
            return f"negative bandwidth in media component {comp.number}"
        if comp.max_latency_ms <= 0:
            return f"latency budget must be positive in media component {comp.number}"
    if request.transit_rtt_ms < 0 or request.peer_access_rtt_ms < 0:
        return "negative round-trip time in request"
    return None


def admit(config: PolicyConfig, usage: NetworkUsage, net: AccessNetwork, request: AppSession) -> Grant | Deny:
    """Decide whether ``request`` fits into ``net`` given what ``usage`` already holds. Holds nothing.

    Returns a :class:`Grant` without a token (the caller adds one when it reserves) or a :class:`Deny` naming the
    access network and the resource that is short. The rules are checked in the order the module docstring
    gives; one pass over the components gathers what they need (this runs on every INVITE and 2xx).
    """
    problem = _request_problem(request)
    if problem is not None:
        return Deny(network=net.name, resource=Resource.REQUEST, reason=problem, status_hint=400)
    demand: dict[str, tuple[int, int]] = {}
    classes: list[QosClass] = []
    budget_ms = loss_ppm = jitter_ms = -1
    up = down = 0
    for comp in request.components:
        cls = config.known_class(comp.qos_class)
        if cls is None:
            # never reserved and billed as another class than the agreement says
            known = ", ".join(c.name for c in config.classes)
            return Deny(
                network=net.name,
                resource=Resource.REQUEST,
                reason=f"unknown game classification {comp.qos_class!r} (this region serves: {known})",
            )
        classes.append(cls)
        c_up, c_down = comp.uplink_kbps, comp.downlink_kbps
        up += c_up
        down += c_down
        held_up, held_down = demand.get(cls.name, (0, 0))
        demand[cls.name] = (held_up + c_up, held_down + c_down)
        if budget_ms < 0 or comp.max_latency_ms < budget_ms:
            budget_ms = comp.max_latency_ms
        if comp.max_loss_ppm is not None and (loss_ppm < 0 or comp.max_loss_ppm < loss_ppm):
            loss_ppm = comp.max_loss_ppm
        if comp.max_jitter_ms is not None and (jitter_ms < 0 or comp.max_jitter_ms < jitter_ms):
            jitter_ms = comp.max_jitter_ms

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

    by_name = {c.name: c for c in classes}
    for cname, (c_up, c_down) in demand.items():
        share = by_name[cname].max_share
        if share >= 1.0:
            continue  # a class allowed the whole network was checked by the uplink/downlink rules above
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

    return Grant(
        token=None,
        network=net.name,
        qos_class=classes[0].name,
        priority=max(c.priority for c in classes),
        uplink_kbps=up,
        downlink_kbps=down,
        latency_ms=latency_ms,
    )
