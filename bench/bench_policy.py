"""Policy server figures: admission decisions per second, with and without SQLite, and over HTTP.

Run: ``python bench/bench_policy.py`` (from the repository root). Prints one line per measurement; ratios are
measured side by side in the same run. Every loop is bounded in count (and the HTTP one in time).

- preliminary: the pure admission check (nothing held); final: the reservation decision alone (memory);
- hooks: the policy's part of one call at a server with both players (SDP to terms once per offer and once per
  answer, PRELIMINARY and FINAL for both sides);
- final+release (memory): reserve then free, no persistence, no billing;
- final+release (sqlite): the same with reservations and billing in a WAL SQLite file;
- session lifecycle (sqlite): what one server does per game session: preliminary, final, activate (START),
  one refresh (INTERIM), release (STOP); twice that is what the policy adds to a setup through both servers;
- http final+release: the same pair over loopback HTTP/JSON (one connection per call).

``python bench/bench_policy.py --proxy [--calls N --rounds R]`` measures only the policy's share of
bench/bench_proxy.py's call (the embedded policy with its SQLite ledger, as the server runs it): the CPU time spent
inside the policy hooks (``invite_received``, ``answer_received`` and the rest) per call, next to the server's whole
CPU per call.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.billing import SqliteBillingStore
from server.policy import (
    AppSession,
    EndReason,
    MediaComponent,
    PolicyConfig,
    PolicyServer,
    Side,
    SqliteReservationStore,
    open_region_db,
)
from server.policy.http import PolicyHttpClient, PolicyHttpService

CONFIG: dict[str, Any] = {
    "access_networks": [
        {"name": f"net{i}", "prefixes": [f"10.{i}.0.0/16"], "uplink_kbps": 10_000_000,
         "downlink_kbps": 10_000_000, "rtt_ms": 10, "max_sessions": 1_000_000}
        for i in range(20)
    ],
    "classes": [{"name": "casual"}, {"name": "action", "max_share": 0.5, "priority": 5}],
    "tariff": {"action": {"per_minute": 0.02, "per_kbps_minute": 0.0001}},
}


def request(n: int) -> AppSession:
    return AppSession(
        call_id=f"bench-{n}", from_tag="f", to_tag=f"t{n}", side=Side.ORIG, player=f"sip:p{n % 1000}@eu.example",
        # A player keeps its address (as a region sees its players): the address -> network lookup is cached.
        peer="sip:x@na.example", player_ip=f"10.{n % 20}.{(n % 1000) >> 4}.{n % 1000 % 16}",
        components=(MediaComponent(uplink_kbps=64, downlink_kbps=128, max_latency_ms=100, qos_class="action"),),
        transit_rtt_ms=40, peer_access_rtt_ms=10,
    )


def tokens() -> Any:
    counter = itertools.count()
    return lambda: f"{next(counter):032x}"


class Clock:
    """Wall and CPU time of one measurement: on a shared machine CPU time per operation is the steadier figure."""

    def __init__(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall0, time.process_time() - self.cpu0


def rate(label: str, count: int, clock: Clock, unit: str = "decisions") -> float:
    """Print and return operations per CPU second (wall rate shown too)."""
    wall, cpu = clock.stop()
    per_cpu_s = count / cpu
    print(f"{label:<42} {per_cpu_s:>10,.0f} {unit}/CPU-s  {1e6 * cpu / count:8.1f} us CPU each  "
          f"(wall {count / wall:,.0f}/s, n={count})")
    return per_cpu_s


def bench_preliminary(config: PolicyConfig, n: int) -> float:
    policy = PolicyServer(config, token_factory=tokens())
    reqs = [request(i) for i in range(n)]
    clock = Clock()
    for r in reqs:
        policy.preliminary(r, 0.0)
    return rate("preliminary (pure core)", n, clock)


def bench_final_memory(config: PolicyConfig, n: int) -> float:
    """FINAL alone (the reservation decision on the 2xx path), no ledger: released outside the timed loop."""
    policy = PolicyServer(config, token_factory=tokens())
    reqs = [request(i) for i in range(n)]
    total = Clock()
    spent = 0.0
    for chunk in range(0, n, 1000):
        part = reqs[chunk:chunk + 1000]
        start = time.process_time()
        for r in part:
            policy.final(r, 0.0)
        spent += time.process_time() - start
        for r in part:
            policy.release(r.key, 1.0, EndReason.BYE_LOCAL)
    total.stop()
    print(f"{'final (pure core, memory)':<42} {n / spent:>10,.0f} decisions/CPU-s  {1e6 * spent / n:8.1f} us CPU each"
          f"  (n={n})")
    return n / spent


def bench_hooks(config: PolicyConfig, n: int) -> None:
    """The policy's part of one call at a server with both players (the one-server path): the offer's terms and
    PRELIMINARY for both sides on the INVITE, the answer's terms and FINAL for both sides on the 2xx."""
    from gamesdk.sdp.codec import format_sdp
    from gamesdk.sdp.examples import example_answer, example_offer
    from gamesdk.sip.message import Request, Response
    from gamesdk.sip.parser import parse_message_untrusted
    from server.hooks import CallInfo
    from server.policy.hooks import RegionPolicyHooks
    from server.publish import DialogPublications

    offer, answer = format_sdp(example_offer()).encode(), format_sdp(example_answer()).encode()

    def message(text: str, body: bytes) -> Any:
        return parse_message_untrusted((text + f"Content-Type: application/sdp\r\nContent-Length: {len(body)}"
                                        "\r\n\r\n").encode() + body)

    policy = PolicyServer(config, token_factory=tokens(), region="eu")
    tags = itertools.count()
    hooks = RegionPolicyHooks(backend=policy, config=config, domain="eu.example",
                              publications=DialogPublications(etag_factory=lambda: "e"), wall_clock=time.time,
                              tag_factory=lambda: f"t{next(tags)}", transit_rtt_ms=lambda d: None)
    calls, oks = [], []
    for i in range(n):
        head = (f"Via: SIP/2.0/UDP 10.1.0.7:5070;branch=z9hG4bK{i}\r\nFrom: <sip:p{i % 1000}@eu.example>;tag=a"
                f"\r\nTo: <sip:q{i % 1000}@eu.example>{{}}\r\nCall-ID: hook-{i}\r\nCSeq: 1 INVITE\r\n")
        invite: Request = message(f"INVITE sip:q@eu.example SIP/2.0\r\nMax-Forwards: 70\r\n{head.format('')}",
                                  offer)
        ok: Response = message(f"SIP/2.0 200 OK\r\n{head.format(';tag=b')}", answer)
        calls.append(CallInfo(call_id=invite.call_id, from_tag="a", caller=f"sip:p{i % 1000}@eu.example",
                              callee=f"sip:q{i % 1000}@eu.example", caller_local=True, callee_local=True,
                              caller_network=None, callee_network=None,
                              caller_address=(f"10.1.{(i % 1000) >> 4}.{i % 16}", 5070),
                              callee_address=(f"10.2.{(i % 1000) >> 4}.{i % 16}", 5070), peer_domain=None,
                              offer=invite.body, content_type=invite.content_type, invite=invite))
        oks.append(ok)
    spent_invite = spent_answer = 0.0
    for chunk in range(0, n, 500):
        start = time.process_time()
        for c in calls[chunk:chunk + 500]:
            hooks.invite_received(c, 0.0)
        mid = time.process_time()
        for c, ok in zip(calls[chunk:chunk + 500], oks[chunk:chunk + 500], strict=True):
            hooks.answer_received(c, ok, 0.0)
        spent_invite += mid - start
        spent_answer += time.process_time() - mid
        for res in policy.reservations():  # keep the networks from filling up (outside the timed part)
            policy.release(res.key, 1.0, EndReason.BYE_LOCAL)
    print(f"{'hooks, INVITE (offer terms + 2 PRELIMINARY)':<42} {1e6 * spent_invite / n:8.1f} us CPU per call")
    print(f"{'hooks, 2xx (answer terms + 2 FINAL)':<42} {1e6 * spent_answer / n:8.1f} us CPU per call  (n={n})")


