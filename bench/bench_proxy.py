#!/usr/bin/env python3
"""The one-server INVITE path without sockets: CPU per call inside ``RegionalServer.handle_datagram``.

The datagrams are those of bench/bench_server.py's ``ours1`` path (bench/sipp/uac_bench_auth.xml and
uas_bench.xml): INVITE -> 407, ACK, INVITE with an MD5 digest -> 100 and the INVITE relayed to the callee, the
callee's 100, 180 and 200 with the SDP answer, ACK, BYE and its 200, all relayed. Caller and callee are players of
eu, the callee logged in; the embedded policy decides (PRELIMINARY on the INVITE, FINAL with a reservation
written to the region database on the 2xx), so the path has digest and policy as in the socket benchmark. Every
call has its own Call-ID, tags and branches; the server's timers run between calls as the driver would run them.
Only the server's calls are timed (process CPU time); the callee's answers are built outside. What the socket
loop adds (recvfrom, sendto, the event loop) is bench_server.py's figure minus this one.
bench/bench_proxy_path.py measures the same flow through the proxy without the policy (the test kit's node).

    python bench/bench_proxy.py --calls 2000
    python bench/bench_proxy.py --profile        # cProfile of the same loop (BENCH_PROFILE_OUT=f.prof keeps it)

Instructions per call, pure or compiled build alike (``--marked`` hands each of the server's calls over through
``sys.call_tracing``, which callgrind toggles counting on: start-up, warm-up and the callee's side are not counted;
divide the total by ``--calls``):

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=sys_call_tracing \
        python bench/bench_proxy.py --marked --calls 300 --warm-up 100
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gamesdk.sip.digest import compute_ha1, compute_response
from server import cli
from server.accounts import AccountStore
from server.config import load_config
from server.node import RegionalServer

DOMAIN = "eu.gamesdk.test"
CALLER = ("127.0.0.1", 5061)
CALLEE = ("127.0.0.1", 5062)
_NONCE = re.compile(rb'nonce="([^"]+)"')

OFFER = (
    b"v=0\r\no=alice 3912409810 3912409810 IN IP4 127.0.0.1\r\ns=gamesdk\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=application 50000 UDP/GSDK gsdk\r\nb=AS:64\r\na=gsdk-format:pong/1;tick=60\r\n"
    b"a=gsdk-format:pong/2;tick=120\r\na=gsdk-class:action\r\na=gsdk-qos:lat=50;jit=10;loss=10000;pps=60\r\n"
    b"a=gsdk-sec:chacha20-poly1305,aes-256-gcm\r\na=gsdk-kx:x25519 BpX91tYOUWWR0njamwM01k_WUCT6BWf_Sw-qnBMvVCs\r\n"
    b"a=gsdk-sid:305419896\r\n"
)
ANSWER = (
    b"v=0\r\no=bob 3912409811 3912409811 IN IP4 127.0.0.1\r\ns=gamesdk\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=application 50002 UDP/GSDK gsdk\r\nb=AS:64\r\na=gsdk-format:pong/1;tick=60\r\na=gsdk-class:action\r\n"
    b"a=gsdk-qos:lat=50;jit=10;loss=10000;pps=60\r\na=gsdk-sec:chacha20-poly1305\r\n"
    b"a=gsdk-kx:x25519 kwU7mjwVbFibp6IOOne1J3-bFu8suI17N1Wo-o7oCEk\r\na=gsdk-sid:2864434397\r\n"
)


def _lines(*lines: str, body: bytes = b"") -> bytes:
    return ("\r\n".join([*lines, f"Content-Length: {len(body)}", "", ""])).encode() + body


def _invite(n: int, cseq: int, auth: str | None) -> bytes:
    lines = [
        f"INVITE sip:bob@{DOMAIN} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-{n}-{cseq};rport",
        "Max-Forwards: 70",
        f'From: "alice" <sip:alice@{DOMAIN}>;tag={n}uac',
        f"To: <sip:bob@{DOMAIN}>",
        f"Call-ID: {n}-1@127.0.0.1",
        f"CSeq: {cseq} INVITE",
        "Contact: <sip:alice@127.0.0.1:5061;transport=udp>",
    ]
    if auth:
        lines.append(auth)
    lines += ["Allow: INVITE, ACK, CANCEL, BYE, OPTIONS", "User-Agent: gamesdk-sipp-interop",
              "Subject: pong/1 ranked match", "Content-Type: application/sdp"]
    return _lines(*lines, body=OFFER)


def _in_dialog(method: str, n: int, cseq: int, branch: str, to: str, ruri: str) -> bytes:
    return _lines(
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-{n}-{branch};rport",
        "Max-Forwards: 70",
        f'From: "alice" <sip:alice@{DOMAIN}>;tag={n}uac',
        f"To: {to}",
        f"Call-ID: {n}-1@127.0.0.1",
        f"CSeq: {cseq} {method}",
    )


def _answer(request: bytes, status: int, tag: str | None, body: bytes = b"") -> bytes:
    """The callee's answer to a request the server relayed: its Vias, From, To (with ``tag``), Call-ID and CSeq
    copied as SIPp's ``[last_Via:]`` etc. do, by splitting bytes (so the callee's work does not depend on the
    server's parser)."""
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    reason = {100: b"Trying", 180: b"Ringing", 200: b"OK"}[status]
    lines = [b"SIP/2.0 %d %s" % (status, reason)]
    for line in head[1:]:
        name = line.split(b":", 1)[0].lower()
        if name in (b"via", b"from", b"call-id", b"cseq"):
            lines.append(line)
        elif name == b"to":
            lines.append(line + (f";tag={tag}".encode() if tag else b""))
    if status != 100:
        lines.append(b"Contact: <sip:bob@127.0.0.1:5062;transport=udp>")
    if body:
        lines.append(b"Content-Type: application/sdp")
    lines += [b"Content-Length: %d" % len(body), b"", b""]
    return b"\r\n".join(lines) + body


