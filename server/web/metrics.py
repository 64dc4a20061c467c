"""server/web/metrics: the region's figures in Prometheus format (``GET /metrics``, prometheus-client).

Most values are read from the server's own counters when scraped (nothing added to the SIP hot path); the
policy decision latency is timed around the policy backend, the event-loop lag by a small sampling task.
One registry per site, so several regions in one process (tests, the demo) do not mix their figures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["SiteMetrics", "TimedPolicyBackend"]

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _outcome(status: int) -> str:
    if 200 <= status < 300:
        return "established"
    if status in (480, 486, 600, 603):
        return "declined"
    if status in (404, 604):
        return "unknown"
    if status in (408, 504):
        return "timeout"
    if status == 487:
        return "cancelled"
    if status in (488, 580, 606):
        return "refused"
    return "failed"


class _NodeCollector(Collector):
    def __init__(self, site: Any) -> None:
        self.site = site

    def collect(self) -> Iterator[Any]:
        site = self.site
        node = site.node
        if node is None:
            return
        stats = node.stats
        yield _counter("gamesdk_sip_requests", "SIP requests received, by method",
                       [(("method",), (m,), n) for m, n in sorted(stats.by_method.items())])
        yield _counter("gamesdk_registrations", "REGISTER requests received",
                       [((), (), stats.by_method.get("REGISTER", 0))])
        regs = GaugeMetricFamily("gamesdk_registered_contacts", "Registered contacts now")
        regs.add_metric([], len(node.location))
        yield regs
        calls = CounterMetricFamily("gamesdk_calls", "Final responses to INVITEs seen by this server",
                                    labels=["outcome", "status"])
        for status, n in sorted(stats.invite_finals.items()):
            calls.add_metric([_outcome(status), str(status)], n)
        yield calls
        yield _counter("gamesdk_datagrams_in", "SIP datagrams received", [((), (), stats.datagrams_in)])
        yield _counter("gamesdk_datagrams_out", "SIP datagrams sent", [((), (), stats.datagrams_out)])
        yield _counter("gamesdk_malformed", "SIP datagrams that did not parse", [((), (), stats.malformed)])
        peers = GaugeMetricFamily("gamesdk_peer_rtt_seconds", "Measured round trip to each peer region",
                                  labels=["peer"])
        for peer in node.federation.peers():
            if peer.min_rtt_s is not None:
                peers.add_metric([peer.domain], peer.min_rtt_s)
        yield peers
        report = site.sessions_report()
        held = GaugeMetricFamily("gamesdk_reservations_held", "Reservations held now, per access network",
                                 labels=["network"])
        up = GaugeMetricFamily("gamesdk_bandwidth_reserved_kbps", "Bandwidth reserved now, kbit/s",
                               labels=["network", "direction"])
        if report is not None:
            for cap in report.capacity:
                held.add_metric([cap.network], cap.sessions)
                up.add_metric([cap.network, "up"], cap.uplink_used_kbps)
                up.add_metric([cap.network, "down"], cap.downlink_used_kbps)
        yield held
        yield up
        web = GaugeMetricFamily("gamesdk_web_sessions", "Web logins alive now")
        web.add_metric([], len(site.sessions))
        yield web


def _counter(name: str, doc: str, rows: list[tuple[tuple[str, ...], tuple[str, ...], float]]) -> Any:
    labels = list(rows[0][0]) if rows else []
    family = CounterMetricFamily(name, doc, labels=labels)
    for _, values, n in rows:
        family.add_metric(list(values), n)
    return family


class SiteMetrics:
    """The registry of one region's site and the few values measured as they happen."""

    def __init__(self, site: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_NodeCollector(site))
        self.logins_refused = Counter("gamesdk_logins_refused", "Logins refused (SIP and web), by where and why",
                                      ["where", "reason"], registry=self.registry)
        self.policy_refusals = Counter("gamesdk_policy_refusals", "Policy decisions that refused, by resource",
                                       ["stage", "resource"], registry=self.registry)
        self.policy_latency = Histogram("gamesdk_policy_decision_seconds", "Time of one policy decision",
                                        ["stage"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.loop_lag = Histogram("gamesdk_event_loop_lag_seconds", "How late the event loop ran a 0.25 s timer",
                                  buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.web_invites = Counter("gamesdk_web_invites", "Invites started from the web site, by final step",
                                   ["step"], registry=self.registry)
        self.web_refused = Counter("gamesdk_web_requests_refused", "Web requests refused (503) over the rate cap",
                                   registry=self.registry)
        self._lag_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._lag_task = asyncio.get_running_loop().create_task(self._sample_lag())

    async def stop(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
            try:
                await self._lag_task
            except asyncio.CancelledError:
                pass
            self._lag_task = None

    async def _sample_lag(self, interval: float = 0.25) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(interval)
            self.loop_lag.observe(max(0.0, loop.time() - start - interval))


class TimedPolicyBackend:
    """Wraps the policy backend of the SIP server's hooks: times each decision, counts refusals by resource.

    Every other attribute is the wrapped backend's, so the hooks see no difference.
    """

    def __init__(self, backend: Any, metrics: SiteMetrics, clock: Callable[[], float] = time.perf_counter) -> None:
        self._backend = backend
        self._metrics = metrics
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def _decide(self, stage: str, request: Any, *args: Any, **kwargs: Any) -> Any:
        start = self._clock()
        decision = getattr(self._backend, stage)(request, *args, **kwargs)
        self._metrics.policy_latency.labels(stage).observe(self._clock() - start)
        resource = getattr(decision, "resource", None)
        if resource is not None:
            self._metrics.policy_refusals.labels(stage, getattr(resource, "value", str(resource))).inc()
        return decision

    def preliminary(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self._decide("preliminary", request, *args, **kwargs)

    def final(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return self._decide("final", request, *args, **kwargs)
