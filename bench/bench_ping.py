#!/usr/bin/env python3
"""Where the federation's transit round trip goes under load: the regions' OPTIONS pings, sample by sample.

Two regional servers (eu, na) as real processes on 127.0.0.1 ping each other every ``--interval`` seconds while a
SIPp caller sends calls through eu to a SIPp callee at na (``--rate`` calls/s) and, with ``--hogs N``, N CPU-bound
processes (``while True: pass``, at most 2, stopped by PID after at most 60 s) compete for the 2 cores.

Each eu ping is seen three ways:
- ``sample``: the round trip eu's federation table took (what the policy's latency budget reads, through the
  windowed minimum);
- ``wire``: from the OPTIONS to its answer as captured on the loopback interface (tcpdump): the peer's part, its
  queue and turnaround;
- ``local`` = sample - wire: eu's own part, from the moment it stamped the ping until it left, and from the
  answer's arrival until eu read and timed it (its queue behind other datagrams and timers).
``peer_delay`` is what na reported in the answer's ``Timestamp`` header (RFC 3261 section 8.2.6.1: the time the
request spent with it), when it reports one.

    python bench/bench_ping.py --rate 100 --hogs 2 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_server as bs

h = bs.h

#: Records every ping answer eu times (branch, the sample, na's reported delay) into a JSON-lines file.
RECORDING_WRAPPER = """
import json, sys, time
from server import federation
from server.cli import main
out = open(sys.argv[1], "a", buffering=1)
original = federation.FederationTable.handle_response
def handle_response(self, response, now, **kw):
    branch = response.top_via.branch
    sent = {b: t for p in self._by_domain.values() for b, t in p.pending.items()}.get(branch)
    taken = original(self, response, now, **kw)
    if taken and sent is not None:
        peer = next(iter(self._by_domain.values()))
        wall = time.time() - time.monotonic()  # the loops' clocks are CLOCK_MONOTONIC
        out.write(json.dumps({"branch": branch, "sample_ms": (peer.last_rtt_s or 0) * 1000,
                              "read_ms": (now - sent) * 1000,
                              "sent_wall": sent + wall, "timed_wall": now + wall,
                              "last_ms": (peer.last_rtt_s or 0) * 1000,
                              "min_ms": peer.min_rtt_ms, "timestamp": response.headers.get("Timestamp")}) + "\\n")
    return taken
