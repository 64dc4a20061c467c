#!/usr/bin/env python3
"""Session setups per second through our regional servers and through Kamailio, side by side in one run.

The path is SIPp caller -> proxy (or two chained proxies) -> SIPp callee, all on 127.0.0.1:
INVITE with our extended SDP (a 407 round first when the first proxy authenticates players), 100, 180,
200 with the SDP answer, ACK, BYE, 200; no hold time. SIPp sends the ACK and BYE to the first proxy,
which forwards them by Request-URI (DESIGN section 2). Configurations:

  direct          SIPp caller -> SIPp callee (the tool's ceiling, no proxy)
  kam1-qm/-fm     one Kamailio 5.6 (tm t_relay, no Record-Route, one worker), packaged allocator / -x fm -X fm
  kam2-qm/-fm     two Kamailios chained, the first one authenticating the caller (as our eu server does)
  ours1           one regional server: caller and callee both logged on at eu
  ours2           eu -> na: the caller logged on at eu, the callee at na (the federation path)

Each step runs a fixed number of calls (``-m``) under a time cap, closed loop (at most ``--window`` calls
open, as fast as the path allows); ``--rate R`` adds an open-loop step at R calls/s to compare CPU per call at
equal load. CPU per call of each proxy is read from /proc/PID/stat (utime+stime of the process and its
children) over the measured run. Repeats are interleaved across configurations.

    python bench/bench_server.py                      # everything, 3 repeats
    python bench/bench_server.py --only kam --repeats 1
    python bench/bench_server.py --only ours --profile # + a py-spy profile of the eu server
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SIPP_DIR = HERE / "sipp"
KAMAILIO_CFG = HERE / "kamailio" / "proxy.cfg"
CLK_TCK = os.sysconf("SC_CLK_TCK")

CALLER, CALLEE = "alice", "bob"
PASSWORD = "bench-secret-1"
EU, NA = "eu.gamesdk.test", "na.gamesdk.test"


def _load_harness() -> ModuleType:
    """The process helpers shared with tests/server/sipp/ (loaded by path: tests/ is not a package)."""
    name = "gamesdk_sipp_harness"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "tests" / "server" / "sipp" / "harness.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


h = _load_harness()


# --- CPU accounting --------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime+stime seconds) of one process, from /proc/PID/stat (fields 4, 14, 15)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_s(root: int) -> float:
    """CPU seconds used so far by ``root`` and every live descendant (Kamailio forks its workers)."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            got = _stat(int(entry))
            if got is not None:
                children.setdefault(got[0], []).append(int(entry))
                cpu[int(entry)] = got[1]
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


# --- the systems under test --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    name: str
    kind: str  # direct | kam | ours
    hops: int
    memmgr: str = "qm"
    auth: bool = True
    #: Our eu server with its embedded policy answered on the signalling loop (``EmbeddedServer(policy_thread=
    #: False)``) instead of on its own thread: the cost of the hand-over, side by side (``--policy-on-loop``).
    policy_on_loop: bool = False

    @property
    def label(self) -> str:
        return self.name + ("" if self.auth or self.kind == "direct" else "-noauth")


@dataclasses.dataclass
class Path_:
    """A running path: where the caller sends, and the PIDs of the proxies to account CPU to."""

    target_port: int
    proxies: list[tuple[str, int]]


def start_kamailio(stack: ExitStack, workdir: Path, tag: str, port: int, next_hop: int, *, memmgr: str,
                   auth: bool) -> int:
    argv = ["kamailio", "-f", str(KAMAILIO_CFG), "-l", f"udp:{h.LOOPBACK}:{port}", "-n", "1", "-DD", "-E",
            # 512 MiB shared memory: completed transactions linger ~5 s, the 64 MiB default runs out
            # near 1,400 calls/s (research/perf.md, "What surprised me" 2).
            "-m", "512", "-M", "16", "-Y", str(workdir / f"{tag}-runtime"),
            "-A", f'NEXT_HOP="sip:{h.LOOPBACK}:{next_hop}"', "-A", f'AUTH_PASSWORD="{PASSWORD}"']
    (workdir / f"{tag}-runtime").mkdir(exist_ok=True)
    if memmgr == "fm":
        argv += ["-x", "fm", "-X", "fm"]
    if auth:
        argv += ["-A", "WITH_AUTH"]
    proc = h.ManagedProcess(argv, workdir / f"{tag}.log")
    stack.callback(proc.stop)
    h.wait_udp_bound(port, proc.proc)
    time.sleep(0.3)  # let it fork its worker and timer processes
    return int(proc.pid)


