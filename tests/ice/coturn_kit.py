"""Start and stop a real coturn (``turnserver``) for a test: temp config, own PID file, stopped by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from gamesdk.ice import stun


#: Lines a test adds to what ``gamesdk-server relay-config`` prints: files in the test's folder, a small relay
#: port range, logs to a file.
def extra_lines(workdir: Path, min_port: int, max_port: int) -> str:
    return (f"pidfile={workdir / 'turnserver.pid'}\nuserdb={workdir / 'turndb'}\nlog-file={workdir / 'turn.log'}\n"
            f"simple-log\nmin-port={min_port}\nmax-port={max_port}\nno-software-attribute\nno-tcp\n")


def coturn_missing() -> str | None:
    return None if shutil.which("turnserver") else "needs coturn (turnserver; Debian package coturn)"


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A port free for UDP and TCP on ``host`` (coturn listens on both unless told no-tcp)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            udp.bind((host, 0))
            port: int = udp.getsockname()[1]
            try:
                tcp.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def stun_answers(address: tuple[str, int], make_socket: Callable[[], socket.socket]) -> bool:
    with make_socket() as sock:
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST, transaction_id=os.urandom(12))
        sock.settimeout(0.2)
        try:
            sock.sendto(bytes(request), address)
            data, _ = sock.recvfrom(2048)
        except OSError:
            return False
        return stun.parse_untrusted(data) is not None


def _udp_socket() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


@contextmanager
def running_coturn(conf: str, workdir: Path, address: tuple[str, int], *, netns: str | None = None,
                   make_socket: Callable[[], socket.socket] = _udp_socket,
                   inside: Callable[[], AbstractContextManager[object]] = nullcontext) -> Iterator[int]:
    """Run ``turnserver -c <conf>`` (in ``netns`` when given) until the block ends; yields its PID.

    Ready = it answers a STUN Binding request at ``address`` (``make_socket`` inside ``inside()`` makes the socket
    the probe is sent from, e.g. one in the namespace).
    """
    path = workdir / "turnserver.conf"
    path.write_text(conf)
    argv = ["turnserver", "-c", str(path)]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    log = open(workdir / "turnserver.out", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            with inside():
                ready = stun_answers(address, make_socket)
            if ready:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"coturn did not start: {(workdir / 'turnserver.out').read_text()[-2000:]}")
            time.sleep(0.05)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
