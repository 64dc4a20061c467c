#!/usr/bin/env python3
"""Logins per second and CPU per login: our registrar and Kamailio's, side by side in one run.

SIPp logs ``--users`` players in ``--registrations`` times in all (each user in turn, as refreshes come), each
one REGISTER -> 401 -> REGISTER with an MD5 digest -> 200, closed loop with at most ``--window`` logins open.
Configurations:

  kam-qm / kam-fm   Kamailio 5.6 registrar (auth + usrloc in shared memory, db_mode 0; one worker),
                    packaged allocator / -x fm -X fm (bench/kamailio/registrar.cfg)
  ours              one regional server (python -m server run): the bindings persisted in the region DB
  ours*+uvloop      (``--uvloop``) the same on uvloop (``runtime.event_loop``); the others run on asyncio's loop
  ours-NAME         the same from another tree (``--tree NAME=DIR``, its modules first on the path): a copy
                    built with GAMESDK_MYPYC=1 (the compiled build), or an older commit (before/after a change)

CPU per login = utime+stime of the registrar process (and its children) over the measured run / logins; a login
is two requests (the challenged one and the authenticated one), as for every SIP client. Repeats are
interleaved across configurations; each step runs on fresh processes after a warm-up.

    python bench/bench_register.py                    # 10,000 logins of 1,000 users, 3 repeats
    python bench/bench_register.py --only ours --profile

Instructions per login through the sockets (``--callgrind``): our server (``ours``, ``ours-NAME``) runs under
valgrind's callgrind with its instrumentation off; after the warm-up it is switched on (``callgrind_control``) for
``--registrations`` logins (at most ``--window`` open) and the counts are dumped: user space only (the kernel's
side of the socket calls is not counted), every thread, load-blind. Split into the node's ``handle_datagram``,
the driver's other callbacks (asyncio's ``Context.run``: reads, sends, timers, the flush) and the rest (the loop's
polling, the registration writer's thread):

    python bench/bench_register.py --callgrind --only ours --tree new=../other --only ours-new \
        --registrations 1000 --users 100 --window 6
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_server import CPROFILE_WRAPPER, _epoch, _tool_version, cprofile_summary, h, run_uac, tree_cpu_s

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "sipp" / "register_many.xml"
KAMAILIO_CFG = HERE / "kamailio" / "registrar.cfg"
DOMAIN = "eu.gamesdk.test"


def password(user: str) -> str:
    """The benchmark's password rule (the Kamailio config derives the same one from the To user)."""
    return f"bench-pw-{user}"


def users(count: int) -> list[str]:
    return [f"player{i}" for i in range(count)]


def write_injection(path: Path, names: list[str]) -> None:
    """SIPp's injection file: one line per user, read in turn (SEQUENTIAL) so the logins cycle over them. SIPp
    expands an ``[authentication ...]`` keyword found in a field (not one holding ``[fieldN]`` in the scenario)."""
    lines = ["SEQUENTIAL"] + [f"{u};[authentication username={u} password={password(u)}];{DOMAIN}" for u in names]
    path.write_text("\n".join(lines) + "\n")


def start_kamailio(stack: ExitStack, workdir: Path, port: int, memmgr: str) -> int:
    runtime = workdir / "kam-runtime"
    runtime.mkdir(exist_ok=True)
    argv = ["kamailio", "-f", str(KAMAILIO_CFG), "-l", f"udp:{h.LOOPBACK}:{port}", "-n", "1", "-DD", "-E",
            "-m", "256", "-M", "16", "-Y", str(runtime)]
    if memmgr == "fm":
        argv += ["-x", "fm", "-X", "fm"]
    proc = h.ManagedProcess(argv, workdir / "kamailio.log")
    stack.callback(proc.stop)
    h.wait_udp_bound(port, proc.proc)
    time.sleep(0.3)  # let it fork its worker and timer processes
    return int(proc.pid)


#: Runs the server's CLI with another tree first on the module path (argv: the tree, then the CLI's arguments).
TREE_WRAPPER = """
import sys
sys.path.insert(0, sys.argv.pop(1))
from server.cli import main
sys.exit(main(sys.argv[1:]))
"""


#: Runs the server's CLI under callgrind (argv: the output file, then TREE_WRAPPER's); exec keeps the PID, so the
#: harness's process is valgrind's. Instrumentation starts off: start-up and warm-up are not counted.
CALLGRIND_WRAPPER = f"""
import os, sys
out = sys.argv.pop(1)
os.execvp("valgrind", ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=" + out,
                       sys.executable, "-c", {TREE_WRAPPER!r}, *sys.argv[1:]])
"""