#: SIPp never PUBLISHes the dialog state (DESIGN section 4), so every reservation made on a 200 lingers until the
#: 32 s confirm timeout: at 500 calls/s that is 16,000 live sessions. The benchmark measures signalling, not
#: admission, so it lifts the example networks' limits (1,000 sessions, 100 Mbit/s) far above that.
UNLIMITED_NETWORK = {"max_sessions": 10_000_000, "uplink_kbps": 1_000_000_000, "downlink_kbps": 1_000_000_000}

#: Runs the server's CLI under cProfile with a CPU-time clock (py-spy samples wall time, which charges the time a
#: sender spends preempted inside sendto on loopback to sendto). Dumps the stats when the server exits on SIGTERM.
CPROFILE_WRAPPER = """
import cProfile, sys, time
from server.cli import main
out = sys.argv[1]
prof = cProfile.Profile(time.process_time)
prof.enable()
try:
    code = main(sys.argv[2:])
finally:
    prof.disable()
    prof.dump_stats(out)
sys.exit(code)
"""

#: Runs the server's CLI with the embedded policy on the signalling loop (no policy thread), for ``ours1-loop``.
POLICY_ON_LOOP_WRAPPER = """
import sys
import server.io
server.io._run_policy_on_thread = lambda hooks: None
from server.cli import main
sys.exit(main(sys.argv[1:]))
"""


def start_ours(stack: ExitStack, workdir: Path, hops: int, *, auth: bool,
               profile_eu: Path | None = None, policy_on_loop: bool = False) -> tuple[Path_, Any]:
    """Our regional server(s) and the callee's SIPp, logged in from the port it answers on."""
    eu_port, na_port, uas_port = h.free_udp_ports(3)
    # One OPTIONS ping per hour: the pings measure the transit latency the policy adds to the latency budget,
    # and under load they measure the busy server's queue (75 ms seen), which then refuses calls with 580
    # "latency budget exceeded". Measured once while idle, transit is the loopback's.
    # The 407 of every call goes to one address (SIPp's, 127.0.0.1): the per-source limit on answers to
    # unauthenticated sources (100/s by default, made for many players behind many addresses) would measure
    # itself, not the server, so the benchmark lifts it as it lifts the networks' session limits.
    # SIPp calls as one player, so the policy's cap on reservations per player (4 by default) would refuse the
    # FINAL of every call after the fourth: the 2xx would be forwarded with a Warning and the benchmark would
    # measure the refusal path (a billed attempt) instead of a granted reservation. Lifted as well.
    overrides: dict[str, dict[str, Any]] = {
        "log": {"level": "WARNING"}, "federation": {"options_interval_s": 3600},
        "limits": {"unauthenticated_per_s": 1_000_000.0, "unauthenticated_burst": 1_000_000},
        "policy": {"max_reservations_per_player": 10_000_000},
    }
    if not auth:
        overrides["auth"] = {"invite_auth": False}  # the config key the server may provide; see docs/benchmarks.md
    eu = h.RegionServer(workdir, "eu", EU, eu_port, [(NA, na_port)], overrides=overrides,
                        network_overrides=UNLIMITED_NETWORK)
    eu.add_user(CALLER, PASSWORD)
    servers = [eu]
    callee_home = eu
    if hops == 2:
        na = h.RegionServer(workdir, "na", NA, na_port, [(EU, eu_port)], overrides=overrides,
                            network_overrides=UNLIMITED_NETWORK)
        servers.append(na)
        callee_home = na
    callee_home.add_user(CALLEE, PASSWORD)
    for server in servers:
        if server is eu and profile_eu is not None:
            server.start(python_args=["-c", CPROFILE_WRAPPER, str(profile_eu)])
        elif server is eu and policy_on_loop:
            server.start(python_args=["-c", POLICY_ON_LOOP_WRAPPER])
        else:
            server.start()
        stack.callback(server.stop)
    uas = h.start_sipp(SIPP_DIR / "callee_register.xml", callee_home.port, workdir=workdir, tag="uas",
                       local_port=uas_port, keys={"user": CALLEE, "domain": callee_home.domain,
                                                  "contact_port": uas_port, "expires": 3600},
                       auth=(CALLEE, PASSWORD), auth_uri=f"sip:{callee_home.domain}", timeout_s=3600, trace=False,
                       extra=["-oocsf", str(SIPP_DIR / "uas_bench.xml"), "-deadcall_wait", "5000",
                              "-trace_logs", "-log_file", str(workdir / "uas.log")])
    stack.callback(uas.process.stop)
    h.wait_for_log(workdir / "uas.log", b"registered", timeout_s=15)
    return Path_(eu_port, [(s.name, s.pid) for s in servers]), uas


