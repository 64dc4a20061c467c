"""Session setup through both regional servers, measured from the SDK (issue 5).

Two regional servers run as their own processes (``python -m server run``, example configs on free ports, policy
as configured there). In this process, asyncio ``GameClient`` players:

1. latency: one pair, sessions one after another: ``invite()`` called -> session established, on the caller side
   (``invite()`` returned: 200 received, answer checked, ACK sent, channel opened) and on the callee side
   (ACK received, channel opened), p50 / p99 / max;
2. throughput: many pairs at once, each repeating invite -> established -> end for a fixed time: sessions/s, and
   the servers' CPU per session from /proc.

Bounded: a session count and a time cap for each part. Prints a table; no thresholds are asserted.

    python bench/bench_setup.py [--sessions 1000] [--pairs 16] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_server import h, tree_cpu_s  # noqa: E402  (process harness shared with the SIPp tests)

from gamesdk import ClientConfig, GameClient, GameSession, SessionError  # noqa: E402
from server.accounts import AccountStore  # noqa: E402
from server.config import load_config  # noqa: E402

EU, NA = "eu.gamesdk.test", "na.gamesdk.test"
PASSWORD = "bench-pw"


def start_regions(workdir: Path, pairs: int) -> tuple[object, object]:
    eu_port, na_port = h.free_udp_ports(2)
    eu = h.RegionServer(workdir, "eu", EU, eu_port, [(NA, na_port)])
    na = h.RegionServer(workdir, "na", NA, na_port, [(EU, eu_port)])
    for region, prefix in ((eu, "alice"), (na, "bob")):
        config = load_config(region.config_path)
        store = AccountStore(config.database, config.auth.realm, config.auth.digest_algorithms)
        for i in range(pairs):
            store.add(f"{prefix}{i}", PASSWORD, now=time.time())
        store.close()
    eu.start()
    na.start()
    return eu, na


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def make_pair(eu: object, na: object, i: int) -> tuple[GameClient, GameClient]:
    alice = GameClient(ClientConfig(username=f"alice{i}", password=PASSWORD, domain=EU, server=("127.0.0.1", eu.port)))  # type: ignore[attr-defined]
    bob = GameClient(ClientConfig(username=f"bob{i}", password=PASSWORD, domain=NA, server=("127.0.0.1", na.port)))  # type: ignore[attr-defined]
    await alice.login()
    await bob.login()
    return alice, bob


async def latency(alice: GameClient, bob: GameClient, sessions: int, cap_s: float) -> dict[str, list[float]]:
    loop = asyncio.get_running_loop()
    caller: list[float] = []
    callee: list[float] = []
    failures = 0
    deadline = time.monotonic() + cap_s
    for _ in range(sessions):
        if time.monotonic() > deadline:
            break
        t0 = loop.time()

        async def answer() -> tuple[GameSession, float]:
            session = await (await bob.next_invite()).accept()
            return session, loop.time()

        task = asyncio.create_task(answer())
        try:
            session = await alice.invite(f"bob{bob.config.username[3:]}@{NA}", latency_ms=80)
        except SessionError:
            failures += 1
            task.cancel()
            continue
        t_caller = loop.time()
        bob_session, t_callee = await task
        caller.append((t_caller - t0) * 1000)
        callee.append((t_callee - t0) * 1000)
        await session.end("bench")
        await bob_session.ended.wait()
    return {"caller": caller, "callee": callee, "failures": [float(failures)]}


async def throughput(clients: list[tuple[GameClient, GameClient]], seconds: float) -> tuple[int, int, float]:
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + seconds
    done = 0
    failed = 0

    async def callee_loop(bob: GameClient) -> None:
        while True:
            invite = await bob.next_invite()
            try:
                await invite.accept()
            except SessionError:
                pass

    async def caller_loop(alice: GameClient, peer: str) -> None:
        nonlocal done, failed
        while loop.time() < stop_at:
            try:
                session = await asyncio.wait_for(alice.invite(peer, latency_ms=80), 10)
            except (SessionError, asyncio.TimeoutError):
                failed += 1
                continue
            done += 1
            await session.end("bench")

    callees = [asyncio.create_task(callee_loop(bob)) for _, bob in clients]
    t0 = loop.time()
    await asyncio.gather(*(caller_loop(a, f"{b.config.username}@{NA}") for a, b in clients))
    elapsed = loop.time() - t0
    await asyncio.sleep(0.2)
    for task in callees:
        task.cancel()
    return done, failed, elapsed


async def main_async(args: argparse.Namespace, eu: object, na: object) -> None:
    clients = [await make_pair(eu, na, i) for i in range(args.pairs)]
    alice, bob = clients[0]
    # warm-up: the first INVITE takes the 407 round trip, later ones reuse the cached challenge
    await latency(alice, bob, 5, 10)
    result = await latency(alice, bob, args.sessions, args.cap_s)
    caller, callee = result["caller"], result["callee"]
    cpu0 = tree_cpu_s(eu.pid) + tree_cpu_s(na.pid)  # type: ignore[attr-defined]
    own0 = sum(os.times()[:2])
    done, failed, elapsed = await throughput(clients, args.seconds)
    cpu1 = tree_cpu_s(eu.pid) + tree_cpu_s(na.pid)  # type: ignore[attr-defined]
    own1 = sum(os.times()[:2])
    for a, b in clients:
        await a.close()
        await b.close()

    print(f"\nsession setup through eu -> na with policy, {len(caller)} sequential sessions "
          f"({int(result['failures'][0])} failed)")
    print(f"{'side':8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'mean ms':>8}")
    for name, values in (("caller", caller), ("callee", callee)):
        print(f"{name:8} {percentile(values, 0.5):8.2f} {percentile(values, 0.99):8.2f} {max(values):8.2f} "
              f"{statistics.fmean(values):8.2f}")
    rate = done / elapsed if elapsed else 0.0
    print(f"\nthroughput: {args.pairs} pairs for {elapsed:.1f} s: {done} sessions set up and ended, {failed} failed, "
          f"{rate:.0f} sessions/s")
    if done:
        print(f"server CPU per session (eu + na): {(cpu1 - cpu0) / done * 1e6:.0f} us; "
              f"players' CPU per session (both SDKs, this process): {(own1 - own0) / done * 1e6:.0f} us")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Session setup latency and rate through two regional servers")
    parser.add_argument("--sessions", type=int, default=1000, help="sequential sessions for the latency figures")
    parser.add_argument("--pairs", type=int, default=16, help="concurrent player pairs for the rate")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the rate run lasts")
    parser.add_argument("--cap-s", type=float, default=120.0, help="time cap for the latency part")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gamesdk-bench-") as tmp:
        eu, na = start_regions(Path(tmp), max(1, args.pairs))
        try:
            asyncio.run(main_async(args, eu, na))
        finally:
            eu.stop()  # type: ignore[attr-defined]
            na.stop()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
