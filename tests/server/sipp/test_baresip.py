"""baresip (Debian package, libre's SIP stack) against two real regions, next to the SIPp and sipsak tests:
each baresip registers to its own region, a call from eu to na is answered and hung up end to end, and a plain
audio call to an SDK player is refused cleanly with 488 and a Warning.

baresip 1.0 gives up on any challenge set that holds an algorithm it lacks ("Function not implemented" on
SHA-256), so these regions challenge with MD5 only (docs/server.md, "Standard tools").
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import gamesdk_sipp_harness as h  # registered by conftest.py
import pytest

from gamesdk import ClientConfig, GameClient

BARESIP = shutil.which("baresip")

pytestmark = [pytest.mark.skipif(BARESIP is None, reason="baresip is not installed (apt-get install baresip)"),
              pytest.mark.timeout(120)]

MD5_ONLY = {"auth": {"digest_algorithms": ["MD5"]}}


def _free_sip_port() -> int:
    """A port free for UDP and TCP, with the next one free for TCP too (baresip binds TLS there)."""
    for _ in range(50):
        port = h.free_udp_ports(1)[0]
        if port >= 65535:
            continue
        socks = []
        try:
            for kind, p in ((socket.SOCK_STREAM, port), (socket.SOCK_STREAM, port + 1), (socket.SOCK_DGRAM, port + 1)):
                sock = socket.socket(socket.AF_INET, kind)
                socks.append(sock)
                sock.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return port
    raise AssertionError("no free port pair for baresip")


class Baresip:
    """One baresip 1.0 with its own config folder on loopback, no sound device (a silent WAV file in, nothing
    out), answering calls at once. Stopped by its PID."""

    def __init__(self, workdir: Path, user: str, domain: str, password: str, region_port: int,
                 *commands: str) -> None:
        self.home = workdir / f"baresip-{user}"
        self.home.mkdir()
        silence = self.home / "silence.wav"
        with wave.open(str(silence), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(b"\0\0" * 8000 * 20)
        port = _free_sip_port()
        (self.home / "config").write_text("\n".join([
            "poll_method epoll", f"sip_listen 127.0.0.1:{port}", "sip_trans_def udp", "net_interface 127.0.0.1",
            f"audio_source aufile,{silence}", "audio_player aufile,/dev/null", "audio_alert aufile,/dev/null",
            "module_path /usr/lib/baresip/modules", "module g711.so", "module aufile.so",
            "module_app account.so", "module_app menu.so", ""]))
        (self.home / "accounts").write_text(
            f'<sip:{user}@{domain}>;auth_pass={password};outbound="sip:127.0.0.1:{region_port}";'
            "regint=600;answermode=auto\n")
        self.log_path = workdir / f"baresip-{user}.log"
        argv = [str(BARESIP), "-4", "-s", "-f", str(self.home), "-t", "60"]
        for command in commands:
            argv += ["-e", command]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout_s: float = 20.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            log = self.log()
            if text in log:
                return log
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in baresip's output:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        """Quit (baresip hangs up its calls and unregisters), then make sure it is gone."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def md5_regions(tmp_path: Path) -> Iterator[tuple[h.RegionServer, h.RegionServer]]:
    eu_port, na_port = h.free_udp_ports(2)
    eu = h.RegionServer(tmp_path, "eu", h.EU_DOMAIN, eu_port, [(h.NA_DOMAIN, na_port)], overrides=MD5_ONLY)
    na = h.RegionServer(tmp_path, "na", h.NA_DOMAIN, na_port, [(h.EU_DOMAIN, eu_port)], overrides=MD5_ONLY)
    eu.add_user("alice", "alice-pw")
    na.add_user("bob", "bob-pw")
    try:
        eu.start()
        na.start()
        yield eu, na
    finally:
        eu.stop()
        na.stop()


def test_baresip_registers_to_each_region_and_calls_across_regions(
        md5_regions: tuple[h.RegionServer, h.RegionServer], tmp_path: Path) -> None:
    eu, na = md5_regions
    bob = Baresip(tmp_path, "bob", h.NA_DOMAIN, "bob-pw", na.port)
    alice = None
    try:
        bob.wait_for("bob@na.gamesdk.test: {0/UDP/v4} 200 OK")
        # alice logs in to eu and dials bob at once (the INVITE gets its own 407 round).
        alice = Baresip(tmp_path, "alice", h.EU_DOMAIN, "alice-pw", eu.port, "/dial sip:bob@na.gamesdk.test")
        alice.wait_for("alice@eu.gamesdk.test: {0/UDP/v4} 200 OK")
        alice.wait_for("Call established: sip:bob@na.gamesdk.test")
        bob.wait_for("Call established: sip:alice@eu.gamesdk.test")
        alice.stop()  # hangs up: the BYE goes to bob's Contact directly
        log = bob.wait_for("session closed: Connection reset by peer")  # libre's words for "BYE received"
        bye = log[log.rindex("BYE sip:bob"):]
        assert bye.index("SIP/2.0 200 OK") > 0
    finally:
        if alice is not None:
            alice.stop()
        bob.stop()
    assert "session set up call-id=" in eu.log() and "session set up call-id=" in na.log()


def test_a_plain_audio_call_from_baresip_to_an_sdk_player_gets_488_with_a_warning(
        md5_regions: tuple[h.RegionServer, h.RegionServer], tmp_path: Path) -> None:
    eu, na = md5_regions

    async def scenario() -> str:
        bob = GameClient(ClientConfig(username="bob", password="bob-pw", domain=h.NA_DOMAIN,
                                      server=("127.0.0.1", na.port)))
        await bob.login()
        alice = Baresip(tmp_path, "alice", h.EU_DOMAIN, "alice-pw", eu.port, "/dial sip:bob@na.gamesdk.test")
        try:
            deadline = time.monotonic() + 20
            while "session closed: 488" not in alice.log():
                assert time.monotonic() < deadline and alice.proc.poll() is None, alice.log()[-4000:]
                await asyncio.sleep(0.05)
            return alice.log()
        finally:
            alice.stop()
            await bob.close()

    log = asyncio.run(asyncio.wait_for(scenario(), 60))
    refusal = log[log.index("SIP/2.0 488"):]
    refusal = refusal[:refusal.index("\r\n\r\n")] if "\r\n\r\n" in refusal else refusal[:2000]
    assert "Warning: 399 " in refusal or "Warning: 3" in refusal, refusal
    assert "Call established" not in log
