"""Start regional servers, SIPp and Kamailio on 127.0.0.1 for the interop tests and ``bench/bench_server.py``.

Everything here runs real processes on loopback: ``python -m server run`` with a temp config and SQLite
database, SIPp (Debian ``sip-tester``) with our scenario files, Kamailio as a reference proxy. Every process
is bounded in time and stopped by the PID this module started, never by name.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "EU_DOMAIN",
    "LOOPBACK",
    "NA_DOMAIN",
    "REPO",
    "SCENARIOS",
    "USERS",
    "Federation",
    "LoggedMessage",
    "ManagedProcess",
    "RegionServer",
    "SippResult",
    "free_udp_ports",
    "parse_message_log",
    "region_config",
    "run_sipp",
    "sip_request",
    "sipp_command",
    "start_sipp",
    "toml_dumps",
    "udp_exchange",
    "udp_send",
    "wait_for_log",
    "wait_udp_bound",
]

LOOPBACK = "127.0.0.1"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"


# --- ports -------------------------------------------------------------------------------------------


def free_udp_ports(count: int) -> list[int]:
    """``count`` distinct UDP ports that were free on 127.0.0.1 a moment ago (held open together, then closed)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _udp_port_bound(port: int) -> bool:
    """Whether some process holds 127.0.0.1:port (UDP), read from /proc/net/udp (no probe packet sent)."""
    want = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/udp", encoding="ascii") as f:
            return any(line.split()[1] == want for line in f.readlines()[1:])
    except OSError:
        return False


def wait_udp_bound(port: int, proc: subprocess.Popen[bytes] | None = None, timeout_s: float = 10.0) -> None:
    """Wait until a process has bound ``port`` (e.g. a SIPp UAS started in the background)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _udp_port_bound(port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} before binding UDP port {port}")
        time.sleep(0.02)
    raise TimeoutError(f"nothing bound UDP 127.0.0.1:{port} within {timeout_s} s")


# --- processes ---------------------------------------------------------------------------------------


class ManagedProcess:
    """A child process with its output in a log file; stopped by its own PID only."""

    def __init__(self, argv: Sequence[str], log_path: Path, *, cwd: Path | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=cwd, env=dict(env) if env is not None else None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout_s: float) -> int:
        """Wait for a normal exit; on timeout the process is stopped and TimeoutError raised."""
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise TimeoutError(f"{self.argv[0]} (pid {self.pid}) still running after {timeout_s} s") from None

    def stop(self, sig: int = signal.SIGTERM, grace_s: float = 5.0) -> int:
        """Send ``sig`` to our PID, wait ``grace_s``, then SIGKILL. Returns the exit status."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")