@contextmanager
def running_path(cfg: Config, workdir: Path, profile_eu: Path | None = None) -> Iterator[tuple[Path_, Any]]:
    """Start the callee's SIPp and the proxies of ``cfg``; stop all of them (by PID) on exit."""
    with ExitStack() as stack:
        if cfg.kind == "ours":
            yield start_ours(stack, workdir, cfg.hops, auth=cfg.auth, profile_eu=profile_eu,
                             policy_on_loop=cfg.policy_on_loop)
            return
        (uas_port,) = h.free_udp_ports(1)
        uas = h.start_sipp(SIPP_DIR / "uas_bench.xml", None, workdir=workdir, tag="uas", local_port=uas_port,
                           keys={"user": CALLEE}, calls=10_000_000, timeout_s=3600, trace=False,
                           extra=["-deadcall_wait", "5000"])
        stack.callback(uas.process.stop)
        if cfg.kind == "direct":
            path = Path_(uas_port, [])
        elif cfg.kind == "kam":
            ports = h.free_udp_ports(cfg.hops)
            pids = []
            nxt = uas_port
            for i in reversed(range(cfg.hops)):
                # Only the first proxy authenticates the caller, as only our eu server does.
                pids.append((f"kam{i + 1}", start_kamailio(stack, workdir, f"kam{i + 1}", ports[i], nxt,
                                                           memmgr=cfg.memmgr, auth=cfg.auth and i == 0)))
                nxt = ports[i]
            path = Path_(ports[0], list(reversed(pids)))
        yield path, uas


# --- one measured step ------------------------------------------------------------------------------------------


def _hms_us(text: str) -> float:
    """SIPp durations 'HH:MM:SS:uuuuuu' -> seconds."""
    try:
        hh, mm, ss, us = (int(x) for x in text.split(":"))
    except ValueError:
        return float("nan")
    return hh * 3600 + mm * 60 + ss + us / 1e6


def _epoch(stamp: str) -> float:
    # "2026-11-28\t07:14:48.124604\t1795850088.124604"
    try:
        return float(stamp.split("\t")[-1])
    except ValueError:
        return float("nan")