#: Creates the benchmark's accounts with another tree's code (argv: the tree, the region file, the user names).
ADD_ACCOUNTS = """
import sys, time
sys.path.insert(0, sys.argv[1])
from server.accounts import AccountStore
from server.config import load_config
config = load_config(sys.argv[2])
store = AccountStore(config.database, config.auth.realm, config.auth.digest_algorithms)
store.add_many([(u, "bench-pw-" + u) for u in sys.argv[3:]], now=time.time())
store.close()
"""


def start_ours(stack: ExitStack, workdir: Path, port: int, names: list[str], profile: Path | None,
               tree: Path | None = None, loop: str = "asyncio", callgrind: Path | None = None) -> int:
    from server.accounts import AccountStore
    from server.config import load_config

    overrides: dict[str, dict[str, Any]] = {
        "log": {"level": "WARNING"},
        # Every login comes from 127.0.0.1: lift the per-source budget for unauthenticated answers (the 401s).
        "limits": {"unauthenticated_per_s": 1_000_000.0, "unauthenticated_burst": 1_000_000},
        "federation": {"options_interval_s": 3600},
        "runtime": {"event_loop": loop},
    }
    server = h.RegionServer(workdir, "eu", DOMAIN, port, [], overrides=overrides)
    if tree is None:
        config = load_config(server.config_path)
        store = AccountStore(config.database, config.auth.realm, config.auth.digest_algorithms)
        store.add_many([(u, password(u)) for u in names], now=time.time())
        store.close()
    else:
        # The accounts made by the tree's own code: its database schema may be older than this one's.
        subprocess.run([sys.executable, "-c", ADD_ACCOUNTS, str(tree), str(server.config_path), *names],
                       cwd=workdir, check=True, timeout=300)
    if callgrind is not None:
        server.start(python_args=["-c", CALLGRIND_WRAPPER, str(callgrind), str(tree or REPO)], ready_timeout_s=300)
    elif profile is not None:
        server.start(python_args=["-c", CPROFILE_WRAPPER, str(profile)])
    elif tree is not None:
        server.start(python_args=["-c", TREE_WRAPPER, str(tree)])
    else:
        server.start()
    stack.callback(server.stop)
    return int(server.pid)


@contextmanager
def registrar(kind: str, workdir: Path, names: list[str], profile: Path | None = None,
              trees: dict[str, Path] | None = None) -> Iterator[tuple[int, int]]:
    """(port, pid) of a running registrar of ``kind``; stopped (by PID) on exit."""
    with ExitStack() as stack:
        (port,) = h.free_udp_ports(1)
        base, plus, _ = kind.partition("+")
        loop = "uvloop" if plus else "asyncio"
        if base == "ours":
            pid = start_ours(stack, workdir, port, names, profile, loop=loop)
        elif base.startswith("ours-"):
            pid = start_ours(stack, workdir, port, names, None, (trees or {})[base.removeprefix("ours-")], loop=loop)
        else:
            pid = start_kamailio(stack, workdir, port, kind.split("-")[1])
        yield port, pid


def step(port: int, pid: int, workdir: Path, tag: str, *, logins: int, window: int,
         time_cap_s: float) -> dict[str, Any]:
    argv = h.sipp_command(SCENARIO, port, workdir=workdir, tag=tag, calls=logins, rate=20000, limit=window,
                          auth_uri=f"sip:{DOMAIN}", timeout_s=time_cap_s, trace=False, stats=True,
                          extra=["-inf", str(workdir / "users.csv"), "-trace_err", "-error_file",
                                 str(workdir / f"{tag}.errors.log")])
    before = tree_cpu_s(pid)
    wall0 = time.monotonic()
    code, sipp_cpu = run_uac(argv, time_cap_s + 15)
    wall = time.monotonic() - wall0
    cpu = tree_cpu_s(pid) - before
    stats = h.read_stats(workdir / f"{tag}.stats.csv")
    ok = int(stats.get("SuccessfulCall(C)", 0) or 0)
    failed = int(stats.get("FailedCall(C)", 0) or 0)
    elapsed = _epoch(stats.get("CurrentTime", "")) - _epoch(stats.get("StartTime", ""))
    if math.isnan(elapsed) or elapsed <= 0:
        elapsed = wall
    return {"logins": logins, "ok": ok, "failed": failed, "retrans": int(stats.get("Retransmissions(C)", 0) or 0),
            "sipp_exit": code, "elapsed_s": elapsed, "per_s": ok / elapsed if elapsed > 0 else 0.0,
            "cpu_us": 1e6 * cpu / max(ok, 1), "cores": cpu / elapsed if elapsed > 0 else 0.0,
            "sipp_cpu_us": 1e6 * sipp_cpu / max(ok, 1)}