def _only(out: list[tuple[bytes, tuple[str, int]]], to: tuple[str, int], start: bytes) -> bytes:
    for data, addr in out:
        if addr == to and data.startswith(start):
            return data
    raise AssertionError(f"no {start!r} to {to}: {[(d[:40], a) for d, a in out]}")


def setup(workdir: Path) -> tuple[RegionalServer, str]:
    from server.policy.runner import make_policy_hooks

    config = load_config(REPO / "examples" / "eu.toml").with_listen("127.0.0.1", 5060)
    # As bench_server.py: the networks' session and bandwidth limits, the per-player reservation cap and the
    # per-source limit on answers to unauthenticated sources lifted (one caller, one callee, every call granted).
    nets = tuple(dict(net, max_sessions=10_000_000, uplink_kbps=1_000_000_000, downlink_kbps=1_000_000_000)
                 for net in config.access_networks_raw)
    config = dataclasses.replace(
        config, database=workdir / "eu.sqlite3", access_networks_raw=nets,
        policy_raw=dict(config.policy_raw, max_reservations_per_player=10_000_000),
        auth=dataclasses.replace(config.auth, digest_algorithms=("MD5", "SHA-256")),
        limits=dataclasses.replace(config.limits, unauthenticated_per_s=1e9, unauthenticated_burst=10**9))
    accounts = AccountStore(config.database, config.auth.realm, config.auth.digest_algorithms)
    accounts.add_many([("alice", "pw-alice"), ("bob", "pw-bob")], now=time.time())
    node = RegionalServer(config, accounts, random_bytes=os.urandom)
    node.set_hooks(make_policy_hooks(config, node))
    return node, config.auth.realm


def login(node: RegionalServer, realm: str, now: float) -> None:
    """bob logs in from the port he answers on (as bench/sipp/callee_register.xml does)."""
    def register(cseq: int, auth: str = "") -> bytes:
        lines = [f"REGISTER sip:{DOMAIN} SIP/2.0", f"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-reg-{cseq};rport",
                 "Max-Forwards: 70", f"From: <sip:bob@{DOMAIN}>;tag=reg",
                 f"To: <sip:bob@{DOMAIN}>", "Call-ID: reg-1@127.0.0.1", f"CSeq: {cseq} REGISTER",
                 "Contact: <sip:bob@127.0.0.1:5062;transport=udp>", "Expires: 3600"]
        if auth:
            lines.append(auth)
        return _lines(*lines)

    out = node.handle_datagram(register(1), CALLEE, now)
    match = _NONCE.search(out[0][0])
    assert match is not None, out
    nonce = match.group(1).decode()
    response = compute_response(ha1=compute_ha1("bob", realm, "pw-bob"), nonce=nonce, method="REGISTER",
                                uri=f"sip:{DOMAIN}", cnonce="6b8b4567", nc=1)
    auth = (f'Authorization: Digest username="bob",realm="{realm}",cnonce="6b8b4567",nc=00000001,qop=auth,'
            f'uri="sip:{DOMAIN}",nonce="{nonce}",response="{response}",algorithm=MD5')
    out = node.handle_datagram(register(2, auth), CALLEE, now)
    assert out and out[0][0].startswith(b"SIP/2.0 200"), out


_RUNS = [0]


