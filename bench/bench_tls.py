"""SIP over TLS with signed identities next to plain UDP, in the same run.

Two regions (eu, na) run embedded in threads of this process, once listening on UDP only (no certificates, so
no identities) and once on UDP + TLS with certificates made on the fly (players over TLS; the regions sign
identities and the SDKs verify them). asyncio ``GameClient`` players measure, for each mode:

1. logins/s: players logging in one after another (over TLS each login opens its connection: TCP + TLS
   handshake + REGISTER/401/REGISTER/200);
2. setups/s: ``--pairs`` pairs at once, each repeating invite -> established -> end;
3. setup latency p50 / p99: one pair, sessions one after another, ``invite()`` called -> session established.

Then the CPU cost of the identities per session: two PASSporTs signed (the caller's region on the INVITE, the
callee's on the 2xx) and two verified (the callee's SDK, the caller's SDK), from ``time.process_time``.

Bounded: a count and a time cap for every loop. Prints a table; no thresholds are asserted.

    python bench/bench_tls.py [--logins 60] [--sessions 200] [--pairs 4] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gamesdk import ClientConfig, GameClient, GameSession
from gamesdk.identity import IdentitySigner, IdentityVerifier, load_pem_chain
from server.certs import make_test_pki
from server.config import ListenAddress, load_config
from server.io import EmbeddedServer
from server.tls_config import TlsConfig

EU, NA = "eu.gamesdk.test", "na.gamesdk.test"
PASSWORD = "bench-pw"


@dataclasses.dataclass
class Mode:
    name: str
    eu: EmbeddedServer
    na: EmbeddedServer
    pki: Path | None

    def client(self, user: str, region: str) -> GameClient:
        server = self.eu if region == "eu" else self.na
        domain = EU if region == "eu" else NA
        if self.pki is None:
            return GameClient(ClientConfig(username=user, password=PASSWORD, domain=domain, server=server.address))
        assert server.tls_address is not None
        host, port = server.tls_address
        return GameClient(ClientConfig(username=user, password=PASSWORD, domain=domain, server=f"tls:{host}:{port}",
                                       ca=self.pki / "ca.crt"))


def start(workdir: Path, name: str, users: int, pki: Path | None) -> Mode:
    servers = []
    for region in ("eu", "na"):
        config = dataclasses.replace(load_config(REPO / "examples" / f"{region}.toml"),
                                     database=workdir / f"{name}-{region}.sqlite3")
        if pki is not None:
            domain = config.domain
            config = dataclasses.replace(
                config, listen_more=(ListenAddress("tls", "127.0.0.1", 0),),
                tls=TlsConfig(certificate=pki / f"{domain}.crt", key=pki / f"{domain}.key", ca=pki / "ca.crt"))
        server = EmbeddedServer(config, port=0)
        prefix = "alice" if region == "eu" else "bob"
        for i in range(users):
            server.add_user(f"{prefix}{i}", PASSWORD)
        server.start_in_thread()
        servers.append(server)
    eu, na = servers
    eu.set_peer(NA, na.address)
    na.set_peer(EU, eu.address)
    return Mode(name, eu, na, pki)


async def logins(mode: Mode, count: int, seconds: float) -> float:
    done = 0
    began = time.perf_counter()
    deadline = began + seconds
    while done < count and time.perf_counter() < deadline:
        client = mode.client(f"alice{done % 50}", "eu")
        await client.login()
        done += 1
        await client.close()
    return done / (time.perf_counter() - began)


async def _answer_forever(client: GameClient) -> None:
    while True:
        invite = await client.next_invite()
        session = await invite.accept()
        asyncio.get_running_loop().create_task(_wait_end(session))


async def _wait_end(session: GameSession) -> None:
    from gamesdk.events import SessionEnded

    while not isinstance(await session.next_event(), SessionEnded):
        pass


async def setups(mode: Mode, pairs: int, count: int, seconds: float) -> tuple[float, list[float]]:
    callers, callees = [], []
    for i in range(pairs):
        caller, callee = mode.client(f"alice{i}", "eu"), mode.client(f"bob{i}", "na")
        await caller.login()
        await callee.login()
        callers.append(caller)
        callees.append(callee)
    answering = [asyncio.create_task(_answer_forever(c)) for c in callees]
    latencies: list[float] = []
    state = {"done": 0}
    began = time.perf_counter()
    deadline = began + seconds

    async def run(i: int) -> None:
        while state["done"] < count and time.perf_counter() < deadline:
            t0 = time.perf_counter()
            session = await callers[i].invite(f"bob{i}@{NA}")
            latencies.append(time.perf_counter() - t0)
            state["done"] += 1
            await session.end("bench", linger_s=0)

    await asyncio.gather(*(run(i) for i in range(pairs)))
    elapsed = time.perf_counter() - began
    for task in answering:
        task.cancel()
    for client in callers + callees:
        await client.close()
    return state["done"] / elapsed, latencies


def identity_cpu(pki: Path, rounds: int) -> tuple[float, float]:
    """CPU seconds to sign and to verify one PASSporT (each session needs two of each)."""
    signer = IdentitySigner.from_pem(EU, (pki / f"{EU}.crt").read_bytes(), (pki / f"{EU}.key").read_bytes(),
                                     time.time)
    verifier = IdentityVerifier(load_pem_chain((pki / "ca.crt").read_bytes()), time.time)
    sdp = b"v=0\r\na=gsdk-kx:x25519 " + b"A" * 43 + b"\r\na=gsdk-sid:1234\r\n"
    alice, bob = f"sip:alice@{EU}", f"sip:bob@{NA}"
    t0 = time.process_time()
    headers = [signer.sign(alice, bob, sdp) for _ in range(rounds)]
    t1 = time.process_time()
    for header in headers:
        verifier.verify(header, orig=alice, dest=bob, sdp=sdp)
    t2 = time.process_time()
    return (t1 - t0) / rounds, (t2 - t1) / rounds


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


async def measure(mode: Mode, args: argparse.Namespace) -> dict[str, Any]:
    rate = await logins(mode, args.logins, args.seconds)
    per_s, _ = await setups(mode, args.pairs, args.sessions, args.seconds)
    _, latencies = await setups(mode, 1, max(20, args.sessions // 4), args.seconds)
    return {"logins/s": rate, "setups/s": per_s, "p50 ms": pct(latencies, 0.5), "p99 ms": pct(latencies, 0.99),
            "n": len(latencies)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--logins", type=int, default=60)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pki = work / "pki"
        make_test_pki(pki, (EU, NA))
        results = {}
        for name, certs in (("udp", None), ("tls+identity", pki)):
            mode = start(work, name, max(50, args.pairs), certs)
            try:
                results[name] = asyncio.run(measure(mode, args))
            finally:
                mode.eu.stop_thread()
                mode.na.stop_thread()
        sign_s, verify_s = identity_cpu(pki, 300)
    print(f"{'mode':<14} {'logins/s':>9} {'setups/s':>9} {'setup p50 ms':>13} {'p99 ms':>8} {'n':>5}")
    for name, row in results.items():
        print(f"{name:<14} {row['logins/s']:>9.1f} {row['setups/s']:>9.1f} {row['p50 ms']:>13.2f} "
              f"{row['p99 ms']:>8.2f} {row['n']:>5}")
    udp, tls = results["udp"], results["tls+identity"]
    print(f"ratio tls/udp: logins {tls['logins/s'] / udp['logins/s']:.2f}, setups "
          f"{tls['setups/s'] / udp['setups/s']:.2f}, setup p50 {tls['p50 ms'] / udp['p50 ms']:.2f}")
    print(f"identity CPU: sign {sign_s * 1e6:.0f} us, verify {verify_s * 1e6:.0f} us; per session (2 signs at the "
          f"regions + 2 verifies at the SDKs) {2 * (sign_s + verify_s) * 1e3:.2f} ms, "
          f"{statistics.fmean([sign_s, verify_s]) * 1e6:.0f} us per operation")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
