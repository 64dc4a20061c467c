"""The ACK of the 2xx (and every later in-dialog request) never crosses a server's interface.

Both regional servers run in a network namespace this test makes, reachable only through one veth pair; a
packet sniffer on the namespace's side of the veth records every SIP datagram that reaches the servers. The
two players run outside, set up a session, exchange game data and hang up. The capture must show the
INVITEs, the 200s and the PUBLISHes, and no ACK for the 200 and no BYE (DESIGN section 2).

Needs root and iproute2 (CI runs as root); skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gamesdk import ClientConfig, GameClient
from gamesdk.events import MessageReceived, SessionEnded

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "server" / "sipp"))
import harness  # process helpers shared with the SIPp tests

TAG = f"g{os.getpid() % 100000}"
NS = f"gsdk-{TAG}"
HOST_IF, NS_IF = f"{TAG}a", f"{TAG}b"


def _free_subnet() -> int:
    """A /30 in 10.213.0.0/16 no interface on this machine uses (two runs at once must not share one)."""
    used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, timeout=10, check=True).stdout
    for offset in range(200):
        candidate = (os.getpid() + offset) % 200 + 20
        if f"10.213.{candidate}." not in used:
            return candidate
    raise RuntimeError("no free 10.213.x.0/30 for the test namespace")


@dataclass(frozen=True)
class Lab:
    """The namespace and the /30 between it and the test (never routed anywhere else)."""

    host_ip: str
    ns_ip: str

SNIFFER = r'''
import socket, struct, sys, time
iface, out_path, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
sock.bind((iface, 0))
sock.settimeout(0.2)
deadline = time.monotonic() + seconds
with open(out_path, "w", buffering=1) as out:
    out.write("READY\n")
    while time.monotonic() < deadline:
        try:
            frame = sock.recv(65535)
        except socket.timeout:
            continue
        if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
            continue
        ihl = (frame[14] & 0x0F) * 4
        payload = frame[14 + ihl + 8:]
        line = payload.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        if "SIP/2.0" in line:
            src = ".".join(str(b) for b in frame[26:30])
            dst = ".".join(str(b) for b in frame[30:34])
            out.write(f"{src}>{dst} {line}\n")
'''


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=10)


def _namespaces_usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    return None


@pytest.fixture
def lab() -> Iterator[Lab]:
    reason = _namespaces_usable()
    if reason:
        pytest.skip(reason)
    try:
        _run("ip", "netns", "add", NS)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"network namespaces unavailable here: {exc.stderr.decode().strip()}")
    subnet = _free_subnet()
    host_ip, ns_ip = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
    try:
        _run("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
        _run("ip", "link", "set", NS_IF, "netns", NS)
        _run("ip", "addr", "add", f"{host_ip}/30", "dev", HOST_IF)
        _run("ip", "link", "set", HOST_IF, "up")
        _run("ip", "netns", "exec", NS, "ip", "addr", "add", f"{ns_ip}/30", "dev", NS_IF)
        _run("ip", "netns", "exec", NS, "ip", "link", "set", NS_IF, "up")
        _run("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")
        yield Lab(host_ip=host_ip, ns_ip=ns_ip)
    finally:
        # best effort: deleting the veth end may already have taken the other one
        subprocess.run(["ip", "link", "del", HOST_IF], capture_output=True, timeout=10, check=False)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True, timeout=10, check=False)


def _start_server(lab: Lab, workdir: Path, name: str, domain: str, port: int,
                  peer: tuple[str, int]) -> subprocess.Popen[bytes]:
    network = {"name": f"{name}-lab", "prefixes": [f"{lab.host_ip}/32", "127.0.0.0/8"], "uplink_kbps": 100000,
               "downlink_kbps": 100000, "rtt_ms": 5, "jitter_ms": 1, "loss_ppm": 100, "max_sessions": 100}
    config = harness.region_config(name, domain, port, [peer], database=f"{name}.sqlite3")
    config["region"]["listen"] = f"udp:{lab.ns_ip}:{port}"
    config["peers"] = [{"domain": peer[0], "address": f"udp:{lab.ns_ip}:{peer[1]}"}]
    config["access_networks"] = [network]
    path = workdir / f"{name}.toml"
    path.write_text(harness.toml_dumps(config))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    user = "alice" if name == "eu" else "bob"
    subprocess.run([sys.executable, "-m", "server", "user", "add", user, "--password", f"{user}-pw", "--config",
                    str(path)], check=True, capture_output=True, timeout=30, env=env, cwd=workdir)
    log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process below
    return subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-m", "server", "run", "--config", str(path)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)


def test_ack_and_bye_never_reach_a_server(lab: Lab, tmp_path: Path) -> None:
    eu_port, na_port = 5060, 5062  # inside the namespace nothing else listens
    capture = tmp_path / "capture.txt"
    (tmp_path / "sniff.py").write_text(SNIFFER)
    sniffer = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, str(tmp_path / "sniff.py"), NS_IF,
                                str(capture), "40"])
    servers = [
        _start_server(lab, tmp_path, "eu", "eu.gamesdk.test", eu_port, ("na.gamesdk.test", na_port)),
        _start_server(lab, tmp_path, "na", "na.gamesdk.test", na_port, ("eu.gamesdk.test", eu_port)),
    ]
    try:
        deadline = time.monotonic() + 10
        while not (capture.exists() and capture.read_text().startswith("READY")) and time.monotonic() < deadline:
            time.sleep(0.05)
        asyncio.run(asyncio.wait_for(_play(lab, eu_port, na_port), 30))
        time.sleep(0.3)  # let the last datagrams reach the capture
    finally:
        for proc in servers + [sniffer]:
            proc.terminate()
        for proc in servers + [sniffer]:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    lines = capture.read_text().splitlines()[1:]
    seen = "\n".join(lines)
    assert f"{lab.host_ip}>{lab.ns_ip} INVITE sip:bob@na.gamesdk.test" in seen, seen
    assert f"{lab.ns_ip}>{lab.host_ip} SIP/2.0 200 OK" in seen, seen
    assert f"{lab.ns_ip}>{lab.host_ip} INVITE sip:bob@" in seen, seen  # na forwarded the INVITE to bob
    assert "PUBLISH sip:alice@eu.gamesdk.test" in seen and "PUBLISH sip:bob@na.gamesdk.test" in seen, seen
    # The only ACK that may cross is the hop-by-hop ACK of the proxy's 407, addressed to bob's AOR. The ACK of
    # the 200 goes to bob's Contact (sip:bob@<host ip>:port), and no BYE reaches the servers' side.
    acks = [line for line in lines if " ACK " in line]
    assert all(" ACK sip:bob@na.gamesdk.test " in line for line in acks), acks
    assert not [line for line in lines if " BYE " in line], lines


async def _play(lab: Lab, eu_port: int, na_port: int) -> None:
    alice = GameClient(ClientConfig(username="alice", password="alice-pw", domain="eu.gamesdk.test",
                                    server=(lab.ns_ip, eu_port)), bind=(lab.host_ip, 0))
    bob = GameClient(ClientConfig(username="bob", password="bob-pw", domain="na.gamesdk.test",
                                  server=(lab.ns_ip, na_port)), bind=(lab.host_ip, 0))
    for client in (alice, bob):
        for _ in range(50):  # the servers may still be starting
            try:
                await client.login(timeout_s=0.5)
                break
            except Exception:  # noqa: BLE001 - retried until the server answers
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the servers in the namespace never answered")

    async def answer() -> None:
        session = await (await bob.next_invite()).accept()
        while not isinstance(await session.next_event(), SessionEnded):
            pass

    callee = asyncio.create_task(answer())
    session = await alice.invite("bob@na.gamesdk.test")
    session.send(b"hello")
    await asyncio.sleep(0.2)
    await session.end("done")
    await callee
    await alice.close()
    await bob.close()
    _ = MessageReceived