def measure(kind: str, workdir: Path, names: list[str], *, logins: int, window: int, time_cap_s: float,
            profile: Path | None = None, trees: dict[str, Path] | None = None) -> dict[str, Any]:
    workdir.mkdir(parents=True)
    write_injection(workdir / "users.csv", names)
    with registrar(kind, workdir, names, profile, trees) as (port, pid):
        # Warm-up on the same process (imports, caches, every account's first lookup), not measured.
        step(port, pid, workdir, "warmup", logins=len(names), window=window, time_cap_s=time_cap_s)
        time.sleep(0.2)
        row = step(port, pid, workdir, "run", logins=logins, window=window, time_cap_s=time_cap_s)
    row["config"] = kind
    return row


def measure_callgrind(kind: str, workdir: Path, names: list[str], *, logins: int, window: int, time_cap_s: float,
                      trees: dict[str, Path]) -> dict[str, Any]:
    """``measure`` with our server under callgrind, counting only the measured logins (see the module's doc)."""
    workdir.mkdir(parents=True)
    write_injection(workdir / "users.csv", names)
    base, plus, _ = kind.partition("+")
    tree = None if base == "ours" else trees[base.removeprefix("ours-")]
    with ExitStack() as stack:
        (port,) = h.free_udp_ports(1)
        pid = start_ours(stack, workdir, port, names, None, tree, loop="uvloop" if plus else "asyncio",
                         callgrind=workdir / "callgrind.out")
        step(port, pid, workdir, "warmup", logins=len(names), window=window, time_cap_s=time_cap_s)
        subprocess.run(["callgrind_control", "--instr=on", str(pid)], check=True, capture_output=True, timeout=60)
        row = step(port, pid, workdir, "run", logins=logins, window=window, time_cap_s=time_cap_s)
        subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True, timeout=60)
    row.update(callgrind_split(workdir / "callgrind.out.1"))
    row["config"] = kind
    return row


#: callgrind_annotate's inclusive lines for the split (patterns on its output).
_SPLIT = {"handle_datagram": r"CPyDef_node___RegionalServer___handle_datagram \[",
          "callbacks": r"Python/context\.c:context_run \[", "total": r"PROGRAM TOTALS"}


