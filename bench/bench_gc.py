#!/usr/bin/env python3
"""What a call leaves to CPython's cyclic garbage collector: bench/bench_proxy.py's sans-IO call (digest + policy,
one server), counted without clocks where it can be.

- held: GC-tracked objects a completed call keeps alive while its transactions wait out their timers (Timer J,
  K, L, M: 32 s), i.e. ``len(gc.get_objects())`` after the calls minus after their timers ran out, per call; and
  what stays after that (dialogs, reservations: bounded by their own limits), per call. ``--types`` lists them.
- cyclic: objects per call only the collector frees (the collector off, ``gc.collect()`` after the calls and their
  timers, divided by the calls); ``--types`` lists their types (``gc.DEBUG_SAVEALL``).
- collections: time in collections per 1,000 calls at the server's thresholds (server.cli.serving_gc, start-up
  objects frozen), at steady state: the clock moves ``--step`` s per call (1 ms: 1,000 calls/s), so after
  32 s of clock as many transactions wait out their timers as at that rate. Timed by ``gc.callbacks``
  (process CPU time: it moves with the load less than the wall clock, still some), with the count of collections per generation.

    python bench/bench_gc.py --calls 2000
    python bench/bench_gc.py --calls 2000 --types
    python bench/bench_gc.py --collections 20000 --step 0.001 [--walked]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_proxy

from server import cli
from server.node import RegionalServer

#: Past every transaction timer (64 * T1 = 32 s) and Timer D.
_PAST_TIMERS = 40.0


def _types(objects: list[object]) -> Counter[str]:
    return Counter(type(o).__qualname__ for o in objects)


def held(node: RegionalServer, realm: str, calls: int, now: float, show: bool) -> tuple[float, float, float]:
    """(objects held per call while the timers run, per call after them, clock)."""
    gc.collect()
    before = gc.get_objects()
    base = len(before)
    base_types = _types(before) if show else Counter()
    del before
    _, done, now = bench_proxy.run(node, realm, calls=calls, now=now)
    gc.collect()
    during = gc.get_objects()
    alive = len(during)
    during_types = _types(during) if show else Counter()
    del during
    now += _PAST_TIMERS
    node.handle_timer(now)
    gc.collect()
    after = gc.get_objects()
    left = len(after)
    after_types = _types(after) if show else Counter()
    del after
    if show:
        print("  held while the timers run, by type (per call):")
        for name, n in (during_types - after_types).most_common(25):
            print(f"    {n / done:7.2f}  {name}")
        print("  left after the timers, by type (per call):")
        for name, n in (after_types - base_types).most_common(12):
            print(f"    {n / done:7.2f}  {name}")
    return (alive - left) / done, (left - base) / done, now


def cyclic(node: RegionalServer, realm: str, calls: int, now: float, show: bool) -> tuple[float, float]:
    """(objects per call only the collector freed, clock), the collector off meanwhile."""
    gc.collect()
    gc.disable()
    try:
        if show:
            gc.set_debug(gc.DEBUG_SAVEALL)
        _, done, now = bench_proxy.run(node, realm, calls=calls, now=now)
        now += _PAST_TIMERS
        node.handle_timer(now)
        found = gc.collect()
        if show:
            print("  cyclic garbage by type (per call):")
            for name, n in _types(gc.garbage).most_common(25):
                print(f"    {n / done:7.2f}  {name}")
            gc.garbage.clear()
            gc.set_debug(0)
    finally:
        gc.enable()
    return found / done, now


class _CollectionTimer:
    def __init__(self, walked: bool) -> None:
        self.walked = walked
        #: Objects in the generations each collection examined (counted before it starts, untimed: load-blind).
        self.examined = 0
        self.spent = 0.0
        self.count = [0, 0, 0]
        self.by_generation = [0.0, 0.0, 0.0]
        self.collected = 0
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            if self.walked:
                self.examined += sum(len(gc.get_objects(g)) for g in range(info["generation"] + 1))
            self._t0 = time.process_time()
        else:
            took = time.process_time() - self._t0
            self.spent += took
            self.by_generation[info["generation"]] += took
            self.count[info["generation"]] += 1
            self.collected += info["collected"]


def collections(node: RegionalServer, realm: str, calls: int, now: float, step: float,
                walked: bool) -> _CollectionTimer:
    """The collections over ``calls`` calls after 40 s of clock at ``step`` s per call."""
    _, _, now = bench_proxy.run(node, realm, calls=int(_PAST_TIMERS / step), now=now, step=step)
    timer = _CollectionTimer(walked)
    gc.callbacks.append(timer)
    try:
        bench_proxy.run(node, realm, calls=calls, now=now, step=step)
    finally:
        gc.callbacks.remove(timer)
    return timer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=2_000, help="calls for the held and cyclic counts")
    ap.add_argument("--collections", type=int, default=0,
                    help="also time the collections over this many calls at steady state")
    ap.add_argument("--step", type=float, default=0.001, help="clock seconds per call for --collections")
    ap.add_argument("--types", action="store_true", help="list the objects by type")
    ap.add_argument("--walked", action="store_true",
                    help="with --collections: count the objects each collection examined (load-blind)")
    args = ap.parse_args(argv)
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-gc-"))
        node, realm = bench_proxy.setup(Path(tmp))
        now = time.monotonic()
        bench_proxy.login(node, realm, now)
        _, _, now = bench_proxy.run(node, realm, calls=200, now=now)
        now += _PAST_TIMERS
        node.handle_timer(now)
        per_held, per_left, now = held(node, realm, args.calls, now, args.types)
        print(f"held: {per_held:.1f} GC-tracked objects per call while its transactions wait out their timers, "
              f"{per_left:.1f} per call after them")
        per_cyclic, now = cyclic(node, realm, args.calls, now, args.types)
        print(f"cyclic: {per_cyclic:.2f} objects per call freed only by the cyclic collector")
        if args.collections:
            stack.enter_context(cli.serving_gc())
            timer = collections(node, realm, args.collections, now, args.step, args.walked)
            n = args.collections
            us = timer.spent * 1e6 / n
            count, by = timer.count, [ms * 1e3 for ms in timer.by_generation]
            print(f"collections: {us:.1f} µs per call ({us:.0f} ms per 1,000 calls) at thresholds "
                  f"{gc.get_threshold()}, clock {args.step * 1e3:g} ms per call, {n} calls: generation 0/1/2 "
                  f"{count[0]}/{count[1]}/{count[2]} collections, {by[0]:.0f}/{by[1]:.0f}/{by[2]:.0f} ms; "
                  f"{timer.collected / n:.2f} objects per call freed by them")
            if args.walked:
                print(f"  objects the collections examined: {timer.examined / n:.1f} per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