def run_uac(argv: list[str], timeout_s: float) -> tuple[int, float]:
    """Run the caller's SIPp; return (exit code, its CPU seconds from wait4's rusage)."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            proc.send_signal(signal.SIGTERM)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            return -1, usage.ru_utime + usage.ru_stime
        time.sleep(0.01)


def step(cfg: Config, path: Path_, uas: Any, workdir: Path, tag: str, *, calls: int, rate: float | None,
         window: int, time_cap_s: float) -> dict[str, Any]:
    scenario = SIPP_DIR / ("uac_bench_auth.xml" if cfg.auth and cfg.kind != "direct" else "uac_bench.xml")
    closed = rate is None
    argv = h.sipp_command(scenario, path.target_port, workdir=workdir, tag=tag, calls=calls,
                          rate=20000 if closed else rate, limit=window if closed else max(window, 4096),
                          keys={"user": CALLER, "domain": EU, "callee": CALLEE,
                                "callee_domain": NA if cfg.hops == 2 else EU},
                          auth=(CALLER, PASSWORD), auth_uri=f"sip:{CALLEE}@{NA if cfg.hops == 2 else EU}",
                          timeout_s=time_cap_s, trace=False, stats=True,
                          extra=["-deadcall_wait", "5000", "-trace_err", "-error_file",
                                 str(workdir / f"{tag}.errors.log")])
    before = {name: tree_cpu_s(pid) for name, pid in path.proxies}
    uas_before = tree_cpu_s(uas.pid)
    wall0 = time.monotonic()
    code, uac_cpu = run_uac(argv, time_cap_s + 15)
    wall = time.monotonic() - wall0
    proxy_cpu = {name: tree_cpu_s(pid) - before[name] for name, pid in path.proxies}
    uas_cpu = tree_cpu_s(uas.pid) - uas_before
    stats = h.read_stats(workdir / f"{tag}.stats.csv")
    ok = int(stats.get("SuccessfulCall(C)", 0) or 0)
    failed = int(stats.get("FailedCall(C)", 0) or 0)
    retrans = int(stats.get("Retransmissions(C)", 0) or 0)
    elapsed = _epoch(stats.get("CurrentTime", "")) - _epoch(stats.get("StartTime", ""))
    if math.isnan(elapsed) or elapsed <= 0:
        elapsed = wall
    per_call = 1e6 / max(ok, 1)
    return {
        "config": cfg.label, "mode": "closed" if closed else f"open@{rate:g}", "calls": calls, "ok": ok,
        "failed": failed, "fail_pct": 100.0 * failed / max(ok + failed, 1), "retrans": retrans,
        "sipp_exit": code, "elapsed_s": elapsed, "calls_per_s": ok / elapsed if elapsed > 0 else 0.0,
        "setup_ms_mean": 1000 * _hms_us(stats.get("ResponseTime1(C)", "")),
        "proxy_cpu_us_per_call": {n: c * per_call for n, c in proxy_cpu.items()},
        "proxy_cores": {n: c / elapsed for n, c in proxy_cpu.items()} if elapsed > 0 else {},
        "proxies_cpu_us_per_call": sum(proxy_cpu.values()) * per_call,
        "uas_cpu_us_per_call": uas_cpu * per_call, "uac_cpu_us_per_call": uac_cpu * per_call,
    }


# --- open-loop search for the highest sustainable rate -------------------------------------------------------------


def passes(row: dict[str, Any], rate: float) -> bool:
    """The strict rule of research/perf.md: < 1% failed, >= 97% of the target rate achieved, no call left open,
    retransmissions <= 1% of calls, mean setup < 50 ms (no backlog building up)."""
    expected_s = row["calls"] / rate
    return (row["fail_pct"] < 1.0 and row["ok"] >= 0.99 * row["calls"] and row["sipp_exit"] in (0, 1)
            and row["elapsed_s"] <= expected_s / 0.97 + 0.5 and row["retrans"] <= 0.01 * row["calls"]
            and row["setup_ms_mean"] < 50)


def measure(cfg: Config, workdir: Path, *, calls: int, rate: float | None, window: int,
            time_cap_s: float) -> dict[str, Any]:
    """One step on fresh processes (completed transactions linger, so each step starts clean)."""
    workdir.mkdir(parents=True)
    with running_path(cfg, workdir) as (path, uas):
        # Warm-up (imports, caches, SQLite pages) on the same processes, not measured.
        step(cfg, path, uas, workdir, "warmup", calls=200, rate=None, window=min(window, 64), time_cap_s=time_cap_s)
        time.sleep(0.2)
        return step(cfg, path, uas, workdir, "run", calls=calls, rate=rate, window=window, time_cap_s=time_cap_s)


def search(cfg: Config, workdir: Path, *, start: float, seconds: float, max_steps: int, time_cap_s: float,
           log: Callable[[str], None]) -> dict[str, Any] | None:
    """Bisect the open-loop rate: x1.5 up while passing, then halve the gap until it is under 8%."""
    best: dict[str, Any] | None = None
    lo = hi = None
    rate = start
    for i in range(max_steps):
        row = measure(cfg, workdir / f"step{i}-{int(rate)}", calls=max(200, int(rate * seconds)), rate=rate,
                      window=100_000, time_cap_s=time_cap_s)
        ok = passes(row, rate)
        log(f"    search {cfg.label:<12} {rate:7.0f}/s -> {'pass' if ok else 'FAIL'} (fail {row['fail_pct']:.2f}%, "
            f"{row['calls_per_s']:.0f}/s done, retrans {row['retrans']}, setup {row['setup_ms_mean']:.1f} ms, "
            f"proxies {row['proxies_cpu_us_per_call']:.0f} µs/call)")
        if ok:
            lo, best = rate, dict(row, mode="search", calls_per_s=rate)
        else:
            hi = rate
        if hi is None:
            rate *= 1.5
        elif lo is None:
            rate /= 2
            if rate < 25:
                break
        elif (hi - lo) / lo < 0.08:
            break
        else:
            rate = round((lo + hi) / 2, -1)
    return best


# --- profile ----------------------------------------------------------------------------------------------------


def profile_summary(raw: Path, top: int = 18) -> str:
    """Top functions by own samples and by inclusive samples from py-spy's collapsed-stack output."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        n = int(count_text)
        total += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    lines = [f"py-spy samples: {total}", "", "own time (leaf function):"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top + 12)]
    return "\n".join(lines)