def bench_final_release_memory(config: PolicyConfig, n: int) -> float:
    policy = PolicyServer(config, token_factory=tokens())
    reqs = [request(i) for i in range(n)]
    clock = Clock()
    for r in reqs:
        policy.final(r, 0.0)
        policy.release(r.key, 1.0, EndReason.BYE_LOCAL)
    return rate("final+release (pure core, memory)", n, clock, "pairs")


def sqlite_policy(config: PolicyConfig, path: Path) -> PolicyServer:
    conn = open_region_db(path)
    return PolicyServer(config, token_factory=tokens(), region="eu", store=SqliteReservationStore(conn),
                        billing=SqliteBillingStore(conn, config.tariff))


def bench_final_release_sqlite(config: PolicyConfig, n: int, path: Path) -> float:
    policy = sqlite_policy(config, path)
    reqs = [request(i) for i in range(n)]
    clock = Clock()
    for r in reqs:
        policy.final(r, 0.0)
        policy.release(r.key, 1.0, EndReason.BYE_LOCAL)
    return rate("final+release (sqlite WAL, billed)", n, clock, "pairs")


def bench_lifecycle_sqlite(config: PolicyConfig, n: int, path: Path) -> float:
    policy = sqlite_policy(config, path)
    reqs = [request(100_000 + i) for i in range(n)]
    clock = Clock()
    for r in reqs:
        policy.preliminary(r, 0.0)
        policy.final(r, 0.0)
        policy.activate(r.key, 1.0, 90)
        policy.refresh(r.key, 46.0, 90)
        policy.release(r.key, 60.0, EndReason.BYE_LOCAL)
    return rate("session lifecycle, one server (sqlite)", n, clock, "sessions")


