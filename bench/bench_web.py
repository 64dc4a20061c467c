"""The web site under load while SIP sessions are set up, and what the web load costs the SIP setups.

Two regional servers run as their own processes (``python -m server run``); eu serves its web site ([web]) on its
own event loop. In this process, asyncio ``GameClient`` pairs set sessions up through both regions (invite ->
established -> end) for a fixed time, three times in one run:

1. SIP only;
2. SIP while a second process keeps ``--web-sessions`` (default 50) logged-in web sessions busy: each loops over
   the lobby (``GET /``), the match history and ``GET /metrics``, ``--think-s`` (default 1 s) between requests
   like a person on a live page (0: back to back, a saturation test); that process reports page latency;
3. SIP only again (brackets the noise of a shared machine).

Prints setups/s of each phase and the ratio with/without web load (same run, side by side). Bounded: every phase
has a time cap, every web session a request count. No thresholds are asserted.

    python bench/bench_web.py [--pairs 8] [--seconds 8] [--web-sessions 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_server import h, tree_cpu_s
from bench_setup import EU, NA, PASSWORD, make_pair, throughput

from server.accounts import AccountStore
from server.config import load_config

MAX_REQUESTS_PER_SESSION = 100_000


def free_tcp_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_regions(workdir: Path, pairs: int, web_port: int) -> tuple[Any, Any]:
    eu_port, na_port = h.free_udp_ports(2)
    eu = h.RegionServer(workdir, "eu", EU, eu_port, [(NA, na_port)],
                        overrides={"web": {"listen": f"http://127.0.0.1:{web_port}"}})
    na = h.RegionServer(workdir, "na", NA, na_port, [(EU, eu_port)])
    for region, prefix in ((eu, "alice"), (na, "bob")):
        config = load_config(region.config_path)
        store = AccountStore(config.database, config.auth.realm, config.auth.digest_algorithms)
        for i in range(pairs):
            store.add(f"{prefix}{i}", PASSWORD, now=time.time())
        store.close()
    for region in (eu, na):
        region.start()
    return eu, na


# -- the web load (its own process, so its client CPU does not slow the SIP players) ------------------------


async def web_load(url: str, sessions: int, seconds: float, users: int, think_s: float) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + seconds

    async def one(i: int) -> None:
        nonlocal errors
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.get(url + "/login") as page:
                token = re.search(r'name="csrf" value="([^"]+)"', await page.text())
            assert token is not None
            async with http.post(url + "/login", data={"csrf": token.group(1), "user": f"alice{i % users}",
                                                       "password": PASSWORD}, allow_redirects=False) as resp:
                if resp.status != 302:
                    errors += 1
                    return
            paths = ("/", "/history", "/", "/metrics")
            for n in range(MAX_REQUESTS_PER_SESSION):
                if loop.time() >= stop_at:
                    return
                t0 = time.perf_counter()
                async with http.get(url + paths[n % len(paths)]) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - t0)
                if think_s > 0:
                    await asyncio.sleep(think_s)  # a person on a live page, not a loop hammering it

    await asyncio.gather(*(one(i) for i in range(sessions)))
    latencies.sort()
    return {"requests": len(latencies), "errors": errors,
            "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else 0.0,
            "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else 0.0,
            "max_ms": 1000 * latencies[-1] if latencies else 0.0,
            "mean_ms": 1000 * statistics.fmean(latencies) if latencies else 0.0}


# -- the run -------------------------------------------------------------------------------------------------


async def sip_phase(clients: list[Any], seconds: float) -> tuple[int, int, float]:
    return await throughput(clients, seconds)


async def main_async(args: argparse.Namespace, eu: Any, na: Any, url: str) -> None:
    clients = [await make_pair(eu, na, i) for i in range(args.pairs)]
    await sip_phase(clients, 1.0)  # warm-up: challenges cached, first sessions out of the way
    rows: list[tuple[str, int, int, float, float]] = []
    web: dict[str, Any] = {}
    for phase in ("SIP only", "SIP + web load", "SIP only (again)"):
        load = None
        if phase == "SIP + web load":
            load = subprocess.Popen([sys.executable, __file__, "--web-load", url, "--web-sessions",  # noqa: ASYNC220
                                     str(args.web_sessions), "--seconds", str(args.seconds + 1.0),
                                     "--think-s", str(args.think_s),
                                     "--pairs", str(args.pairs)], stdout=subprocess.PIPE, text=True)
            await asyncio.sleep(1.0)  # the sessions log in before the SIP phase starts
        cpu0 = tree_cpu_s(eu.pid)
        done, failed, elapsed = await sip_phase(clients, args.seconds)
        cpu1 = tree_cpu_s(eu.pid)
        rows.append((phase, done, failed, done / elapsed if elapsed else 0.0, cpu1 - cpu0))
        if load is not None:
            out, _ = load.communicate(timeout=args.seconds + 60)
            web = json.loads(out.strip().splitlines()[-1])
    for a, b in clients:
        await a.close()
        await b.close()
    print(f"load average after: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    print(f"\nsession setups through eu -> na with policy, {args.pairs} pairs, {args.seconds:g} s per phase")
    print(f"{'phase':18} {'setups':>7} {'failed':>7} {'setups/s':>9} {'eu CPU s':>9}")
    for phase, done, failed, rate, cpu in rows:
        print(f"{phase:18} {done:7d} {failed:7d} {rate:9.1f} {cpu:9.2f}")
    base = (rows[0][3] + rows[2][3]) / 2
    if base:
        print(f"\nsetups/s with the web load / without (mean of both SIP-only phases): {rows[1][3] / base:.2f}")
    if web:
        print(f"\nweb: {args.web_sessions} logged-in sessions (lobby, history, metrics; {args.think_s:g} s between "
              f"requests) on eu's event loop: "
              f"{web['requests']} requests, {web['errors']} errors, p50 {web['p50_ms']:.1f} ms, "
              f"p99 {web['p99_ms']:.1f} ms, max {web['max_ms']:.1f} ms, "
              f"{web['requests'] / (args.seconds + 1.0):.0f} requests/s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--web-sessions", type=int, default=50)
    p.add_argument("--think-s", type=float, default=1.0,
                   help="pause of each web session between requests (0: back to back, a saturation test)")
    p.add_argument("--web-load", metavar="URL", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.web_load:
        print(json.dumps(asyncio.run(web_load(args.web_load, args.web_sessions, args.seconds, args.pairs, args.think_s))))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        web_port = free_tcp_port()
        eu, na = start_regions(Path(tmp), args.pairs, web_port)
        try:
            asyncio.run(main_async(args, eu, na, f"http://127.0.0.1:{web_port}"))
        finally:
            eu.stop()
            na.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