#: The per-message CPU breakdown: (part, functions whose inclusive time it is). Inclusive times nest (digest, policy
#: and serialize run inside routing), so "route" is reported without them. bench/bench_breakdown.py counts the same
#: parts exclusively (callgrind) on the sans-IO benches.
BREAKDOWN = (
    ("parse", ("parse_message_untrusted", "validate_untrusted", "read_head")),
    ("digest", ("LoginFlow.authenticate",)),
    ("policy", ("RegionPolicyHooks.invite_received", "RegionPolicyHooks.answer_received",
                "RegionPolicyHooks.publish_received")),
    ("serialize (to_bytes, splicing)", ("Message.to_bytes", "with_vias", "forward_request", "spliced")),
    ("registrar (bindings; without digest)", ("Registrar.handle",)),
    ("route (proxy, transactions; without digest, policy, serialize)", ("ProxyCore.handle_request",
                                                                        "TransactionSide.handle_response",
                                                                        "ProxyCore.relay_request",
                                                                        "ProxyCore.relay_ack",
                                                                        "TransactionSide.relay_response")),
    ("I/O (sendto, timers, the driver)", ("ServerProtocol._send", "ServerProtocol._rearm",
                                          "ServerProtocol._rearm_batch")),
)
#: Parts whose inclusive time holds others' (cProfile has no exclusive time per subtree): subtracted.
NESTED = {"route": ("digest", "policy", "serialize"), "registrar": ("digest",)}


def breakdown(path: Path, calls: int) -> str:
    """CPU per call by part (under the profiler, which roughly doubles every figure: read the shares)."""
    import pstats

    raw: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    total = max(sum(v[2] for v in raw.values()), 1e-9)

    def incl(names: tuple[str, ...]) -> float:
        found = 0.0
        for (filename, _, func), value in raw.items():
            for name in names:
                cls, _, meth = name.rpartition(".")
                if func == meth and (not cls or _defines(filename, cls)):
                    found += value[3]
        return found

    parts = {name: incl(funcs) for name, funcs in BREAKDOWN}
    short = {name.split(" (")[0]: name for name in parts}
    own = dict(parts)
    for outer, inner in NESTED.items():
        own[short[outer]] = max(0.0, parts[short[outer]] - sum(parts[short[i]] for i in inner))
    parts = own
    lines = ["| part | share of eu CPU | µs per call (profiled) |", "|---|---:|---:|"]
    for name, secs in parts.items():
        lines.append(f"| {name} | {100 * secs / total:.0f} % | {1e6 * secs / max(calls, 1):,.0f} |")
    rest = total - sum(parts.values())
    lines.append(f"| the rest (asyncio, logging, ...) | {100 * rest / total:.0f} % | {1e6 * rest / max(calls, 1):,.0f} |")
    return "\n".join(lines)


