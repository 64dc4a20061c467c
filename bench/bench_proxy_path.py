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
    python bench/bench_proxy_path.py --split     # per datagram: parse, digest and the proxy's own share
    PYTHONPATH=/path/to/other/tree python /path/to/other/tree/bench/bench_proxy_path.py ...   # the other tree
"""

from __future__ import annotations

import argparse
import collections
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


class Split:
    """``--split``: eu's CPU per datagram of the call, and within it the parse (``parse_message_untrusted`` and
    ``validate_untrusted`` as the node calls them) and the digest check (``LoginFlow.authenticate``); what is left
    is the proxy's own share (dispatch, routing, transactions, splicing, answers of its own). The wrappers add a
    clock read or two to each part."""

    def __init__(self, node: Any) -> None:
        import server.node as node_module
        from server.auth import LoginFlow

        self.node = node
        self.total: collections.Counter[str] = collections.Counter()
        self.part: collections.Counter[tuple[str, str]] = collections.Counter()
        self.label = "?"
        for owner, name, part in ((node_module, "parse_message_untrusted", "parse"),
                                  (node_module, "validate_untrusted", "parse"),
                                  (LoginFlow, "authenticate", "digest")):
            setattr(owner, name, self._wrap(getattr(owner, name), part))
        self._datagram = node.handle_datagram
        self._timer = node.handle_timer
        node.handle_datagram = self.handle_datagram
        node.handle_timer = self.handle_timer

    def _wrap(self, func: Any, part: str) -> Any:
        def timed(*args: Any, **kw: Any) -> Any:
            start = time.process_time()
            try:
                return func(*args, **kw)
            finally:
                self.part[(self.label, part)] += time.process_time() - start
        return timed

    @staticmethod
    def _label(data: bytes) -> str:
        head = data.split(b"\r\n\r\n", 1)[0]
        first = head.split(b"\r\n", 1)[0].decode()
        cseq = head.split(b"\nCSeq: ", 1)[1].split(b"\r\n", 1)[0].decode().split()[1]
        if first.startswith("SIP/"):
            return f"{first.split()[1]} ({cseq})"
        if cseq == "INVITE":
            return "INVITE with credentials" if b"\nProxy-Authorization:" in head else "INVITE (-> 407)"
        if cseq == "ACK":
            return "ACK (of the 2xx)" if b";tag=" in head.split(b"\nTo: ", 1)[1].split(b"\r\n", 1)[0] \
                and not head.startswith(b"ACK sip:bob@eu") else "ACK (of the 407)"
        return cseq

    def handle_datagram(self, data: bytes, *args: Any, **kw: Any) -> Any:
        self.label = self._label(data)
        start = time.process_time()
        try:
            return self._datagram(data, *args, **kw)
        finally:
            self.total[self.label] += time.process_time() - start

    def handle_timer(self, *args: Any, **kw: Any) -> Any:
        self.label = "timers"
        start = time.process_time()
        try:
            return self._timer(*args, **kw)
        finally:
            self.total[self.label] += time.process_time() - start

    def reset(self) -> None:
        self.total.clear()
        self.part.clear()

    def report(self, calls: int) -> str:
        def us(seconds: float) -> str:
            return f"{seconds / calls * 1e6:7.1f}"
        rows = [f"{'datagram':26} {'total':>7} {'parse':>7} {'digest':>7} {'own':>7}  (µs per call)"]
        sums = [0.0, 0.0, 0.0]
        for label, total in sorted(self.total.items(), key=lambda kv: -kv[1]):
            parse, digest = self.part[(label, "parse")], self.part[(label, "digest")]
            sums[0] += parse
            sums[1] += digest
            sums[2] += total
            rows.append(f"{label:26} {us(total)} {us(parse)} {us(digest)} {us(total - parse - digest)}")
        rows.append(f"{'all':26} {us(sums[2])} {us(sums[0])} {us(sums[1])} {us(sums[2] - sums[0] - sums[1])}")
        return "\n".join(rows)


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


def run(calls: int, warmup: int, split: bool = False) -> float:
    """CPU µs per call of eu over ``calls`` calls after ``warmup`` (``split``: print the per-datagram table)."""
    with tempfile.TemporaryDirectory() as tmp:
        wire = Wire()
        node = wire.add_node(make_node("eu", 5060, 5062, Path(tmp), {"alice": "apw", "bob": "bpw"}))
        alice = wire.add_ua(TestUA("alice", "eu.gamesdk.test", "apw", ("127.0.0.1", 7001)))
        bob = wire.add_ua(TestUA("bob", "eu.gamesdk.test", "bpw", ("127.0.0.1", 7002)))
        _login(wire, alice)
        _login(wire, bob)
        if split:
            parts = Split(node)
            for i in range(warmup + calls):
                if i == warmup:
                    parts.reset()
                _call(wire, alice, bob)
                wire.advance(0.001)
            print(parts.report(calls))
            return sum(parts.total.values()) / calls * 1e6
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
    ap.add_argument("--split", action="store_true", help="per datagram: parse, digest and the proxy's own share")
    args = ap.parse_args(argv)
    if args.calls < 1 or args.repeats < 1 or args.warmup < 0:
        ap.error("--calls and --repeats must be at least 1, --warmup at least 0")
    figures = [run(args.calls, args.warmup, args.split) for _ in range(args.repeats)]
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"eu CPU per call: median {statistics.median(figures):.0f} µs, min {min(figures):.0f}, "
          f"max {max(figures):.0f} ({args.repeats} x {args.calls} calls; tree {REPO}; load average {load})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
