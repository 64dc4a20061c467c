#!/usr/bin/env python3
"""What the embedded policy's thread costs per call: futex calls, context switches, SQLite statements, and the CPU of
the signalling loop's thread and of the policy thread apart, through sockets (``bench_server.py``'s ours1/ours2).

Counts per call do not depend on the machine's load the way timings do (a context switch per hand-over is one
whatever the load), so they compare two trees even on a busy machine. For each configuration and round:

- ``futex`` / ``cs``: ``perf stat -e syscalls:sys_enter_futex,context-switches -p <eu>`` over the measured calls
  (needs perf and root; ``--no-perf`` leaves them out);
- ``vol`` / ``invol``: voluntary and involuntary context switches of eu's threads (/proc/PID/task/*/status);
- ``loop us`` / ``policy us``: CPU of eu's main thread and of its ``gamesdk-policy`` thread per call
  (/proc/PID/task/*/stat), ``other us`` the rest (the registration writer, the executor);
- ``sql``: SQLite statements per call (``--sql``: eu started with a trace callback on every connection, which
  itself costs CPU: timings of that run are not comparable), and per call the jobs handed to the policy's thread,
  the queries in them and the thread's batches (its wake-ups).

    python bench/bench_handoff.py --calls 2000 --rounds 3            # ours1 and ours2, thread and --policy-on-loop
    python bench/bench_handoff.py --config ours1 --sql --rounds 1    # + SQLite statements per call
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_server as bs

#: eu started with every SQLite connection counting its statements; SIGUSR1 writes the count to the file named by
#: GAMESDK_BENCH_SQL_COUNT (read before and after the measured calls).
SQL_COUNT_WRAPPER = """
import os, signal, sqlite3, sys
import collections, json, threading
_count = [0]
_by = collections.Counter()
_connect = sqlite3.connect
def _counted(*args, **kwargs):
    conn = _connect(*args, **kwargs)
    def _trace(sql):
        _count[0] += 1
        _by[(threading.current_thread().name, " ".join(sql.split()[:3])[:40])] += 1
    conn.set_trace_callback(_trace)
    return conn
sqlite3.connect = _counted
import server.policy.worker as _w
_submit_many = _w.PolicyWorker.submit_many
def _counted_submit(self, queries, inbox):
    _by[("handover", "jobs")] += 1
    _by[("handover", "queries")] += len(queries)
    return _submit_many(self, queries, inbox)
_w.PolicyWorker.submit_many = _counted_submit
_decide_inline = getattr(_w.PolicyWorker, "decide_inline", None)
def _counted_decide(self, queries, inbox):
    written = getattr(self, "written_inline", 0)
    answers, handed = _decide_inline(self, queries, inbox)
    written = getattr(self, "written_inline", 0) - written
    _by[("handover", "checks answered on the loop")] += len(answers) - written
    if written:
        _by[("handover", "2xx decided and written on the loop")] += written
    if handed:
        _by[("handover", "jobs")] += 1
        _by[("handover", "queries")] += handed
        _by[("handover", "2xx decided on the loop")] += handed
    return answers, handed
if _decide_inline is not None:
    _w.PolicyWorker.decide_inline = _counted_decide
_do_batch = _w.PolicyWorker._do_batch
def _counted_batch(self, jobs):
    _by[("handover", "thread wake-ups")] += 1
    return _do_batch(self, jobs)
_w.PolicyWorker._do_batch = _counted_batch
_timers = _w.PolicyWorker._timers
def _counted_timers(self):
    _by[("handover", "thread timer reads")] += 1
    return _timers(self)
_w.PolicyWorker._timers = _counted_timers
import server.policy.ledger as _l
_now = getattr(_l.SqliteLedger, "commit_many_now", None)
def _counted_now(self, changes):
    done = _now(self, changes)
    if not done:
        _by[("handover", "loop writes left to the thread")] += 1
    return done
if _now is not None:
    _l.SqliteLedger.commit_many_now = _counted_now
def _dump(*_):
    with open(os.environ["GAMESDK_BENCH_SQL_COUNT"], "w") as f:
        f.write(str(_count[0]))
    with open(os.environ["GAMESDK_BENCH_SQL_COUNT"] + ".json", "w") as f:
        json.dump([[k[0], k[1], v] for k, v in _by.items()], f)