# --- tiny TOML writer (tomllib only reads) -------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def toml_dumps(data: Mapping[str, Any]) -> str:
    """Write a config mapping (scalars, lists, tables, arrays of tables one level deep) as TOML."""
    lines: list[str] = []
    scalars = {k: v for k, v in data.items() if not isinstance(v, Mapping) and not _is_table_array(v)}
    for key, value in scalars.items():
        lines.append(f"{key} = {_toml_value(value)}")
    for key, value in data.items():
        if isinstance(value, Mapping):
            lines.append(f"\n[{key}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in value.items())
        elif _is_table_array(value):
            for item in value:
                lines.append(f"\n[[{key}]]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in item.items())
    return "\n".join(lines) + "\n"


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


# --- regional servers --------------------------------------------------------------------------------


_FALLBACK_NETWORK = {
    "name": "loopback", "prefixes": ["127.0.0.0/8"], "uplink_kbps": 100000, "downlink_kbps": 100000,
    "rtt_ms": 5, "jitter_ms": 1, "loss_ppm": 100, "max_sessions": 100000,
}


def region_config(name: str, domain: str, port: int, peers: Iterable[tuple[str, int]], *,
                  database: str, overrides: Mapping[str, Mapping[str, Any]] | None = None,
                  network_overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A region's config: ``examples/<name>.toml`` if it exists (so tests follow the shipped examples), moved to
    ``port``, with ``peers`` as (domain, port) on loopback, MD5 listed first for SIPp (DESIGN section 2),
    ``overrides`` merged into its tables (``{"auth": {...}}``) and ``network_overrides`` into every
    ``[[access_networks]]`` entry (the benchmark lifts session and bandwidth limits)."""
    example = EXAMPLES / f"{name}.toml"
    data: dict[str, Any] = tomllib.loads(example.read_text()) if example.exists() else {}
    data.setdefault("region", {})
    data["region"].update(name=name, domain=domain, listen=f"udp:{LOOPBACK}:{port}", database=database)
    data["peers"] = [{"domain": d, "address": f"udp:{LOOPBACK}:{p}"} for d, p in peers]
    if not data.get("access_networks"):
        data["access_networks"] = [dict(_FALLBACK_NETWORK, name=f"{name}-loopback")]
    auth = dict(data.get("auth", {}))
    auth["digest_algorithms"] = ["MD5", "SHA-256"]
    data["auth"] = auth
    data["access_networks"] = [dict(net, **(network_overrides or {})) for net in data["access_networks"]]
    for table, values in (overrides or {}).items():
        merged = dict(data.get(table, {}))
        merged.update(values)
        data[table] = merged
    return data


def server_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "server", *args]


def _server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


class RegionServer:
    """One ``python -m server run --config FILE`` process with its own temp config and database."""

    def __init__(self, workdir: Path, name: str, domain: str, port: int, peers: Iterable[tuple[str, int]] = (),
                 overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 network_overrides: Mapping[str, Any] | None = None) -> None:
        self.workdir = workdir
        self.name = name
        self.domain = domain
        self.port = port
        self.config_path = workdir / f"{name}.toml"
        self.config = region_config(name, domain, port, peers, database=f"{name}.sqlite3", overrides=overrides,
                                    network_overrides=network_overrides)
        self.config_path.write_text(toml_dumps(self.config))
        self.process: ManagedProcess | None = None

    def cli(self, *args: str, stdin: str | None = None, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a ``python -m server`` subcommand against this region's config."""
        return subprocess.run(server_command(*args, "--config", str(self.config_path)), input=stdin,
                              capture_output=True, text=True, timeout=timeout_s, cwd=self.workdir,
                              env=_server_env(), check=False)

    def add_user(self, user: str, password: str) -> None:
        done = self.cli("user", "add", user, "--password", password)
        if done.returncode != 0:
            raise RuntimeError(f"user add {user} failed ({done.returncode}): {done.stdout}{done.stderr}")

    def start(self, *extra: str, ready_timeout_s: float = 15.0, python_args: Sequence[str] = ()) -> None:
        """Start ``python [python_args] -m server run --config FILE`` and wait until it answers OPTIONS.
        ``python_args`` replaces ``-m server`` with e.g. a profiling wrapper (``-c CODE ...``)."""
        if python_args:
            argv = [sys.executable, *python_args, "run", "--config", str(self.config_path), *extra]
        else:
            argv = server_command("run", "--config", str(self.config_path), *extra)
        self.process = ManagedProcess(argv, self.workdir / f"{self.name}-server.log", cwd=self.workdir,
                                      env=_server_env())
        self.wait_ready(ready_timeout_s)

    def wait_ready(self, timeout_s: float) -> None:
        """Ready = answers an OPTIONS (any response) on its port."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.process.running():
                raise RuntimeError(f"server {self.name} exited ({self.process.proc.returncode}):\n"
                                   + self.process.output()[-3000:])
            reply = udp_exchange(self.port, sip_request("OPTIONS", f"sip:{self.domain}"), timeout_s=0.3)
            if reply:
                return
        raise TimeoutError(f"server {self.name} did not answer OPTIONS within {timeout_s} s:\n"
                           + self.process.output()[-3000:])

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> int:
        return self.process.stop(signal.SIGTERM) if self.process else 0

    def log(self) -> str:
        return self.process.output() if self.process else ""


EU_DOMAIN = "eu.gamesdk.test"
NA_DOMAIN = "na.gamesdk.test"
#: Accounts created with ``python -m server user add`` before the servers start.
USERS = {"alice": ("eu", "alice-secret-1"), "bob": ("na", "bob-secret-2"), "carol": ("na", "carol-secret-3")}


class Federation:
    """Two regional servers that federate with each other, with alice on eu and bob, carol on na."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        eu_port, na_port = free_udp_ports(2)
        self.eu = RegionServer(workdir, "eu", EU_DOMAIN, eu_port, [(NA_DOMAIN, na_port)])
        self.na = RegionServer(workdir, "na", NA_DOMAIN, na_port, [(EU_DOMAIN, eu_port)])
        for user, (region, password) in USERS.items():
            (self.eu if region == "eu" else self.na).add_user(user, password)

    def start(self) -> None:
        self.eu.start()
        self.na.start()

    def stop(self) -> None:
        self.eu.stop()
        self.na.stop()

    def region(self, name: str) -> RegionServer:
        return self.eu if name == "eu" else self.na


# --- raw SIP over UDP ---------------------------------------------------------------------------------


def sip_request(method: str, uri: str, *, from_user: str = "probe", domain: str = "gamesdk.test",
                extra_headers: Sequence[str] = (), body: bytes = b"", max_forwards: int = 70,
                call_id: str | None = None, local_port: int = 0) -> bytes:
    """A well-formed request (RFC 3261 section 8.1.1) for probes and raw tests."""
    cid = call_id or os.urandom(8).hex()
    branch = "z9hG4bK" + os.urandom(6).hex()
    head = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {LOOPBACK}:{local_port or 9};branch={branch};rport",
        f"Max-Forwards: {max_forwards}",
        f"From: <sip:{from_user}@{domain}>;tag={os.urandom(4).hex()}",
        f"To: <{uri}>",
        f"Call-ID: {cid}",
        f"CSeq: 1 {method}",
        *extra_headers,
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def udp_send(port: int, data: bytes) -> None:
    """Send one datagram to 127.0.0.1:port, expecting no answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, (LOOPBACK, port))


def wait_for_log(path: Path, needle: bytes, timeout_s: float = 10.0) -> None:
    """Wait until ``needle`` appears in a log file another process is writing."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if needle in path.read_bytes():
                return
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"{needle!r} did not appear in {path} within {timeout_s} s")


def udp_exchange(port: int, data: bytes, *, timeout_s: float = 2.0, want_final: bool = True) -> bytes | None:
    """Send one datagram to 127.0.0.1:port and return the first reply (the first final one if ``want_final``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        s.settimeout(timeout_s)
        try:
            s.sendto(data, (LOOPBACK, port))
        except OSError:
            return None
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            s.settimeout(left)
            try:
                reply, _ = s.recvfrom(65535)
            except (TimeoutError, ConnectionRefusedError, OSError):
                return None
            if not want_final or not re.match(rb"SIP/2\.0 1\d\d ", reply):
                return reply


# --- SIPp ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class LoggedMessage:
    """One message from a SIPp ``-trace_msg`` log."""

    sent: bool
    data: bytes

    @property
    def start_line(self) -> str:
        return self.data.split(b"\r\n", 1)[0].decode(errors="replace")

    @property
    def head(self) -> str:
        return self.data.split(b"\r\n\r\n", 1)[0].decode(errors="replace")

    @property
    def body(self) -> bytes:
        parts = self.data.split(b"\r\n\r\n", 1)
        return parts[1] if len(parts) == 2 else b""

    @property
    def status(self) -> int | None:
        m = re.match(r"SIP/2\.0 (\d{3}) ", self.start_line)
        return int(m.group(1)) if m else None

    @property
    def method(self) -> str | None:
        return None if self.start_line.startswith("SIP/2.0") else self.start_line.split(" ", 1)[0]

    def header(self, name: str) -> list[str]:
        """Values of every ``name`` header line (case-insensitive; compact forms, RFC 3261 section 7.3.3, too)."""
        names = {name.lower(), _COMPACT.get(name.lower(), name.lower())}
        out = []
        for line in self.head.split("\r\n")[1:]:
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() in names:
                out.append(value.strip())
        return out

    def header_values(self, name: str) -> list[str]:
        """Like :meth:`header`, with comma-joined values split (Via, Record-Route, Contact)."""
        return [v.strip() for line in self.header(name) for v in line.split(",") if v.strip()]


_COMPACT = {"via": "v", "from": "f", "to": "t", "call-id": "i", "contact": "m", "content-length": "l",
            "content-type": "c", "subject": "s", "supported": "k"}


# "UDP message sent (853 bytes):" and "UDP message received [476] bytes :"
_LOG_ENTRY = re.compile(rb"-{20,} [0-9-]+ [0-9:.]+\n(?:UDP|TCP) message (sent|received) [\[(](\d+)[^\n]*\n\n")


def parse_message_log(raw: bytes) -> list[LoggedMessage]:
    """Split a SIPp message log into messages, each cut to the byte length SIPp recorded (CRLFs kept)."""
    out = []
    for m in _LOG_ENTRY.finditer(raw):
        length = int(m.group(2))
        out.append(LoggedMessage(sent=m.group(1) == b"sent", data=raw[m.end():m.end() + length]))
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class SippResult:
    """What one SIPp run left behind."""

    returncode: int
    messages: list[LoggedMessage]
    errors: str
    screen: str
    stats: dict[str, str]

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def received(self) -> list[LoggedMessage]:
        return [m for m in self.messages if not m.sent]

    def sent(self) -> list[LoggedMessage]:
        return [m for m in self.messages if m.sent]

    def statuses(self) -> list[int]:
        return [m.status for m in self.received() if m.status is not None]

    def explain(self) -> str:
        tail = "\n".join(m.start_line for m in self.messages)
        return f"sipp exit {self.returncode}\nerrors:\n{self.errors[-3000:]}\nmessages:\n{tail}\n" \
               f"screen:\n{self.screen[-2000:]}"


def sipp_binary() -> str | None:
    return shutil.which("sipp")


def sipp_command(scenario: Path, target_port: int | None, *, workdir: Path, tag: str, local_port: int = 0,
                 keys: Mapping[str, str | int] | None = None, auth: tuple[str, str] | None = None,
                 auth_uri: str | None = None, calls: int = 1, rate: float | None = None,
                 limit: int | None = None, timeout_s: float = 20.0, trace: bool = True,
                 stats: bool = False, extra: Sequence[str] = ()) -> list[str]:
    """The SIPp command line for one bounded run (``-m calls``, ``-timeout``, ``-recv_timeout``)."""
    argv = [sipp_binary() or "sipp", "-sf", str(scenario), "-i", LOOPBACK, "-nostdin", "-m", str(calls),
            "-timeout", f"{timeout_s:g}s", "-timeout_error", "-recv_timeout", "10000", "-max_recv_loops", "10000",
            # SIPp's default 64 KiB socket buffers drop datagrams in a burst of 64 calls (RcvbufErrors in
            # /proc/net/snmp), and each drop costs a 500 ms retransmission; the kernel caps this at rmem_max.
            "-buff_size", "1048576"]
    # Always an explicit port: without -p SIPp binds 5060, which another server on the box may hold.
    argv += ["-p", str(local_port or free_udp_ports(1)[0])]
    if rate is not None:
        argv += ["-r", f"{rate:g}"]
    if limit is not None:
        argv += ["-l", str(limit)]
    for key, value in (keys or {}).items():
        argv += ["-key", key, str(value)]
    if auth is not None:
        argv += ["-au", auth[0], "-ap", auth[1]]
    if auth_uri is not None:
        # SIPp prepends "sip:" itself; by default it would sign "sip:<remote ip:port>", not the Request-URI.
        argv += ["-auth_uri", auth_uri.removeprefix("sip:")]
    if trace:
        argv += ["-trace_msg", "-message_file", str(workdir / f"{tag}.messages.log"),
                 "-trace_err", "-error_file", str(workdir / f"{tag}.errors.log")]
    if stats:
        argv += ["-trace_stat", "-stf", str(workdir / f"{tag}.stats.csv"), "-fd", "1"]
    argv += list(extra)
    if target_port is not None:
        argv.append(f"{LOOPBACK}:{target_port}")
    return argv


class SippProcess:
    """A SIPp run in the background (a UAS waiting for calls)."""

    def __init__(self, argv: list[str], workdir: Path, tag: str) -> None:
        self.workdir = workdir
        self.tag = tag
        self.process = ManagedProcess(argv, workdir / f"{tag}.screen.log", cwd=workdir)

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait(self, timeout_s: float) -> SippResult:
        try:
            code = self.process.wait(timeout_s)
        except TimeoutError:
            code = -1
        self.process.stop()
        return _collect(code, self.workdir, self.tag)

    def stop(self) -> SippResult:
        code = self.process.stop(signal.SIGTERM, grace_s=3.0)
        return _collect(code, self.workdir, self.tag)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def read_stats(path: Path) -> dict[str, str]:
    """The last row of a SIPp ``-trace_stat`` CSV as a dict (cumulative counters end in ``(C)``)."""
    lines = [line for line in _read(path).decode(errors="replace").splitlines() if line.strip()]
    if len(lines) < 2:
        return {}
    names = lines[0].rstrip(";").split(";")
    values = lines[-1].rstrip(";").split(";")
    return dict(zip(names, values))


def _collect(code: int, workdir: Path, tag: str) -> SippResult:
    return SippResult(
        returncode=code,
        messages=parse_message_log(_read(workdir / f"{tag}.messages.log")),
        errors=_read(workdir / f"{tag}.errors.log").decode(errors="replace"),
        screen=_read(workdir / f"{tag}.screen.log").decode(errors="replace"),
        stats=read_stats(workdir / f"{tag}.stats.csv"),
    )


def start_sipp(scenario: Path, target_port: int | None, *, workdir: Path, tag: str, local_port: int,
               wait_bound: bool = True, **kwargs: Any) -> SippProcess:
    """Start SIPp in the background; with ``wait_bound`` return once it has bound ``local_port``."""
    proc = SippProcess(sipp_command(scenario, target_port, workdir=workdir, tag=tag, local_port=local_port,
                                    **kwargs), workdir, tag)
    if wait_bound:
        wait_udp_bound(local_port, proc.process.proc)
    return proc


def run_sipp(scenario: Path, target_port: int | None, *, workdir: Path, tag: str, timeout_s: float = 20.0,
             **kwargs: Any) -> SippResult:
    """Run SIPp to completion (bounded by ``-timeout`` and a wall-clock cap) and collect its logs."""
    argv = sipp_command(scenario, target_port, workdir=workdir, tag=tag, timeout_s=timeout_s, **kwargs)
    proc = SippProcess(argv, workdir, tag)
    return proc.wait(timeout_s + 10.0)
