"""Session setup through both regional servers, measured from the SDK (issue 5).

Two regional servers run as their own processes (``python -m server run``, example configs on free ports, policy
as configured there). In this process, asyncio ``GameClient`` players:

1. latency: one pair, sessions one after another: ``invite()`` called -> session established, on the caller side
   (``invite()`` returned: 200 received, answer checked, ACK sent, channel opened) and on the callee side
   (ACK received, channel opened), p50 / p99 / max;
2. throughput: many pairs at once, each repeating invite -> established -> end for a fixed time: sessions/s, and
   the servers' CPU per session from /proc.

3. with ``--hops N``: N more sequential sessions with a timestamp on every SIP datagram the two players send
   and receive (one process, one clock): the median time of each step, to see which hop costs what;
4. with ``--profile-servers DIR``: both servers run under cProfile with a CPU-time clock (py-spy samples wall
   time and charges a sender's preemption inside sendto to sendto); ``DIR/eu.prof`` and ``DIR/na.prof`` are
   written when they stop, and their top functions printed.

Bounded: a session count and a time cap for each part. Prints a table; no thresholds are asserted.

    python bench/bench_setup.py [--sessions 1000] [--pairs 16] [--seconds 10] [--hops N (default 0: none)]
        [--profile-servers DIR]
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
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_server import CPROFILE_WRAPPER, cprofile_summary, h, tree_cpu_s

from gamesdk import ClientConfig, GameClient, GameSession, SessionError
from server.accounts import AccountStore
from server.config import load_config

EU, NA = "eu.gamesdk.test", "na.gamesdk.test"
PASSWORD = "bench-pw"


def start_regions(workdir: Path, pairs: int, profile_dir: Path | None = None) -> tuple[object, object]:
    eu_port, na_port = h.free_udp_ports(2)
    eu = h.RegionServer(workdir, "eu", EU, eu_port, [(NA, na_port)])
    na = h.RegionServer(workdir, "na", NA, na_port, [(EU, eu_port)])
    for region, prefix in ((eu, "alice"), (na, "bob")):
        config = load_config(region.config_path)
        store = AccountStore(config.database, config.auth.realm, config.auth.digest_algorithms)
        for i in range(pairs):
            store.add(f"{prefix}{i}", PASSWORD, now=time.time())
        store.close()
    for region in (eu, na):
        if profile_dir is None:
            region.start()
        else:
            region.start(python_args=["-c", CPROFILE_WRAPPER, str(profile_dir / f"{region.name}.prof")])
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


def _label(data: bytes) -> str:
    """``INVITE`` for a request, ``180 INVITE`` for a response (with its CSeq method)."""
    head = data[: data.find(b"\r\n")].decode("utf-8", "replace")
    if not head.startswith("SIP/2.0"):
        return head.split(" ", 1)[0]
    start = data.find(b"\r\nCSeq:")
    method = data[start: data.find(b"\r\n", start + 2)].split()[-1].decode() if start >= 0 else "?"
    return f"{head.split(' ')[1]} {method}"


async def hops(alice: GameClient, bob: GameClient, sessions: int, cap_s: float) -> list[tuple[str, float, int]]:
    """Median time after ``invite()`` of every step of the setup, from both players' sockets (same clock)."""
    loop = asyncio.get_running_loop()
    marks: list[tuple[str, float]] = []
    for who, client in (("alice", alice), ("bob", bob)):
        transport = client._transport
        feed = client._feed
        assert transport is not None

        def sendto(data: bytes, addr: object = None, _send: Any = transport.sendto, _who: str = who) -> None:
            marks.append((f"{_who} sends {_label(data)}", loop.time()))
            _send(data, addr)

        def fed(data: bytes, addr: tuple[str, int], _feed: Any = feed, _who: str = who) -> None:
            label = _label(data)
            marks.append((f"{_who} receives {label}", loop.time()))
            _feed(data, addr)
            marks.append((f"{_who} has handled {label}", loop.time()))

        transport.sendto = sendto  # type: ignore[method-assign,assignment]
        client._feed = fed  # type: ignore[method-assign]
    steps: dict[str, list[float]] = {}
    deadline = time.monotonic() + cap_s
    for _ in range(sessions):
        if time.monotonic() > deadline:
            break
        marks.clear()
        t0 = loop.time()

        async def answer() -> GameSession:
            session = await (await bob.next_invite()).accept()
            marks.append(("bob: accept() returned", loop.time()))
            return session

        task = asyncio.create_task(answer())
        session = await alice.invite(f"{bob.config.username}@{NA}", latency_ms=80)
        marks.append(("alice: invite() returned", loop.time()))
        bob_session = await task
        seen: set[str] = set()
        for name, t in marks:
            if name not in seen:  # the first of each (a retransmission or the last session's stragglers aside)
                seen.add(name)
                steps.setdefault(name, []).append((t - t0) * 1000)
        await session.end("bench")
        await bob_session.ended.wait()
        await asyncio.sleep(0.05)  # the BYE's and PUBLISHes' answers arrive before the next setup
    rows = [(name, statistics.median(values), len(values)) for name, values in steps.items()]
    return sorted(rows, key=lambda row: row[1])


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
            except (TimeoutError, SessionError):
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
    steps = await hops(*clients[-1], args.hops, args.cap_s) if args.hops else []
    cpu0 = tree_cpu_s(eu.pid) + tree_cpu_s(na.pid)  # type: ignore[attr-defined]
    own0 = sum(os.times()[:2])
    done, failed, elapsed = await throughput(clients, args.seconds)
    cpu1 = tree_cpu_s(eu.pid) + tree_cpu_s(na.pid)  # type: ignore[attr-defined]
    own1 = sum(os.times()[:2])
    for a, b in clients:
        await a.close()
        await b.close()

    print(f"load average before: {args.load_before}; after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f} ({os.cpu_count()} CPUs)")
    print(f"\nsession setup through eu -> na with policy, {len(caller)} sequential sessions "
          f"({int(result['failures'][0])} failed)")
    print(f"{'side':8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'mean ms':>8}")
    for name, values in (("caller", caller), ("callee", callee)):
        print(f"{name:8} {percentile(values, 0.5):8.2f} {percentile(values, 0.99):8.2f} {max(values):8.2f} "
              f"{statistics.fmean(values):8.2f}")
    if steps:
        print(f"\nsteps of one setup (median ms after invite() was called, {steps[0][2]} sessions):")
        for name, ms, n in steps:
            print(f"  {ms:7.2f}  {name}" + (f"  (in {n})" if n != steps[0][2] else ""))
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
    parser.add_argument("--hops", type=int, default=0, help="sessions timed step by step (0: none)")
    parser.add_argument("--profile-servers", type=Path, default=None, metavar="DIR",
                        help="run both servers under cProfile (CPU time), stats in DIR/eu.prof and DIR/na.prof")
    args = parser.parse_args(argv)
    args.load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if args.profile_servers is not None:
        args.profile_servers.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gamesdk-bench-") as tmp:
        eu, na = start_regions(Path(tmp), max(1, args.pairs), args.profile_servers)
        try:
            asyncio.run(main_async(args, eu, na))
        finally:
            eu.stop()  # type: ignore[attr-defined]
            na.stop()  # type: ignore[attr-defined]
    if args.profile_servers is not None:
        for name in ("eu", "na"):
            path = args.profile_servers / f"{name}.prof"
            if path.exists():
                print(f"\n--- {name} server, CPU profile ({path}) ---")
                print(cprofile_summary(path, top=20))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
