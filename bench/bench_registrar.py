#!/usr/bin/env python3
"""The registrar's path without sockets: CPU per login inside ``RegionalServer.handle_datagram``.

The datagrams are SIPp's (bench/sipp/register_many.xml): REGISTER -> 401, REGISTER with an MD5 digest -> 200,
``--users`` players in turn, accounts in a real region database (``AccountStore``), the bindings' changes
written to it every ``--persist-every`` logins as the driver does each second. Only the server's calls are
timed (process CPU time); the client's digest is computed outside. What is left to the socket loop (recvfrom,
sendto, the event loop) is bench/bench_register.py's difference to this figure.

    python bench/bench_registrar.py --logins 20000
    python bench/bench_registrar.py --profile        # cProfile of the same loop

Instructions per login (``--marked``: only the server's calls are counted, as bench_proxy.py's; divide by
``--logins``):

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=sys_call_tracing \
        python bench/bench_registrar.py --marked --logins 300
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gamesdk.sip.digest import compute_response
from server import cli
from server.accounts import AccountStore
from server.config import load_config
from server.db import open_region_db
from server.node import RegionalServer
from server.registrations import RegistrationStore

DOMAIN = "eu.gamesdk.test"
CLIENT = ("127.0.0.1", 5099)
_NONCE = re.compile(rb'nonce="([^"]+)"')


def _register(user: str, n: int, cseq: int, auth: str = "") -> bytes:
    lines = [
        f"REGISTER sip:{DOMAIN} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-1-{n}-{cseq};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{DOMAIN}>;tag=1reg{n}",
        f"To: <sip:{user}@{DOMAIN}>",
        f"Call-ID: {n}-1@127.0.0.1",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{user}@127.0.0.1:5099;transport=udp>",
        "Expires: 3600",
    ]
    if auth:
        lines.append(auth)
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def setup(workdir: Path, users: int) -> tuple[RegionalServer, AccountStore, RegistrationStore, str]:
    config = load_config(REPO / "examples" / "eu.toml").with_listen("127.0.0.1", 5060)
    import dataclasses

    config = dataclasses.replace(config, database=workdir / "eu.sqlite3",
                                 auth=dataclasses.replace(config.auth, digest_algorithms=("MD5", "SHA-256")),
                                 limits=dataclasses.replace(config.limits, unauthenticated_per_s=1e9,
                                                            unauthenticated_burst=10**9))
    accounts = AccountStore(config.database, config.auth.realm, config.auth.digest_algorithms)
    accounts.add_many([(f"player{i}", f"bench-pw-player{i}") for i in range(users)], now=time.time())
    store = RegistrationStore(open_region_db(config.database))
    import os

    node = RegionalServer(config, accounts, random_bytes=os.urandom)
    return node, accounts, store, config.auth.realm


_RUNS = [0]


class _Marked:
    """The node with its datagrams handed over through ``sys.call_tracing`` (a callgrind toggle, as bench_proxy's)."""

    def __init__(self, node: RegionalServer) -> None:
        self.node = node

    def handle_datagram(self, *args: object) -> object:
        return sys.call_tracing(self.node.handle_datagram, args)

    def __getattr__(self, name: str) -> object:
        return getattr(self.node, name)


def run(node: RegionalServer, store: RegistrationStore, realm: str, *, logins: int, users: int,
        persist_every: int) -> tuple[float, int]:
    """(server CPU seconds, logins that got their 200)."""
    _RUNS[0] += 1
    first_n = _RUNS[0] * 10_000_000  # every run its own branches and Call-IDs (no answer from the cache)
    from gamesdk.sip.digest import compute_ha1

    ha1s = [compute_ha1(f"player{i}", realm, f"bench-pw-player{i}") for i in range(users)]
    spent = 0.0
    ok = 0
    clock = time.process_time
    now = 1000.0
    for n in range(logins):
        i = n % users
        user = f"player{i}"
        first = _register(user, first_n + n, 1)
        t0 = clock()
        out = node.handle_datagram(first, CLIENT, now)
        spent += clock() - t0
        match = _NONCE.search(out[0][0])
        assert match is not None, out[0][0][:200]
        nonce = match.group(1).decode()
        response = compute_response(ha1=ha1s[i], nonce=nonce, method="REGISTER", uri=f"sip:{DOMAIN}",
                                    cnonce="6b8b4567", nc=1)
        auth = (f'Authorization: Digest username="{user}",realm="{realm}",cnonce="6b8b4567",nc=00000001,'
                f'qop=auth,uri="sip:{DOMAIN}",nonce="{nonce}",response="{response}",algorithm=MD5')
        second = _register(user, first_n + n, 2, auth)
        t0 = clock()
        out = node.handle_datagram(second, CLIENT, now)
        if persist_every and n % persist_every == 0:
            store.apply(node.location.take_changes(), 0.0)
        spent += clock() - t0
        if out and out[0][0].startswith(b"SIP/2.0 200"):
            ok += 1
        now += 0.0002
    return spent, ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--logins", type=int, default=20_000)
    ap.add_argument("--users", type=int, default=1_000)
    ap.add_argument("--persist-every", type=int, default=1_000,
                    help="write the bindings' changes every this many logins (the driver: every second)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--default-gc", action="store_true",
                    help="keep CPython's collector thresholds (by default the server's, server.cli.serving_gc)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--marked", action="store_true",
                    help="one run of --logins, the server's calls through sys.call_tracing (a callgrind toggle)")
    args = ap.parse_args(argv)
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-registrar-"))
        node, accounts, store, realm = setup(Path(tmp), args.users)
        serving_gc = getattr(cli, "serving_gc", None)  # absent in trees from before it (for comparisons)
        if not args.default_gc and serving_gc is not None:
            stack.enter_context(serving_gc())
        run(node, store, realm, logins=args.users, users=args.users, persist_every=args.persist_every)  # warm-up
        if args.marked:
            run(_Marked(node), store, realm, logins=args.logins, users=args.users,  # type: ignore[arg-type]
                persist_every=args.persist_every)
            print(f"{args.logins} logins through sys.call_tracing (callgrind: total instructions / {args.logins})")
            return 0
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile(time.process_time)
            prof.enable()
            run(node, store, realm, logins=args.logins, users=args.users, persist_every=args.persist_every)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(30)
            pstats.Stats(prof).sort_stats("cumulative").print_stats(60)
            return 0
        results = []
        for _ in range(args.repeats):
            spent, ok = run(node, store, realm, logins=args.logins, users=args.users,
                            persist_every=args.persist_every)
            results.append(1e6 * spent / max(ok, 1))
            print(f"  {ok} logins, {1e6 * spent / max(ok, 1):.1f} µs of server CPU per login (sans-IO)", flush=True)
        results.sort()
        print(f"median {results[len(results) // 2]:.1f} µs per login (two requests each)")
        accounts.close()
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
