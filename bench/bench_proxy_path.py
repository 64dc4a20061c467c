#!/usr/bin/env python3
"""The proxy's call path without sockets: CPU per call inside one ``RegionalServer`` (eu), for comparing trees.

Caller and callee are both logged on at eu (the ``ours1`` path of bench/bench_server.py) and talk to it in memory
(the test kit's ``Wire``): INVITE -> 407, ACK, INVITE with credentials -> 100, forwarded to the callee, 180 and a
200 with the SDP answer back, the 2xx ACK and the BYE through eu, the BYE's 200. The clock moves 1 ms per call
and eu's timers run as they fall due (transactions end after their 32 s, as in a long run). Only eu's own calls
(``handle_datagram``, ``handle_timer``) are timed, in process CPU time; the parties' work is not counted. With no
sockets, event loop or other process, the figure moves by a few per cent between runs where bench_server.py's
moves by 20 % on a shared machine: the gate for changes inside the server's pure core.

    python bench/bench_proxy_path.py --calls 3000 --repeats 5
    PYTHONPATH=/path/to/other/tree python /path/to/other/tree/bench/bench_proxy_path.py ...   # the other tree
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "server"))

from server_kit import ANSWER, TestUA, Wire, make_node

EU = ("127.0.0.1", 5060)


class Timed:
    """Wraps a node's entry points and adds up the process CPU time spent in them."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.cpu = 0.0
        self._datagram = node.handle_datagram
        self._timer = node.handle_timer
        node.handle_datagram = self.handle_datagram
        node.handle_timer = self.handle_timer

    def handle_datagram(self, *args: Any, **kw: Any) -> Any:
        start = time.process_time()
        try:
            return self._datagram(*args, **kw)
        finally:
            self.cpu += time.process_time() - start

    def handle_timer(self, *args: Any, **kw: Any) -> Any:
        start = time.process_time()
        try:
            return self._timer(*args, **kw)
        finally:
            self.cpu += time.process_time() - start


def _login(wire: Wire, ua: TestUA) -> None:
    request = ua.register(3600)
    wire.send(ua.addr, EU, request)
    (challenge,) = ua.responses()
    wire.send(ua.addr, EU, ua.authorize(request, challenge))
    (ok,) = ua.responses()
    if ok.status != 200:
        raise SystemExit(f"login failed: {ok.status}")


def _call(wire: Wire, alice: TestUA, bob: TestUA) -> None:
    invite = alice.invite("sip:bob@eu.gamesdk.test")
    wire.send(alice.addr, EU, invite)
    (challenge,) = alice.responses()
    wire.send(alice.addr, EU, alice.ack_non2xx(invite, challenge))
    signed = alice.authorize(invite, challenge)
    wire.send(alice.addr, EU, signed)
    (arrived,) = bob.requests()
    wire.send(bob.addr, EU, bob.answer(arrived, 180))
    wire.send(bob.addr, EU, bob.answer(arrived, 200, ANSWER))
    ok = alice.responses()[-1]
    if ok.status != 200:
        raise SystemExit(f"call failed: {ok.status}")
    wire.send(alice.addr, EU, alice.ack_2xx(signed, ok))
    bye = alice.bye(signed, ok)
    wire.send(alice.addr, EU, bye)
    requests = bob.requests()
    if [r.method for r in requests] != ["ACK", "BYE"]:
        raise SystemExit(f"relay failed: {[r.method for r in requests]}")
    wire.send(bob.addr, EU, bob.answer(requests[-1], 200))
    alice.take()


def run(calls: int, warmup: int) -> float:
    """CPU µs per call of eu over ``calls`` calls after ``warmup``."""
    with tempfile.TemporaryDirectory() as tmp:
        wire = Wire()
        node = wire.add_node(make_node("eu", 5060, 5062, Path(tmp), {"alice": "apw", "bob": "bpw"}))
        alice = wire.add_ua(TestUA("alice", "eu.gamesdk.test", "apw", ("127.0.0.1", 7001)))
        bob = wire.add_ua(TestUA("bob", "eu.gamesdk.test", "bpw", ("127.0.0.1", 7002)))
        _login(wire, alice)
        _login(wire, bob)
        timed = Timed(node)
        for i in range(warmup + calls):
            if i == warmup:
                timed.cpu = 0.0
            _call(wire, alice, bob)
            wire.advance(0.001)
        return timed.cpu / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=3000, help="calls per repeat (default 3000)")
    ap.add_argument("--warmup", type=int, default=300, help="calls before the timed ones (default 300)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if args.calls < 1 or args.repeats < 1 or args.warmup < 0:
        ap.error("--calls and --repeats must be at least 1, --warmup at least 0")
    figures = [run(args.calls, args.warmup) for _ in range(args.repeats)]
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"eu CPU per call: median {statistics.median(figures):.0f} µs, min {min(figures):.0f}, "
          f"max {max(figures):.0f} ({args.repeats} x {args.calls} calls; tree {REPO}; load average {load})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