async def _http(config: PolicyConfig, n: int, path: Path, max_s: float) -> tuple[int, Clock, list[float]]:
    policy = sqlite_policy(config, path)
    token = "bench-policy-token-0123456789"
    service = PolicyHttpService(policy, token=token)
    host, port = await service.start("127.0.0.1", 0)
    client = PolicyHttpClient(f"http://{host}:{port}", token=token, timeout_s=5.0)
    latencies: list[float] = []
    t0 = time.perf_counter()
    clock = Clock()
    done = 0
    try:
        for i in range(n):
            r = request(200_000 + i)
            t1 = time.perf_counter()
            await client.final(r)
            latencies.append(time.perf_counter() - t1)
            await client.release(r.key, EndReason.BYE_LOCAL)
            done += 1
            if time.perf_counter() - t0 > max_s:
                break
    finally:
        await client.close()
        await service.close()
    return done, clock, latencies


def bench_http(config: PolicyConfig, n: int, path: Path) -> float:
    done, clock, latencies = asyncio.run(_http(config, n, path, max_s=20.0))
    per_s = rate("http final+release (loopback, both ends)", done, clock, "pairs")
    latencies.sort()
    p50 = statistics.median(latencies) * 1e6
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1e6
    print(f"{'http FINAL round-trip latency':<42} p50 {p50:8.0f} us   p99 {p99:8.0f} us")
    return per_s