signal.signal(signal.SIGUSR1, _dump)
from server.cli import main
sys.exit(main(sys.argv[1:]))
"""


#: eu started with ``sys.setswitchinterval(GAMESDK_BENCH_SWITCH_INTERVAL)`` (``--switch-interval``).
SWITCH_INTERVAL_WRAPPER = """
import os, sys
sys.setswitchinterval(float(os.environ["GAMESDK_BENCH_SWITCH_INTERVAL"]))
from server.cli import main
sys.exit(main(sys.argv[1:]))
"""


def threads(pid: int) -> dict[int, tuple[str, float, int, int]]:
    """tid -> (name, CPU seconds, voluntary, involuntary context switches) of each thread of ``pid``."""
    out: dict[int, tuple[str, float, int, int]] = {}
    for tid_s in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{tid_s}"
        try:
            raw = Path(f"{base}/stat").read_text()
            status = Path(f"{base}/status").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / bs.CLK_TCK
        vol = invol = 0
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                vol = int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                invol = int(line.split()[1])
        out[int(tid_s)] = (name, cpu, vol, invol)
    return out


#: ``--syscalls``: eu's system calls per call, all of them (``raw_syscalls``) and those of the loop, the policy's
#: thread and SQLite by name (the load does not change these counts; ``syscalls:sys_enter_*`` is too many events
#: for perf to stop in time).
SYSCALL_NAMES = ("sendto", "sendmsg", "sendmmsg", "recvfrom", "recvmsg", "recvmmsg", "epoll_wait", "epoll_pwait",
                 "epoll_ctl", "ioctl", "read", "write", "pread64", "pwrite64", "fdatasync", "fsync", "lseek",
                 "fcntl", "openat", "close", "newfstatat", "getpid", "poll", "clock_gettime", "mmap", "munmap",
                 "brk", "madvise", "getrandom", "sched_yield", "rt_sigprocmask")
ALL_SYSCALLS = "raw_syscalls:sys_enter," + ",".join(f"syscalls:sys_enter_{name}" for name in SYSCALL_NAMES)
BASE_EVENTS = "syscalls:sys_enter_futex,context-switches,page-faults"


def start_perf(pid: int, out: Path, syscalls: bool = False) -> subprocess.Popen[bytes] | None:
    if shutil.which("perf") is None:
        return None
    events = BASE_EVENTS + ("," + ALL_SYSCALLS if syscalls else "")
    proc = subprocess.Popen(["perf", "stat", "-x", ",", "-o", str(out), "-e", events, "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)  # attached before the calls start
    return proc


def stop_perf(proc: subprocess.Popen[bytes] | None, out: Path) -> dict[str, float]:
    if proc is None:
        return {}
    proc.send_signal(signal.SIGINT)
    proc.wait(10)
    counts: dict[str, float] = {}
    for line in out.read_text().splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[0].strip().replace(".", "").isdigit():
            counts[parts[2]] = float(parts[0])
    return counts


def one_round(cfg: bs.Config, workdir: Path, *, calls: int, window: int, perf: bool, sql: bool,
              switch_interval: float | None = None, syscalls: bool = False) -> dict[str, Any]:
    workdir.mkdir(parents=True)
    sql_file = workdir / "sql.count"
    wrapper = None
    if switch_interval is not None:
        os.environ["GAMESDK_BENCH_SWITCH_INTERVAL"] = str(switch_interval)
        wrapper = SWITCH_INTERVAL_WRAPPER
    if sql:
        os.environ["GAMESDK_BENCH_SQL_COUNT"] = str(sql_file)
        wrapper = SQL_COUNT_WRAPPER
    saved = bs.POLICY_ON_LOOP_WRAPPER
    threaded = not cfg.policy_on_loop
    if wrapper is not None:
        if cfg.policy_on_loop:
            raise SystemExit("--sql or --switch-interval with --policy-on-loop is not supported")
        # start_ours starts eu with POLICY_ON_LOOP_WRAPPER when policy_on_loop: borrow that door for the counter.
        bs.POLICY_ON_LOOP_WRAPPER = wrapper
        cfg = dataclasses.replace(cfg, policy_on_loop=True)
    try:
        with bs.running_path(cfg, workdir) as (path, uas):
            bs.step(cfg, path, uas, workdir, "warmup", calls=200, rate=None, window=min(window, 64), time_cap_s=60)
            time.sleep(0.3)
            eu = dict(path.proxies)["eu"]

            def sql_now() -> int:
                if not sql:
                    return 0
                sql_file.unlink(missing_ok=True)
                os.kill(eu, signal.SIGUSR1)
                for _ in range(200):
                    if sql_file.exists() and sql_file.read_text():
                        return int(sql_file.read_text())
                    time.sleep(0.01)
                raise RuntimeError("eu did not write its SQLite count")

            sql0 = sql_now()
            by0 = _sql_by(sql_file) if sql else {}
            before = threads(eu)
            perf_proc = start_perf(eu, workdir / "perf.txt", syscalls) if perf else None
            row = bs.step(cfg, path, uas, workdir, "run", calls=calls, rate=None, window=window, time_cap_s=60)
            counts = stop_perf(perf_proc, workdir / "perf.txt")
            after = threads(eu)
            sql1 = sql_now()
            by1 = _sql_by(sql_file) if sql else {}
    finally:
        bs.POLICY_ON_LOOP_WRAPPER = saved
    ok = max(row["ok"], 1)
    loop = policy = other = 0.0
    vol = invol = 0
    # Python 3.11 gives its threads no OS name: the policy thread is the busiest thread besides the main one.
    deltas = []
    for tid, (name, cpu, v, i) in after.items():
        b = before.get(tid, (name, 0.0, 0, 0))
        deltas.append((tid, cpu - b[1], v - b[2], i - b[3]))
        vol += v - b[2]
        invol += i - b[3]
    side = sorted((d for d in deltas if d[0] != eu), key=lambda d: -d[1])
    for tid, cpu, _, _ in deltas:
        if tid == eu:
            loop += cpu
        elif side and tid == side[0][0] and threaded:
            policy += cpu
        else:
            other += cpu
    per_thread = {("loop" if d[0] == eu else "policy" if side and d[0] == side[0][0] and threaded
                   else f"t{d[0]}"): (d[2] / max(row["ok"], 1), d[3] / max(row["ok"], 1)) for d in deltas
                  if d[2] or d[3]}
    return {
        "ok": row["ok"], "calls_per_s": row["calls_per_s"], "eu_us": row["proxy_cpu_us_per_call"]["eu"],
        "loop_us": 1e6 * loop / ok, "policy_us": 1e6 * policy / ok, "other_us": 1e6 * other / ok,
        "vol": vol / ok, "invol": invol / ok,
        "futex": counts.get("syscalls:sys_enter_futex", float("nan")) / ok,
        "cs": counts.get("context-switches", float("nan")) / ok,
        "faults": counts.get("page-faults", float("nan")) / ok,
        "sql": ((sql1 - sql0) / ok) if sql else float("nan"),
        "switches_by_thread": per_thread,
        "sql_by": {k: (v - by0.get(k, 0)) / ok for k, v in by1.items() if v > by0.get(k, 0)},
        "syscalls": {name.split(":", 1)[1].replace("sys_enter_", ""): n / ok for name, n in counts.items()
                     if "sys_enter" in name and n > 0} if syscalls else {},
    }


def _sql_by(sql_file: Path) -> dict[tuple[str, str], int]:
    """(thread name, statement head) -> statements so far, from eu's last SIGUSR1 dump."""
    import json
    return {(t, head): n for t, head, n in json.loads(Path(str(sql_file) + ".json").read_text())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--config", choices=["ours1", "ours2"], action="append")
    ap.add_argument("--no-loop", action="store_true", help="leave out the --policy-on-loop configurations")
    ap.add_argument("--no-perf", action="store_true", help="no perf stat (futex and cs columns empty)")
    ap.add_argument("--switch-interval", type=float, action="append",
                    help="also run eu with sys.setswitchinterval(S) (repeatable; rounds alternate)")
    ap.add_argument("--sql", action="store_true", help="count SQLite statements (a separate, slower run)")
    ap.add_argument("--syscalls", action="store_true",
                    help="count every system call of eu per call (perf stat -e 'syscalls:sys_enter_*')")
    args = ap.parse_args(argv)
    if not bs.server_available():
        print("sipp or the server is missing", file=sys.stderr)
        return 2
    names = args.config or ["ours1", "ours2"]
    cfgs: list[tuple[bs.Config, float | None]] = []
    for name in names:
        hops = 1 if name == "ours1" else 2
        cfgs.append((bs.Config(name, "ours", hops), None))
        for interval in args.switch_interval or []:
            cfgs.append((bs.Config(f"{name}-si{interval * 1000:g}ms", "ours", hops), interval))
        if not args.no_loop and not args.sql:
            cfgs.append((bs.Config(name + "-loop", "ours", hops, policy_on_loop=True), None))
    print(f"# {time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}, "
          f"{args.calls} calls per round, closed loop (window {args.window})")
    print(f"{'config':16} {'calls/s':>8} {'eu us':>7} {'loop us':>8} {'policy us':>9} {'other us':>8} "
          f"{'futex':>6} {'cs':>5} {'vol':>5} {'invol':>5} {'sql':>5}")
    with tempfile.TemporaryDirectory(prefix="bench-handoff-") as tmp:
        for r in range(args.rounds):
            for cfg, interval in cfgs:
                row = one_round(cfg, Path(tmp) / f"{cfg.name}-{r}", calls=args.calls, window=args.window,
                                perf=not args.no_perf, sql=args.sql, switch_interval=interval,
                                syscalls=args.syscalls)
                print(f"{cfg.name:16} {row['calls_per_s']:8.0f} {row['eu_us']:7.0f} {row['loop_us']:8.0f} "
                      f"{row['policy_us']:9.0f} {row['other_us']:8.0f} {row['futex']:6.2f} {row['cs']:5.2f} "
                      f"{row['vol']:5.2f} {row['invol']:5.2f} {row['sql']:5.1f}", flush=True)
                print("    voluntary/involuntary switches per call: " + ", ".join(
                    f"{k} {v:.2f}/{i:.2f}" for k, (v, i) in row["switches_by_thread"].items()))
                print(f"    page faults per call: {row['faults']:.1f}")
                if row["syscalls"]:
                    print("    system calls per call: " + ", ".join(
                        f"{name} {n:.2f}" for name, n in sorted(row["syscalls"].items(), key=lambda kv: -kv[1])))
                for (thread, head), n in sorted(row["sql_by"].items(), key=lambda kv: -kv[1]):
                    print(f"    {n:6.2f} per call  {thread:16} {head}")
    print(f"# {time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
