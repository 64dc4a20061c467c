#!/usr/bin/env python3
"""SIP parse and serialize speed on one core: gamesdk's parser and the ``sipmessage`` package, side by side.

The input is a typical game INVITE (about 900 bytes) whose body is our extended SDP offer (DESIGN section 3),
by default 20,000 distinct ones in turn (more than the parser's memo of header values holds; ``--same-message``
parses one over and over).
Each case runs for a fixed CPU time, several repeats interleaved across the cases, and the best repeat counts
(the least disturbed by the rest of the machine). Cases, for both parsers:

  parse           bytes -> message object
  parse+typed     ... then read what a proxy reads: top Via branch, CSeq, From tag, To tag, Call-ID
  round trip      bytes -> message -> bytes
  round trip+typed  both of the above
  lazy parse      bytes -> message as the proxy parses what it relays (``lazy=True``), gamesdk only
  lazy parse+407  ... then the 407 challenge to it (``response_for`` + ``to_bytes``), gamesdk only

gamesdk's parser validates and parses the typed headers while it parses (a message that parses is well formed);
``sipmessage`` splits the lines and parses a header when it is read, so "parse" alone flatters it and
"parse+typed" is the fair comparison. The goal (issue 2) is >= 25,000 round trips/s and faster than sipmessage.

    python bench/bench_sip.py                    # about 15 s
    python bench/bench_sip.py --seconds 0.2 --repeats 2
    python bench/bench_sip.py --profile          # + where gamesdk's round trip spends its time
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib
import io
import itertools
import os
import platform
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from gamesdk.sdp.codec import format_sdp_bytes
from gamesdk.sdp.examples import example_offer
from gamesdk.sip.headers import CSeq, Via
from gamesdk.sip.message import Request, response_for
from gamesdk.sip.parser import parse_message_untrusted
from gamesdk.sip.uri import NameAddr, SipUri

sipmessage: ModuleType | None
try:
    sipmessage = importlib.import_module("sipmessage")
except ImportError:  # the bench extra is not installed: measure ours alone and say so
    sipmessage = None


#: Distinct INVITEs the bench cycles through: more than the parser's memo of header values holds (8,192).
POOL = 20_000


def typical_invite(call: int = 0) -> bytes:
    """A game INVITE as the SDK sends it, with the example offer of ``gamesdk.sdp.examples`` as body.

    ``call`` numbers the call: its Via branch, From tag, Call-ID, CSeq and Contact port differ from every other
    call's, as they do on the wire (and so no cache of header values can hit across calls).
    """
    body = format_sdp_bytes(example_offer())
    head = (
        "INVITE sip:bob@na.gamesdk.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 198.51.100.10:5070;branch=z9hG4bK-524287-1---{call:016x};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: Alice <sip:alice@eu.gamesdk.test>;tag=9f{call:08x}\r\n"
        "To: <sip:bob@na.gamesdk.test>\r\n"
        f"Call-ID: b84d3f2a9c1e4f7a{call:016x}@198.51.100.10\r\n"
        f"CSeq: {call % 1000 + 1} INVITE\r\n"
        f"Contact: <sip:alice@198.51.100.10:{5070 + call % 50000}>\r\n"
        "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE\r\n"
        "Supported: timer\r\n"
        "User-Agent: gamesdk/0.1\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


def gamesdk_cases(messages: Callable[[], bytes]) -> dict[str, Callable[[], object]]:
    parse = parse_message_untrusted

    def typed() -> object:
        m = parse(messages())
        return (m.top_via.branch, m.cseq, m.from_.tag, m.to.tag, m.call_id)

    def round_trip_typed() -> object:
        m = parse(messages())
        _ = (m.top_via.branch, m.cseq, m.from_.tag, m.to.tag, m.call_id)
        return m.to_bytes()

    challenge = [("Proxy-Authenticate", 'Digest realm="eu.gamesdk.test", nonce="a8f1c0e2", qop="auth"')]

    def respond() -> object:
        m = parse(messages(), lazy=True)
        assert isinstance(m, Request)
        return response_for(m, 407, to_tag="7b1e0c9d", extra=challenge).to_bytes()

    return {
        "parse": lambda: parse(messages()),
        "parse+typed": typed,
        "round trip": lambda: parse(messages()).to_bytes(),
        "round trip+typed": round_trip_typed,
        "lazy parse": lambda: parse(messages(), lazy=True),
        "lazy parse+407": respond,
    }


def sipmessage_cases(messages: Callable[[], bytes]) -> dict[str, Callable[[], object]]:
    assert sipmessage is not None
    parse = sipmessage.Message.parse

    def typed() -> object:
        m = parse(messages())
        return (m.via[0].parameters.get("branch"), m.cseq, m.from_address.parameters.get("tag"),
                m.to_address.parameters.get("tag"), m.call_id)  # fmt: skip

    def round_trip_typed() -> object:
        m = parse(messages())
        _ = (m.via[0].parameters.get("branch"), m.cseq, m.from_address.parameters.get("tag"),
             m.to_address.parameters.get("tag"), m.call_id)  # fmt: skip
        return bytes(m)

    return {
        "parse": lambda: parse(messages()),
        "parse+typed": typed,
        "round trip": lambda: bytes(parse(messages())),
        "round trip+typed": round_trip_typed,
    }


def rate(fn: Callable[[], object], seconds: float) -> tuple[float, float]:
    """Calls per CPU second and per wall second of ``fn`` over about ``seconds`` of CPU time.

    CPU time (``time.process_time``) is what one core gives this process: the figure holds on a busy machine,
    where wall time would count the other processes too. Clocks are read between batches of 200 calls.
    """
    batch = 200
    calls = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        calls += batch
        cpu = time.process_time() - cpu0
        if cpu >= seconds:
            return calls / cpu, calls / (time.perf_counter() - wall0)


def pin_to_one_core() -> str:
    """Keep the process on one CPU (Linux ``sched_setaffinity``); Python runs the parser on one thread anyway."""
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity)"


def breakdown(data: bytes, seconds: float) -> list[tuple[str, float]]:
    """Microseconds per call of the pieces a parse is made of, measured one by one through the public API."""
    message = parse_message_untrusted(data)
    head = data[: data.index(b"\r\n\r\n")]
    ruri = message.uri if hasattr(message, "uri") else ""
    via = message.headers.values("Via")[0]
    from_, to, contact = (message.headers.get(n) or "" for n in ("From", "To", "Contact"))
    cseq = message.headers.get("CSeq") or ""
    pieces: list[tuple[str, Callable[[], object]]] = [
        ("whole parse", lambda: parse_message_untrusted(data)),
        (
            "  decode + split head lines",
            lambda: [line.partition(":") for line in head.decode().split("\r\n")],
        ),
        ("  Request-URI (SipUri.parse)", lambda: SipUri.parse(ruri)),
        ("  Via.parse", lambda: Via.parse(via)),
        ("  From (NameAddr.parse)", lambda: NameAddr.parse(from_)),
        ("  To (NameAddr.parse)", lambda: NameAddr.parse(to)),
        ("  Contact (NameAddr.parse)", lambda: NameAddr.parse(contact)),
        ("  CSeq.parse", lambda: CSeq.parse(cseq)),
        ("to_bytes", message.to_bytes),
    ]
    return [(name, 1e6 / rate(fn, seconds)[0]) for name, fn in pieces]


def profile_round_trip(data: bytes, calls: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        m = parse_message_untrusted(data)
        _ = (m.top_via.branch, m.cseq, m.from_.tag, m.to.tag, m.call_id)
        m.to_bytes()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time per case and repeat (default 0.5)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="repeats, interleaved across cases (default 3)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile gamesdk's round trip+typed afterwards"
    )
    parser.add_argument("--pin", action="store_true", help="pin the process to one CPU first")
    parser.add_argument(
        "--same-message",
        action="store_true",
        help="parse one message over and over (the parser's memo of header values then always hits); by default "
        f"each call is a different INVITE from a pool of {POOL:,}, more than the memo holds",
    )
    args = parser.parse_args(argv)
    if not (0 < args.seconds <= 10 and 1 <= args.repeats <= 20):
        parser.error("--seconds must be in (0, 10] and --repeats in [1, 20]")

    data = typical_invite()
    pinned = pin_to_one_core() if args.pin else "not pinned"
    pool = [data] if args.same_message else [typical_invite(call) for call in range(POOL)]
    ours = gamesdk_cases(itertools.cycle(pool).__next__)
    theirs = sipmessage_cases(itertools.cycle(pool).__next__) if sipmessage is not None else {}

    # Both parsers must read the same message before their speeds mean anything.
    ours_msg = parse_message_untrusted(data)
    exact_ours = ours_msg.to_bytes() == data
    if theirs:
        assert sipmessage is not None
        their_msg = sipmessage.Message.parse(data)
        assert their_msg.call_id == ours_msg.call_id and their_msg.cseq.sequence == ours_msg.cseq.seq
        assert their_msg.via[0].parameters.get("branch") == ours_msg.top_via.branch
        exact_theirs = bytes(their_msg) == data

    print(
        f"SIP parse/serialize, one core: {len(data)}-byte INVITE with the gsdk SDP offer ({len(ours_msg.body)} bytes)"
    )
    version = getattr(sipmessage, "__version__", "?") if sipmessage is not None else "not installed"
    print(f"python {platform.python_version()} on {platform.machine()}, {pinned}; sipmessage {version}")
    print(f"{args.repeats} repeats x {args.seconds:.2f} CPU s per case, best repeat shown; gc enabled")
    print("input: " + ("one message parsed over and over (memo hits)" if args.same_message else
                       f"{len(pool):,} distinct INVITEs in turn (new branch, tag, Call-ID, CSeq, Contact each call)"))
    print(f"byte-exact round trip: gamesdk {exact_ours}" + (f", sipmessage {exact_theirs}" if theirs else ""))

    best: dict[tuple[str, str], float] = {}
    cpu_share: list[float] = []
    for _ in range(args.repeats):
        for case in ours:
            for who, cases in (("gamesdk", ours), ("sipmessage", theirs)):
                if case in cases:
                    gc.collect()
                    per_cpu, per_wall = rate(cases[case], args.seconds)
                    best[(who, case)] = max(best.get((who, case), 0.0), per_cpu)
                    cpu_share.append(per_wall / per_cpu)

    share = sorted(cpu_share)[len(cpu_share) // 2]
    print(
        f"rates are per CPU second; this process got a median {share:.0%} of a core in wall time (machine load)"
    )
    print()
    print(f"{'case':<18}{'gamesdk /s':>14}{'us/msg':>9}{'sipmessage /s':>16}{'us/msg':>9}{'ratio':>8}")
    for case in ours:
        mine = best[("gamesdk", case)]
        line = f"{case:<18}{mine:>14,.0f}{1e6 / mine:>9.1f}"
        if ("sipmessage", case) in best:
            other = best[("sipmessage", case)]
            line += f"{other:>16,.0f}{1e6 / other:>9.1f}{mine / other:>7.2f}x"
        print(line)

    goal = 25_000
    trips = best[("gamesdk", "round trip+typed")]
    verdict = "meets" if trips >= goal else "MISSES"
    print()
    print(f"goal: >= {goal:,} round trips/s (with typed reads): {trips:,.0f}/s {verdict} it", end="")
    if theirs:
        faster = best[("gamesdk", "round trip+typed")] / best[("sipmessage", "round trip+typed")]
        print(f"; {faster:.2f}x sipmessage on the same work")
    else:
        print("; sipmessage not installed (pip install sipmessage, the bench extra)")

    if args.profile or trips < goal:
        print()
        print("where gamesdk's time goes (us per call, each piece alone, per CPU second):")
        parts = breakdown(data, max(0.1, args.seconds / 2))
        whole = parts[0][1]
        for name, micros in parts:
            print(f"  {name:<32}{micros:>8.1f} us{micros / whole:>8.0%} of a parse")
    if args.profile:
        print()
        print("cProfile of gamesdk round trip+typed (5,000 messages, by own time; profiling slows it down):")
        print(profile_round_trip(data, 5_000))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