@functools.cache
def _defines(filename: str, cls: str) -> bool:
    try:
        return f"class {cls}" in Path(filename).read_text()
    except OSError:
        return False


def cprofile_summary(path: Path, top: int = 25) -> str:
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return "\n".join(line for line in out.getvalue().splitlines() if line.strip())


def run_profile(cfg: Config, workdir: Path, calls: int, window: int, time_cap_s: float) -> str:
    """Profile our eu server on ``cfg``: py-spy (wall-clock samples) on one run, cProfile (CPU time) on another."""
    report = []
    workdir.mkdir(parents=True, exist_ok=True)
    if shutil.which("py-spy") is not None:
        (workdir / "py-spy").mkdir()
        with running_path(cfg, workdir / "py-spy") as (path, uas):
            name, pid = path.proxies[0]
            out = workdir / f"py-spy-{name}.txt"
            spy = subprocess.Popen(["py-spy", "record", "-p", str(pid), "-r", "250", "-f", "raw", "-o", str(out),
                                    "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(1.0)
                row = step(cfg, path, uas, workdir, "py-spy", calls=calls, rate=None, window=window,
                           time_cap_s=time_cap_s)
            finally:
                spy.send_signal(signal.SIGINT)
                try:
                    spy.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    spy.wait()
        if out.exists():
            report.append(f"py-spy (wall-clock samples) of the {name} server ({cfg.label}, {row['ok']} calls at "
                          f"{row['calls_per_s']:.0f} calls/s):\n" + profile_summary(out))
        else:
            report.append("py-spy wrote no profile (it needs ptrace permission)")
    else:
        report.append("py-spy is not installed (pip install py-spy): wall-clock profile skipped")
    stats_path = workdir / "cprofile-eu.pstats"
    (workdir / "cprofile").mkdir()
    with running_path(cfg, workdir / "cprofile", profile_eu=stats_path) as (path, uas):
        row = step(cfg, path, uas, workdir, "cprofile", calls=calls, rate=None, window=window,
                   time_cap_s=time_cap_s)
    # running_path stopped the server with SIGTERM; the wrapper wrote the stats on its way out.
    if stats_path.exists():
        report.append(f"cProfile (CPU time, process_time clock) of the eu server ({cfg.label}, {row['ok']} calls at "
                      f"{row['calls_per_s']:.0f} calls/s under the profiler):\n" + breakdown(stats_path, row["ok"])
                      + "\n\n" + cprofile_summary(stats_path))
    else:
        report.append("cProfile wrote no stats (the server did not exit through its SIGTERM handler)")
    return "\n\n".join(report)


# --- report -------------------------------------------------------------------------------------------------------


def _med(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "-"
    med = statistics.median(values)
    fmt: Callable[[float], str] = (lambda v: f"{v:,.0f}") if med >= 10 else (lambda v: f"{v:.2f}")
    return fmt(med) if len(values) == 1 else f"{fmt(med)} [{fmt(min(values))}–{fmt(max(values))}]"


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: median [min-max] per (mode, config); ratios of medians to Kamailio with as many hops."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["mode"], row["config"]), []).append(row)
    rate_of = {key: statistics.median(r["calls_per_s"] for r in rs) for key, rs in groups.items()}
    out = [
        ("| mode | config | calls/s | ratio to kam-fm | ratio to kam-qm | fail % | retrans/call | proxy CPU µs/call "
        "(each) | all proxies µs/call | proxy cores (each) | setup ms | UAS µs/call | UAC µs/call | n |"),
        "|" + "---|" * 14,
    ]
    for (mode, config), rs in sorted(groups.items()):
        digit = re.search(r"\d", config)
        suffix = "-noauth" if config.endswith("-noauth") else ""
        cells = [mode, config, _med([r["calls_per_s"] for r in rs])]
        for ref in ("fm", "qm"):
            ref_rate = rate_of.get((mode, f"kam{digit.group()}-{ref}{suffix}")) if digit else None
            cells.append(f"{rate_of[(mode, config)] / ref_rate:.2f}" if ref_rate else "-")
        names = list(rs[0]["proxy_cpu_us_per_call"])
        cells += [
            _med([r["fail_pct"] for r in rs]),
            _med([r["retrans"] / max(r["ok"], 1) for r in rs]),
            " / ".join(f"{n} {_med([r['proxy_cpu_us_per_call'][n] for r in rs])}" for n in names) or "-",
            _med([r["proxies_cpu_us_per_call"] for r in rs]) if names else "-",
            " / ".join(_med([r["proxy_cores"].get(n, math.nan) for r in rs]) for n in names) or "-",
            _med([r["setup_ms_mean"] for r in rs]),
            _med([r["uas_cpu_us_per_call"] for r in rs]),
            _med([r["uac_cpu_us_per_call"] for r in rs]),
            str(len(rs)),
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


@functools.cache
def ours_can_skip_invite_auth() -> bool:
    """Whether our server's config accepts ``[auth] invite_auth = false`` (else only the digest path is measured)."""
    with tempfile.TemporaryDirectory() as tmp:
        server = h.RegionServer(Path(tmp), "eu", EU, 5060, overrides={"auth": {"invite_auth": False}})
        ok = bool(server.cli("check-config").returncode == 0)
    if not ok:
        print("note: our server has no [auth] invite_auth switch; measuring it with INVITE digest only",
              file=sys.stderr)
    return ok


def server_available() -> bool:
    try:
        done = subprocess.run([sys.executable, "-m", "server", "--help"], capture_output=True, timeout=30,
                              cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=4000, help="calls per closed-loop step (default 4000)")
    ap.add_argument("--window", type=int, default=64, help="max open calls in closed loop (default 64)")
    ap.add_argument("--rate", type=float, action="append", default=[],
                    help="also run an open-loop step at this many calls/s (repeatable)")
    ap.add_argument("--rate-seconds", type=float, default=5.0, help="length of each open-loop step")
    ap.add_argument("--no-closed", action="store_true", help="skip the closed-loop step")
    ap.add_argument("--search", action="store_true",
                    help="also bisect the highest open-loop rate passing the strict rule (fresh processes per step)")
    ap.add_argument("--search-start", type=float, help="first rate of the search (default per kind)")
    ap.add_argument("--search-seconds", type=float, default=4.0, help="length of each search step")
    ap.add_argument("--search-steps", type=int, default=8, help="at most this many steps per search")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--time-cap", type=float, default=60.0, help="seconds before a step is cut off")
    ap.add_argument("--only", choices=["kam", "ours", "direct"], action="append",
                    help="run only these kinds (repeatable)")
    ap.add_argument("--config", action="append", help="run only these configurations by name (repeatable)")
    ap.add_argument("--noauth", action="store_true",
                    help="also run every proxy configuration without INVITE authentication")
    ap.add_argument("--profile", action="store_true", help="afterwards profile our eu server with py-spy")
    ap.add_argument("--policy-on-loop", action="store_true",
                    help="also run ours1-loop / ours2-loop: eu's embedded policy answered on the signalling loop "
                         "instead of its own thread (the hand-over's cost, side by side)")
    ap.add_argument("--profile-config", choices=["ours1", "ours2"], default="ours2",
                    help="the path profiled with --profile (default ours2: eu -> na)")
    ap.add_argument("--profile-stats", type=Path, help="also keep the eu server's cProfile stats in this file")
    ap.add_argument("--json", type=Path, help="append every row to this JSON-lines file")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, stats)")
    ap.add_argument("--summarize", type=Path, metavar="JSONL",
                    help="print the table of rows saved earlier with --json, and run nothing")
    args = ap.parse_args(argv)
    if args.summarize:
        print(table([json.loads(line) for line in args.summarize.read_text().splitlines() if line.strip()]))
        return 0

    for tool in ("sipp", "kamailio"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed (apt-get install sip-tester kamailio)", file=sys.stderr)
            return 2
    kinds = set(args.only or ["direct", "kam", "ours"])
    if "ours" in kinds and not server_available():
        print("note: `python -m server` is not runnable here; measuring Kamailio only", file=sys.stderr)
        kinds.discard("ours")

    configs = [Config("direct", "direct", 0, auth=False)]
    for hops in (1, 2):
        configs += [Config(f"kam{hops}-qm", "kam", hops, "qm"), Config(f"kam{hops}-fm", "kam", hops, "fm"),
                    Config(f"ours{hops}", "ours", hops)]
        if args.policy_on_loop:
            configs.append(Config(f"ours{hops}-loop", "ours", hops, policy_on_loop=True))
    if args.noauth:
        configs += [dataclasses.replace(c, auth=False) for c in configs
                    if c.kind == "kam" or (c.kind == "ours" and ours_can_skip_invite_auth())]
    configs = [c for c in configs if c.kind in kinds and (not args.config or c.label in args.config)]

    workroot = Path(tempfile.mkdtemp(prefix="bench-server-"))
    print(f"# bench_server {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {platform.node()}: {os.cpu_count()} CPUs, "
          f"{platform.platform()}, Python {platform.python_version()}")
    print(f"# {_tool_version(['sipp', '-v'])}; {_tool_version(['kamailio', '-v'])}")
    print(f"# closed loop: {args.calls} calls per step, at most {args.window} open; repeats {args.repeats}; "
          f"work dir {workroot}", flush=True)
    rows: list[dict[str, Any]] = []

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        if args.json:
            with args.json.open("a") as f:
                f.write(json.dumps(row) + "\n")

    def say(text: str) -> None:
        print(text, flush=True)

    for rep in range(args.repeats):
        for cfg in configs:
            steps: list[tuple[str, float | None]] = []
            if not args.no_closed:
                steps.append(("closed", None))
            steps += [(f"open{int(r)}", r) for r in args.rate]
            for name, rate in steps:
                calls = args.calls if rate is None else int(rate * args.rate_seconds)
                try:
                    row = measure(cfg, workroot / f"{cfg.label}-{rep}-{name}", calls=calls, rate=rate,
                                  window=args.window, time_cap_s=args.time_cap)
                except (RuntimeError, TimeoutError) as exc:
                    say(f"! {cfg.label}: {exc}")
                    continue
                row["repeat"] = rep
                record(row)
                say(f"  {row['config']:<14} {row['mode']:<10} {row['calls_per_s']:8,.0f} calls/s  "
                    f"fail {row['fail_pct']:.2f}%  proxies {row['proxies_cpu_us_per_call']:6.0f} µs/call  "
                    f"uas {row['uas_cpu_us_per_call']:4.0f}  uac {row['uac_cpu_us_per_call']:4.0f}  "
                    f"exit {row['sipp_exit']}")
            if args.search:
                start = args.search_start or {"direct": 5000.0, "kam": 1500.0, "ours": 500.0}[cfg.kind]
                try:
                    best = search(cfg, workroot / f"{cfg.label}-{rep}-search", start=start,
                                  seconds=args.search_seconds, max_steps=args.search_steps,
                                  time_cap_s=args.time_cap, log=say)
                except (RuntimeError, TimeoutError) as exc:
                    say(f"! {cfg.label}: {exc}")
                    continue
                if best is None:
                    say(f"  {cfg.label}: no rate passed")
                    continue
                best["repeat"] = rep
                record(best)
                say(f"  {best['config']:<14} search     {best['calls_per_s']:8,.0f} calls/s sustained  "
                    f"proxies {best['proxies_cpu_us_per_call']:6.0f} µs/call")
    print()
    print(table(rows))
    print("\nrate = successful calls / SIPp's run time; a row counts only with fail % < 1. "
          "CPU per call = utime+stime over the measured run / successful calls.")
    if args.profile and "ours" in kinds:
        print()
        hops = 1 if args.profile_config == "ours1" else 2
        print(run_profile(Config(args.profile_config, "ours", hops), workroot / "profile", args.calls, args.window,
                          args.time_cap))
        if args.profile_stats is not None and (workroot / "profile" / "cprofile-eu.pstats").exists():
            shutil.copyfile(workroot / "profile" / "cprofile-eu.pstats", args.profile_stats)
    if not args.keep:
        shutil.rmtree(workroot, ignore_errors=True)
    return 0


def _tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False).stdout
    except OSError:
        return f"{argv[0]} missing"
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    return lines[0] if lines else argv[0]


if __name__ == "__main__":
    sys.exit(main())