def run(node: RegionalServer, realm: str, *, calls: int, now: float,
        step: float = 0.002) -> tuple[float, int, float]:
    """(server CPU seconds, calls set up and ended, the clock after); the clock moves ``step`` seconds per call."""
    _RUNS[0] += 1
    first_n = _RUNS[0] * 10_000_000
    ha1 = compute_ha1("alice", realm, "pw-alice")
    spent = 0.0
    done = 0
    clock = time.process_time
    handle = node.handle_datagram
    for i in range(calls):
        n = first_n + i
        t0 = clock()
        out = handle(_invite(n, 1, None), CALLER, now)
        spent += clock() - t0
        challenge = _only(out, CALLER, b"SIP/2.0 407")
        match = _NONCE.search(challenge)
        assert match is not None
        nonce = match.group(1).decode()
        digest = compute_response(ha1=ha1, nonce=nonce, method="INVITE", uri=f"sip:bob@{DOMAIN}",
                                  cnonce="6b8b4567", nc=1)
        auth = (f'Proxy-Authorization: Digest username="alice",realm="{realm}",cnonce="6b8b4567",nc=00000001,'
                f'qop=auth,uri="sip:bob@{DOMAIN}",nonce="{nonce}",response="{digest}",algorithm=MD5')
        to_407 = challenge.split(b"\r\nTo: ", 1)[1].split(b"\r\n", 1)[0].decode()
        ack407 = _in_dialog("ACK", n, "1", "1", to_407, f"sip:bob@{DOMAIN}")
        invite = _invite(n, 2, auth)
        t0 = clock()
        handle(ack407, CALLER, now)
        out = handle(invite, CALLER, now)
        spent += clock() - t0
        relayed = _only(out, CALLEE, b"INVITE ")
        tag = f"{n}uas"
        answers = [_answer(relayed, 100, None), _answer(relayed, 180, tag), _answer(relayed, 200, tag, ANSWER)]
        t0 = clock()
        for data in answers:
            out = handle(data, CALLEE, now)
        spent += clock() - t0
        ok = _only(out, CALLER, b"SIP/2.0 200")
        to = ok.split(b"\r\nTo: ", 1)[1].split(b"\r\n", 1)[0].decode()
        ruri = "sip:bob@127.0.0.1:5062;transport=udp"
        ack = _in_dialog("ACK", n, "2", "ack", to, ruri)
        bye = _in_dialog("BYE", n, "3", "bye", to, ruri)
        t0 = clock()
        handle(ack, CALLER, now)
        out = handle(bye, CALLER, now)
        spent += clock() - t0
        bye_relayed = _only(out, CALLEE, b"BYE ")
        bye_ok = _answer(bye_relayed, 200, None)
        t0 = clock()
        out = handle(bye_ok, CALLEE, now)
        now += step
        if i % 50 == 0:
            node.handle_timer(now)  # the driver runs due timers after each batch
        spent += clock() - t0
        _only(out, CALLER, b"SIP/2.0 200")
        done += 1
    return spent, done, now


class _Marked:
    """The server's two entry points, each call made through ``sys.call_tracing`` (a C function callgrind can
    toggle counting on, in a compiled build too)."""

    def __init__(self, node: RegionalServer) -> None:
        self.node = node

    def handle_datagram(self, *args: object) -> object:
        return sys.call_tracing(self.node.handle_datagram, args)

    def handle_timer(self, *args: object) -> object:
        return sys.call_tracing(self.node.handle_timer, args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=2_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warm-up", type=int, default=200, help="calls before the measured ones")
    ap.add_argument("--default-gc", action="store_true",
                    help="keep CPython's collector thresholds (by default the server's, server.cli.serving_gc)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--marked", action="store_true",
                    help="one run of --calls, the server's calls through sys.call_tracing (a callgrind toggle)")
    args = ap.parse_args(argv)
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-proxy-"))
        node, realm = setup(Path(tmp))
        serving_gc = getattr(cli, "serving_gc", None)  # absent in trees from before it (for comparisons)
        if not args.default_gc and serving_gc is not None:
            stack.enter_context(serving_gc())
        now = time.monotonic()
        login(node, realm, now)
        _, _, now = run(node, realm, calls=args.warm_up, now=now)
        if args.marked:
            run(_Marked(node), realm, calls=args.calls, now=now)  # type: ignore[arg-type]
            print(f"{args.calls} calls through sys.call_tracing (callgrind: total instructions / {args.calls})")
            return 0
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile(time.process_time)
            prof.enable()
            run(node, realm, calls=args.calls, now=now)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(30)
            pstats.Stats(prof).sort_stats("cumulative").print_stats(60)
            if os.environ.get("BENCH_PROFILE_OUT"):
                prof.dump_stats(os.environ["BENCH_PROFILE_OUT"])
            return 0
        results = []
        for _ in range(args.repeats):
            spent, done, now = run(node, realm, calls=args.calls, now=now)
            per = spent / max(done, 1) * 1e6
            results.append(per)
            print(f"  {done} calls, {per:.1f} µs of server CPU per call (sans-IO)", flush=True)
        results.sort()
        print(f"median {results[len(results) // 2]:.1f} µs, best {results[0]:.1f} µs of server CPU per call "
              "(9 datagrams in, 9 out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