federation.FederationTable.handle_response = handle_response
sys.exit(main(sys.argv[2:]))
"""


def start_hogs(stack: ExitStack, count: int, seconds: float) -> None:
    for _ in range(min(count, 2)):
        proc = subprocess.Popen([sys.executable, "-c", (f"import time\nend = time.monotonic() + {min(seconds, 60)}\n"
                                 "while time.monotonic() < end: pass")])
        stack.callback(_stop_pid, proc)


def _stop_pid(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    proc.wait(5)


def wire_times(pcap: Path, eu_port: int) -> dict[str, tuple[float, float]]:
    """branch -> (OPTIONS seen, its answer seen) for eu's pings, from the capture."""
    done = subprocess.run(["tshark", "-r", str(pcap), "-Y", "sip.CSeq.method == \"OPTIONS\"", "-T", "fields",
                           "-e", "frame.time_epoch", "-e", "udp.srcport", "-e", "sip.Method", "-e", "sip.Via.branch"],
                          capture_output=True, text=True, check=False, timeout=120)
    sent: dict[str, float] = {}
    answered: dict[str, float] = {}
    for line in done.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) < 4:
            continue
        stamp, sport, method, branch = float(parts[0]), int(parts[1]), parts[2], parts[3].split(",")[0]
        if method == "OPTIONS" and sport == eu_port:
            sent.setdefault(branch, stamp)
        elif not method and sport != eu_port:
            answered.setdefault(branch, stamp)
    return {b: (t, answered[b]) for b, t in sent.items() if b in answered}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def summary(name: str, values: list[float]) -> str:
    if not values:
        return f"{name:>11}: -"
    return (f"{name:>11}: n={len(values):3d} min {min(values):6.2f}  p50 {statistics.median(values):6.2f}  "
            f"p90 {pct(values, 0.9):6.2f}  max {max(values):6.2f} ms")


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    eu_port, na_port, uas_port, uac_port = h.free_udp_ports(4)
    overrides: dict[str, dict[str, Any]] = {
        "log": {"level": "WARNING"}, "federation": {"options_interval_s": args.interval},
        "limits": {"unauthenticated_per_s": 1_000_000.0, "unauthenticated_burst": 1_000_000},
        "runtime": {"event_loop": args.loop},
    }
    record = workdir / "pings.jsonl"
    pcap = workdir / "pings.pcap"
    with ExitStack() as stack:
        eu = h.RegionServer(workdir, "eu", bs.EU, eu_port, [(bs.NA, na_port)], overrides=overrides,
                            network_overrides=bs.UNLIMITED_NETWORK)
        na = h.RegionServer(workdir, "na", bs.NA, na_port, [(bs.EU, eu_port)], overrides=overrides,
                            network_overrides=bs.UNLIMITED_NETWORK)
        eu.add_user(bs.CALLER, bs.PASSWORD)
        na.add_user(bs.CALLEE, bs.PASSWORD)
        dump = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "-s", "0", "-w", str(pcap), "-B", "8192",
                                 (f"udp and ((src port {eu_port} and dst port {na_port}) or "
                                 f"(src port {na_port} and dst port {eu_port}))")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(_stop_pid, dump)
        time.sleep(1.0)
        na.start()
        stack.callback(na.stop)
        eu.start(python_args=["-c", RECORDING_WRAPPER, str(record)])
        stack.callback(eu.stop)
        uas = h.start_sipp(bs.SIPP_DIR / "callee_register.xml", na_port, workdir=workdir, tag="uas",
                           local_port=uas_port, keys={"user": bs.CALLEE, "domain": bs.NA, "contact_port": uas_port,
                                                      "expires": 3600},
                           auth=(bs.CALLEE, bs.PASSWORD), auth_uri=f"sip:{bs.NA}", timeout_s=600, trace=False,
                           extra=["-oocsf", str(bs.SIPP_DIR / "uas_bench.xml"), "-deadcall_wait", "5000",
                                  "-trace_logs", "-log_file", str(workdir / "uas.log")])
        stack.callback(uas.process.stop)
        h.wait_for_log(workdir / "uas.log", b"registered", timeout_s=15)
        start_hogs(stack, args.hogs, args.seconds + 5)
        calls = int(args.rate * args.seconds)
        argv = h.sipp_command(bs.SIPP_DIR / "uac_bench_auth.xml", eu_port, workdir=workdir, tag="uac",
                              local_port=uac_port, calls=calls, rate=args.rate, limit=4096,
                              keys={"user": bs.CALLER, "domain": bs.EU, "callee": bs.CALLEE, "callee_domain": bs.NA},
                              auth=(bs.CALLER, bs.PASSWORD), auth_uri=f"sip:{bs.CALLEE}@{bs.NA}",
                              timeout_s=args.seconds + 30, trace=False, stats=True,
                              extra=["-deadcall_wait", "5000"])
        load = os.getloadavg()[0]
        code, _ = bs.run_uac(argv, args.seconds + 40)
        load = max(load, os.getloadavg()[0])
        stats = h.read_stats(workdir / "uac.stats.csv")
    rows = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    wire = wire_times(pcap, eu_port)
    samples = [r["sample_ms"] for r in rows]
    wires, locals_, delays, send_lag, read_lag = [], [], [], [], []
    for r in rows:
        if r["branch"] in wire:
            sent, answered = wire[r["branch"]]
            wires.append((answered - sent) * 1000)
            locals_.append(r["read_ms"] - wires[-1])
            send_lag.append((sent - r["sent_wall"]) * 1000)
            read_lag.append((r["timed_wall"] - answered) * 1000)
        stamp = (r.get("timestamp") or "").split()
        if len(stamp) == 2:
            delays.append(float(stamp[1]) * 1000)
    return {"rate": args.rate, "hogs": args.hogs, "load": load, "ok": stats.get("SuccessfulCall(C)"),
            "failed": stats.get("FailedCall(C)"), "sipp_exit": code, "samples": samples, "wire": wires,
            "local": locals_, "send_lag": send_lag, "read_lag": read_lag, "peer_delay": delays, "policy_min_ms": rows[-1]["min_ms"] if rows else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="SIPp calls/s through eu to na")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the SIPp run (at most 55)")
    parser.add_argument("--interval", type=float, default=0.25, help="options_interval_s of both regions")
    parser.add_argument("--hogs", type=int, default=0, help="CPU-bound processes beside (at most 2)")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto", help="runtime.event_loop")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--workdir", type=Path, help="keep the run's files here (a fresh directory)")
    args = parser.parse_args()
    args.seconds = min(args.seconds, 55.0)
    for tool in ("sipp", "tcpdump", "tshark"):
        if shutil.which(tool) is None:
            print(f"{tool} is needed", file=sys.stderr)
            return 2
    if args.workdir is not None:
        args.workdir.mkdir(parents=True)
        result = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-ping-") as tmp:
            result = run(args, Path(tmp))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.loop} loop, rate {result['rate']:g} calls/s, {result['hogs']} hog(s), load average {result['load']:.2f}; "
          f"calls ok {result['ok']} failed {result['failed']}; policy's transit (windowed min) "
          f"{result['policy_min_ms']}")
    for name in ("samples", "wire", "local", "send_lag", "read_lag", "peer_delay"):
        print(summary(name, result[name]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
