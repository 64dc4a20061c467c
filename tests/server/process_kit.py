"""A region as a real ``gamesdk-server run`` process on a free loopback port, for the operations tests."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from server_kit import EXAMPLES

from gamesdk.address import Address
from server.cli import main

REPO = Path(__file__).resolve().parents[2]


def free_udp_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def write_region(tmp: Path, *, port: int | None = None, name: str = "eu", extra: str = "") -> Path:
    """The example region file in ``tmp`` on a free port, database beside it, the peer on a dead port."""
    text = (EXAMPLES / f"{name}.toml").read_text()
    port = port or free_udp_port()
    # The dead peer's port must not be the region's own: two free ports asked in turn can be the same one, and
    # the configuration then says "is this server itself" (user add exited 2 once under load).
    peer = free_udp_port()
    while peer == port:
        peer = free_udp_port()
    text = text.replace("udp:127.0.0.1:5060", f"udp:127.0.0.1:{port}").replace("udp:127.0.0.1:5062",
                                                                             f"udp:127.0.0.1:{peer}")
    text = text.replace('digest_algorithms = ["SHA-256"]', 'digest_algorithms = ["MD5", "SHA-256"]')
    path = tmp / f"{name}.toml"
    path.write_text(text + extra)
    return path


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdin=io.StringIO(""), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def listen_of(path: Path) -> Address:
    for line in path.read_text().splitlines():
        if line.startswith("listen = \"udp:"):
            host, port = line.split('"')[1][4:].rsplit(":", 1)
            return host.strip("[]"), int(port)
    raise AssertionError("no listen line")


class RegionProcess:
    """``python -m server run --config FILE`` with its stderr in a file; stopped by PID."""

    def __init__(self, config: Path, *args: str) -> None:
        self.config = config
        self.log_path = config.with_suffix(f".{time.monotonic_ns()}.log")
        self._log = self.log_path.open("wb")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen([sys.executable, "-m", "server", "run", "--config", str(config), *args],
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=str(REPO), env=env)
        self.address = listen_of(config)
        self.wait_ready()

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        """Poll with OPTIONS until the server answers (bounded)."""
        def alive() -> None:
            assert self.proc.poll() is None, f"server exited early:\n{self.log()}"

        if not wait_answers(self.address, timeout_s, alive):
            raise AssertionError(f"server did not answer:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout_s: float = 10.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            log = self.log()
            if text in log:
                return log
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not logged:\n{self.log()}")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        self._log.close()
        return code


def wait_answers(address: Address, timeout_s: float, alive: Callable[[], None] = lambda: None) -> bool:
    """Poll ``address`` with OPTIONS until a SIP server answers (True) or ``timeout_s`` passes (False);
    ``alive()`` runs before each try (it raises when the server is gone)."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        deadline = time.monotonic() + timeout_s
        n = 0
        while time.monotonic() < deadline:
            alive()
            n += 1
            sock.sendto(options(address, f"ready-{n}", sock.getsockname()), address)
            try:
                sock.recvfrom(65535)
                return True
            except OSError:
                continue
    return False


def options(server: Address, call_id: str, local: Address) -> bytes:
    host = f"[{server[0]}]" if ":" in server[0] else server[0]
    lhost = f"[{local[0]}]" if ":" in local[0] else local[0]
    return (f"OPTIONS sip:{host}:{server[1]} SIP/2.0\r\nVia: SIP/2.0/UDP {lhost}:{local[1]};branch=z9hG4bK{call_id};"
            f"rport\r\nMax-Forwards: 70\r\nFrom: <sip:ping@{lhost}>;tag=t{call_id}\r\nTo: <sip:{host}:{server[1]}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