def callgrind_split(dump: Path) -> dict[str, int | None]:
    """Instructions in the dump: all, in the node's handle_datagram (compiled build: its C function), and in
    asyncio's callbacks (Context.run) besides it. A pure tree's node is interpreted: it reads 0."""
    import re

    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(dump)], capture_output=True, text=True,
                          check=True, timeout=300).stdout
    found = dict.fromkeys(_SPLIT, 0)
    for line in text.splitlines():
        for key, pattern in _SPLIT.items():
            if not found[key] and re.search(pattern, line):
                found[key] = int(line.split()[0].replace(",", ""))
    if not found["callbacks"]:  # uvloop runs its callbacks without Context.run: no split there
        return {"ir_total": found["total"], "ir_node": found["handle_datagram"], "ir_callbacks": None,
                "ir_rest": None}
    return {"ir_total": found["total"], "ir_node": found["handle_datagram"],
            "ir_callbacks": found["callbacks"] - found["handle_datagram"],
            "ir_rest": found["total"] - found["callbacks"]}


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(rows: list[dict[str, Any]]) -> str:
    kinds = list(dict.fromkeys(r["config"] for r in rows))
    kam = [r for r in rows if r["config"] == "kam-fm"] or [r for r in rows if r["config"].startswith("kam")]
    kam_rate, kam_cpu = _med([r["per_s"] for r in kam]), _med([r["cpu_us"] for r in kam])
    out = ["| registrar | logins/s | CPU per login | vs Kamailio -x fm (rate) | failed | runs |",
           "|---|---|---|---|---|---|"]
    for kind in kinds:
        mine = [r for r in rows if r["config"] == kind]
        rates, cpus = [r["per_s"] for r in mine], [r["cpu_us"] for r in mine]
        out.append(f"| {kind} | {_med(rates):,.0f} [{min(rates):,.0f}–{max(rates):,.0f}] "
                   f"| {_med(cpus):,.0f} µs [{min(cpus):,.0f}–{max(cpus):,.0f}] "
                   f"| {_med(rates) / kam_rate:.2f}x | {sum(r['failed'] for r in mine)} | {len(mine)} |")
    if not math.isnan(kam_cpu):
        out.append(f"\nKamailio -x fm: {kam_cpu:,.0f} µs of CPU per login.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--registrations", type=int, default=10_000, help="logins per measured step (default 10,000)")
    ap.add_argument("--users", type=int, default=1_000, help="distinct players (default 1,000)")
    ap.add_argument("--window", type=int, default=64, help="max logins open at once (default 64)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--time-cap", type=float, default=120.0, help="seconds before a step is cut off")
    ap.add_argument("--only", action="append", help="run only these (kam-qm, kam-fm, ours, ours-NAME)")
    ap.add_argument("--uvloop", action="store_true", help="also run every ours* configuration on uvloop")
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=DIR",
                    help="also run ours-NAME from the tree DIR (e.g. mypyc=a copy built with GAMESDK_MYPYC=1 in "
                         "place, before=a checkout of an older commit); repeatable")
    ap.add_argument("--profile", action="store_true", help="afterwards profile our server under cProfile")
    ap.add_argument("--callgrind", action="store_true",
                    help="count instructions per login of our server under callgrind instead (see above)")
    ap.add_argument("--json", type=Path, help="append every row to this JSON-lines file")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)
    for tool in ("sipp", "kamailio") + (("valgrind", "callgrind_control") if args.callgrind else ()):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed (apt-get install sip-tester kamailio valgrind)", file=sys.stderr)
            return 2
    trees: dict[str, Path] = {}
    for spec in args.tree:
        name, sep, where = spec.partition("=")
        if not sep or not name or not (Path(where) / "server" / "cli.py").is_file():
            print(f"error: --tree {spec!r}: expected NAME=DIR with DIR a gamesdk tree", file=sys.stderr)
            return 2
        trees[name] = Path(where).resolve()
    kinds = args.only or ["kam-qm", "kam-fm", "ours"] + [f"ours-{name}" for name in trees]
    if args.uvloop:
        kinds += [f"{k}+uvloop" for k in kinds if k.startswith("ours")]
    unknown = [k for k in kinds if k.split("+")[0] not in ("kam-qm", "kam-fm", "ours")
               and k.split("+")[0].removeprefix("ours-") not in trees]
    if unknown:
        print(f"error: unknown configuration(s) {', '.join(unknown)} (ours-NAME needs --tree NAME=DIR)",
              file=sys.stderr)
        return 2
    if args.callgrind and any(not k.startswith("ours") for k in kinds):
        print("error: --callgrind counts our server only: add --only ours (or ours-NAME)", file=sys.stderr)
        return 2
    names = users(args.users)
    workroot = Path(tempfile.mkdtemp(prefix="bench-register-"))
    print(f"# bench_register {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {platform.node()}: {os.cpu_count()} CPUs, "
          f"{platform.platform()}, Python {platform.python_version()}")
    print(f"# {_tool_version(['sipp', '-v'])}; {_tool_version(['kamailio', '-v'])}")
    print(f"# {args.registrations} logins of {args.users} users per step, at most {args.window} open; "
          f"repeats {args.repeats}; work dir {workroot}", flush=True)
    rows: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        for kind in kinds:
            try:
                if args.callgrind:
                    row = measure_callgrind(kind, workroot / f"{kind}-{rep}", names, logins=args.registrations,
                                            window=args.window, time_cap_s=args.time_cap, trees=trees)
                else:
                    row = measure(kind, workroot / f"{kind}-{rep}", names, logins=args.registrations,
                                  window=args.window, time_cap_s=args.time_cap, trees=trees)
            except (RuntimeError, TimeoutError, subprocess.SubprocessError) as exc:
                print(f"! {kind}: {exc}", flush=True)
                continue
            row["repeat"] = rep
            rows.append(row)
            if args.json:
                with args.json.open("a") as f:
                    f.write(json.dumps(row) + "\n")
            if args.callgrind:
                ok = max(row["ok"], 1)
                split = ("(no split on uvloop)" if row["ir_callbacks"] is None else
                         f"the driver's other callbacks {row['ir_callbacks'] / ok:,.0f}, the rest "
                         f"{row['ir_rest'] / ok:,.0f}")
                print(f"  {kind:<19} {row['ir_total'] / ok:9,.0f} instructions per login: the node's "
                      f"handle_datagram {row['ir_node'] / ok:,.0f}, {split}  ({row['ok']} logins, "
                      f"failed {row['failed']}, retrans {row['retrans']})", flush=True)
                continue
            print(f"  {kind:<19} {row['per_s']:8,.0f} logins/s  {row['cpu_us']:6.0f} µs CPU/login "
                  f"({row['cores']:.2f} cores)  failed {row['failed']}  retrans {row['retrans']}  "
                  f"sipp {row['sipp_cpu_us']:.0f} µs  exit {row['sipp_exit']}", flush=True)
    if not args.callgrind:
        print()
        print(table(rows))
    if args.profile and "ours" in kinds:
        stats = workroot / "cprofile.pstats"
        row = measure("ours", workroot / "profile", names, logins=args.registrations, window=args.window,
                      time_cap_s=args.time_cap, profile=stats)
        print(f"\ncProfile (CPU time) of our server, {row['ok']} logins at {row['per_s']:,.0f}/s under the profiler:")
        print(cprofile_summary(stats) if stats.exists() else "no stats written")
    if not args.keep:
        shutil.rmtree(workroot, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
