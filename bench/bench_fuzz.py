#!/usr/bin/env python3
"""A bounded mutation fuzz of the regional server: a million mutated datagrams into two federated nodes.

The nodes are the real sans-IO servers (``server.node.RegionalServer``, the object ``gamesdk-server run`` drives),
fed in memory so the whole budget goes into the server and not into the kernel. Seeds are the datagrams of real
logins and calls (REGISTER with and without credentials, INVITE with the game SDP, 407/200 answers, ACK, BYE,
CANCEL, PUBLISH, OPTIONS); each fuzzed datagram is a seed with 1-4 mutations (bit flips, bytes inserted or
removed, lines duplicated, dropped or swapped between seeds, numbers pushed to extremes, truncation, huge values)
sent from one of 5,000 source addresses, with the clock moving and the timers run as it goes.

Reported: datagrams, rate, what escaped (must be 0: ``handle_datagram`` must never raise), what the node caught as
an internal error (500; each one is a bug to look at), the RSS of this process after the first 10% and at the end
(flat = the tables are capped), and whether a login and a call work afterwards.

    python bench/bench_fuzz.py                      # 1,000,000 datagrams, at most 30 minutes
    python bench/bench_fuzz.py --count 20000        # a quick look
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "server"))  # the in-memory wire and test UA of the server tests

from server_kit import ANSWER, TestUA, Wire, make_node

from gamesdk.sip.message import Request, Response

EU = ("127.0.0.1", 5060)
NA = ("127.0.0.1", 5062)


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def world(tmp: Path) -> tuple[Wire, TestUA, TestUA]:
    wire = Wire()
    wire.add_node(make_node("eu", 5060, 5062, tmp, {"alice": "apw", "dave": "dpw"}, digest_algorithms=("SHA-256", "MD5")))
    wire.add_node(make_node("na", 5062, 5060, tmp, {"bob": "bpw"}))
    alice = wire.add_ua(TestUA("alice", "eu.gamesdk.test", "apw", ("127.0.0.1", 7001)))
    bob = wire.add_ua(TestUA("bob", "na.gamesdk.test", "bpw", ("127.0.0.1", 7002)))
    return wire, alice, bob


def login(wire: Wire, ua: TestUA, server: tuple[str, int]) -> int:
    request = ua.register(600)
    wire.send(ua.addr, server, request)
    challenge = ua.responses()[-1]
    wire.send(ua.addr, server, ua.authorize(request, challenge))
    return ua.responses()[-1].status


def call(wire: Wire, alice: TestUA, bob: TestUA) -> list[bytes]:
    """alice@eu calls bob@na, bob answers 200, alice ACKs and BYEs; returns every datagram of it (the seeds)."""
    start = len(wire.log)
    invite = alice.invite("sip:bob@na.gamesdk.test")
    wire.send(alice.addr, EU, invite)
    challenge = alice.responses()[-1]
    wire.send(alice.addr, EU, alice.ack_non2xx(invite, challenge))
    signed = alice.authorize(invite, challenge)
    wire.send(alice.addr, EU, signed)
    arrived = next(m for m in bob.take() if isinstance(m, Request) and m.method == "INVITE")
    wire.send(bob.addr, NA, bob.answer(arrived, 180))
    wire.send(bob.addr, NA, bob.answer(arrived, 200, ANSWER))
    ok = next(m for m in alice.take() if isinstance(m, Response) and m.status == 200)
    wire.send(alice.addr, EU, alice.ack_2xx(signed, ok))
    wire.send(alice.addr, EU, alice.bye(signed, ok))
    got = [m for m in bob.take() if isinstance(m, Request)]
    assert any(m.method == "BYE" for m in got), "the BYE did not arrive"
    return [data for _, _, data in wire.log[start:]]


_EXTREMES = [b"0", b"-1", b"4294967296", b"99999999999999999999", b"", b"\x00", b"%00", b"A" * 3000, b";;;;",
             b"<sip:@>", b"\xff\xfe", b'"', b"SIP/2.0", b"\r\n", b"z9hG4bK", b"tag=", b"sip:x@127.0.0.1:1"]


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 4)):
        if not data:
            data = bytearray(rng.choice(seeds))
        kind = rng.randrange(9)
        pos = rng.randrange(len(data))
        if kind == 0:  # bit flips
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(data))
                data[i] ^= 1 << rng.randrange(8)
        elif kind == 1:  # insert random bytes
            data[pos:pos] = rng.randbytes(rng.randint(1, 40))
        elif kind == 2:  # delete a run
            del data[pos:pos + rng.randint(1, 60)]
        elif kind == 3:  # truncate
            del data[pos:]
        elif kind == 4 or kind == 5:  # line surgery: duplicate, drop, swap in a line of another seed
            lines = bytes(data).split(b"\r\n")
            i = rng.randrange(len(lines))
            other = rng.choice(seeds).split(b"\r\n")
            choice = rng.randrange(3)
            if choice == 0:
                lines.insert(i, lines[i])
            elif choice == 1 and len(lines) > 1:
                del lines[i]
            else:
                lines[i] = rng.choice(other)
            data = bytearray(b"\r\n".join(lines))
        elif kind == 6:  # a number or value pushed to an extreme
            lines = bytes(data).split(b"\r\n")
            i = rng.randrange(len(lines))
            head, sep, _ = lines[i].partition(b":")
            lines[i] = head + (sep or b":") + b" " + rng.choice(_EXTREMES)
            data = bytearray(b"\r\n".join(lines))
        elif kind == 7:  # replace a token with an extreme
            extreme = rng.choice(_EXTREMES)
            data[pos:pos + rng.randint(1, 12)] = extreme
        else:  # splice two seeds
            other = rng.choice(seeds)
            cut = rng.randrange(len(other))
            data = data[:pos] + bytearray(other[cut:])
    return bytes(data[:70000])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    parser.add_argument("--seed", type=int, default=10)
    args = parser.parse_args()

    import tempfile

    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        wire, alice, bob = world(tmp)
        assert login(wire, alice, EU) == 200 and login(wire, bob, NA) == 200
        seeds = [data for _, _, data in wire.log] + call(wire, alice, bob)
        rng = random.Random(args.seed)
        nodes = list(wire.nodes.values())
        escaped = 0
        first_escape = ""
        sent = 0
        rss_start = rss_kib()
        rss_early = rss_half = 0
        began = time.monotonic()
        while sent < args.count and time.monotonic() - began < args.max_seconds:
            data = mutate(rng, seeds)
            source = (f"10.{rng.randrange(20)}.{rng.randrange(250)}.{rng.randrange(1, 20)}", rng.randrange(1024, 65536))
            node = nodes[sent % 2]
            try:
                node.handle_datagram(data, source, wire.now)
            except Exception as exc:  # noqa: BLE001 - the contract says this never happens: count what does
                escaped += 1
                first_escape = first_escape or f"{type(exc).__name__}: {exc}"
            sent += 1
            if sent % 1000 == 0:
                wire.now += 0.5  # 2,000 datagrams a second of server time: timers and expiries run
                for n in nodes:
                    n.handle_timer(wire.now)
            if sent == args.count // 10:
                rss_early = rss_kib()
            if sent == args.count // 2:
                rss_half = rss_kib()
        elapsed = time.monotonic() - began
        rss_end = rss_kib()
        errors = sum(n.stats.internal_errors for n in nodes)
        # Afterwards the servers still do their job: a fresh login and a whole call.
        wire.advance(120)
        carol = wire.add_ua(TestUA("dave", "eu.gamesdk.test", "dpw", ("127.0.0.1", 7003)))
        after_login = login(wire, carol, EU)
        after_call = "ok"
        try:
            assert login(wire, alice, EU) == 200 and login(wire, bob, NA) == 200
            call(wire, alice, bob)
        except (AssertionError, StopIteration) as exc:
            after_call = f"FAILED: {exc!r}"
        print(f"datagrams: {sent:,} in {elapsed:.0f} s ({sent / elapsed:,.0f}/s), seeds: {len(seeds)}")
        print(f"exceptions escaping handle_datagram: {escaped} {first_escape}")
        print(f"internal errors caught by the node (answered 500): {errors}")
        print(f"RSS: start {rss_start / 1024:.1f} MiB, after 10% {rss_early / 1024:.1f} MiB, after 50% "
              f"{rss_half / 1024:.1f} MiB, end {rss_end / 1024:.1f} MiB (growth over the last half: "
              f"{(rss_end - rss_half) / 1024:.1f} MiB; the tables fill up to their caps first)")
        eu_node = nodes[0]
        print(f"eu tables at the end: transactions {len(eu_node.proxy.server_txs)}, "
              f"throttle {len(eu_node.throttle)}, nonces {eu_node.login.core.nonces.tracked}, "
              f"rate-limit buckets {len(eu_node.unverified)}, answer cache {len(eu_node._uas_answers)}")
        print(f"after the fuzz: login {after_login}, call {after_call}")
        return 0 if escaped == 0 and after_login == 200 and after_call == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