def bench_proxy_share(calls: int, rounds: int) -> None:
    """The policy's share of bench_proxy.py's call: CPU inside the hooks the node calls, per call."""
    import collections

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_proxy

    from server import cli

    spent: collections.Counter[str] = collections.Counter()
    clock = time.process_time

    def timed(name: str, method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                return method(*args, **kwargs)
            finally:
                spent[name] += clock() - t0
        return call

    with tempfile.TemporaryDirectory() as tmp, cli.serving_gc():
        node, realm = bench_proxy.setup(Path(tmp))
        # The node gets a stand-in that times the hooks it calls and passes everything else through (a compiled
        # build's hooks refuse instance attribute patches).
        hooks = node.hooks
        names = ("invite_received", "answer_received", "invite_failed", "bindings_removed", "get_timer",
                 "handle_timer", "publish_received")
        wrapped = {name: timed(name, getattr(hooks, name)) for name in names}

        class TimedHooks:
            def __getattr__(self, name: str) -> Any:
                return wrapped[name] if name in wrapped else getattr(hooks, name)

        node.set_hooks(TimedHooks())  # type: ignore[arg-type]
        now = time.monotonic()
        bench_proxy.login(node, realm, now)
        _, _, now = bench_proxy.run(node, realm, calls=200, now=now)
        for _ in range(rounds):
            spent.clear()
            total, done, now = bench_proxy.run(node, realm, calls=calls, now=now)
            policy = sum(spent.values())
            parts = ", ".join(f"{name} {1e6 * t / done:.1f}" for name, t in spent.most_common(3))
            print(f"bench_proxy call: server {1e6 * total / done:7.1f} us CPU, policy hooks {1e6 * policy / done:6.1f} us"
                  f" ({100 * policy / total:4.1f} %: {parts})  n={done}", flush=True)


def main() -> None:
    if "--proxy" in sys.argv:
        args = sys.argv[1:]
        calls = int(args[args.index("--calls") + 1]) if "--calls" in args else 1000
        rounds = int(args[args.index("--rounds") + 1]) if "--rounds" in args else 3
        bench_proxy_share(calls, rounds)
        return
    config = PolicyConfig.from_mapping(CONFIG)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; 20 access networks, 2 classes")
    with tempfile.TemporaryDirectory() as tmp:
        pre = bench_preliminary(config, 200_000)
        bench_final_memory(config, 100_000)
        bench_hooks(config, 5_000)
        mem = bench_final_release_memory(config, 100_000)
        sql = bench_final_release_sqlite(config, 5_000, Path(tmp) / "a.sqlite")
        life = bench_lifecycle_sqlite(config, 3_000, Path(tmp) / "b.sqlite")
        http = bench_http(config, 2_000, Path(tmp) / "c.sqlite")
    print(f"ratio sqlite/memory final+release: {sql / mem:.3f}; http/sqlite: {http / sql:.3f}")
    print(f"policy CPU per session through both servers (2 x lifecycle, sqlite): {2e6 / life:.0f} us")
    print(f"preliminary checks per final+release pair (memory): {pre / mem:.2f}")


if __name__ == "__main__":
    main()


# -- session setup through two real regional servers (SDK + UDP on loopback), with and without policy ----------


async def _setups(tmp: Path, with_policy: bool, sessions: int, run_no: int) -> tuple[float, float, list[float]]:
    import dataclasses as dc

    from gamesdk import ClientConfig, GameClient
    from server.config import load_config
    from server.io import EmbeddedServer
    from server.policy.runner import make_policy_hooks

    examples = Path(__file__).resolve().parent.parent / "examples"
    servers = {}
    for region in ("eu", "na"):
        config = dc.replace(load_config(examples / f"{region}.toml"),
                            database=tmp / f"{region}-{run_no}.sqlite3")
        factory = (lambda node, c=config: make_policy_hooks(c, node)) if with_policy else None
        servers[region] = EmbeddedServer(config, port=0, hooks_factory=factory)
        await servers[region].start()
    servers["eu"].set_peer("na.gamesdk.test", servers["na"].address)
    servers["na"].set_peer("eu.gamesdk.test", servers["eu"].address)
    servers["eu"].add_user("alice", "alice-pw")
    servers["na"].add_user("bob", "bob-pw")
    alice = GameClient(ClientConfig(username="alice", password="alice-pw", domain="eu.gamesdk.test",
                                    server=servers["eu"].address))
    bob = GameClient(ClientConfig(username="bob", password="bob-pw", domain="na.gamesdk.test",
                                  server=servers["na"].address))
    await alice.login()
    await bob.login()
    setup_s: list[float] = []
    cpu0, t0 = time.process_time(), time.perf_counter()
    try:
        for _ in range(sessions):
            async def answer() -> Any:
                return await (await bob.next_invite()).accept()

            callee = asyncio.create_task(answer())
            t1 = time.perf_counter()
            session = await alice.invite("bob@na.gamesdk.test", latency_ms=80, bandwidth_kbps=64)
            setup_s.append(time.perf_counter() - t1)
            await callee
            await session.end("bench")
            await asyncio.sleep(0.005)  # let the BYE and the terminated PUBLISHes land
    finally:
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        await alice.close()
        await bob.close()
        for server in servers.values():
            await server.stop()
    return cpu, wall, setup_s


def bench_setups(sessions: int = 40) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        # Interleaved, so drift (other load on the machine) hits both modes alike.
        for run_no, with_policy in enumerate((False, True, False, True)):
            cpu, _wall, setups = asyncio.run(_setups(Path(tmp), with_policy, sessions, run_no))
            prev = results.get(with_policy)
            results[with_policy] = (cpu, setups) if prev is None else (prev[0] + cpu, prev[1] + setups)
    for with_policy, (cpu, setups) in sorted(results.items()):
        label = "with policy (embedded, sqlite)" if with_policy else "without policy (NullPolicy)"
        print(f"session (setup+end) via eu+na, {label:<31} CPU {1e3 * cpu / len(setups):6.2f} ms/session, "
              f"setup p50 {1e3 * statistics.median(setups):6.2f} ms  (n={len(setups)}, SDKs+servers in one process)")
    extra_cpu = (results[True][0] - results[False][0]) / len(results[True][1])
    extra_p50 = statistics.median(results[True][1]) - statistics.median(results[False][1])
    print(f"policy adds {1e3 * extra_cpu:.2f} ms CPU per session and {1e3 * extra_p50:.2f} ms to the setup p50")


if __name__ == "__main__" and "--no-setup" not in sys.argv and "--proxy" not in sys.argv:
    bench_setups()
