"""Helpers of the attack tests: spoofed datagrams, a victim that counts what reaches it, a player on a socket,
and a regional server process with fast transaction timers (T1 = 50 ms, so Timer G/H play out in about 3 s).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gamesdk_sipp_harness import RegionServer, free_udp_ports  # type: ignore[import-not-found]
from server_kit import OFFER, SocketUA

from gamesdk.address import Address

LOOP = "127.0.0.1"
EU = "eu.gamesdk.test"
NA = "na.gamesdk.test"
PASSWORDS = {"alice": "alice-pw-1", "dave": "dave-pw-2"}

__all__ = ["EU", "LOOP", "NA", "OFFER", "PASSWORDS", "Player", "Victim", "can_spoof", "region", "rss_kib",
           "spoof"]


def can_spoof() -> bool:
    """Raw IPv4 sockets need root (CAP_NET_RAW)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW).close()
    except PermissionError:
        return False
    return True


def spoof(src: Address, dst: Address, payload: bytes) -> None:
    """Send one UDP datagram that claims to come from ``src`` (IPv4 header built by hand; UDP checksum 0)."""
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), os.getpid() & 0xFFFF, 0, 64, socket.IPPROTO_UDP,
                         0, socket.inet_aton(src[0]), socket.inet_aton(dst[0]))
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(header + udp, (dst[0], 0))


class Victim:
    """A UDP socket on loopback that counts every datagram and byte sent to it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOP, 0))
        self.addr: Address = self.sock.getsockname()
        self.datagrams: list[bytes] = []

    def collect(self, quiet_s: float = 0.6, limit_s: float = 6.0) -> list[bytes]:
        """Everything that arrives until ``quiet_s`` passes without a datagram (at most ``limit_s``)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            self.sock.settimeout(quiet_s)
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                break
            self.datagrams.append(data)
        return self.datagrams

    @property
    def bytes(self) -> int:
        return sum(len(d) for d in self.datagrams)

    def close(self) -> None:
        self.sock.close()


class Player(SocketUA):
    """A socket player of eu. Its login returns a refusal instead of failing on it: the attacks expect some."""

    __test__ = False
    FINAL_TIMEOUT_S = 5.0
    SILENT_WAIT_S = 0.5
    CHALLENGE_REQUIRED = False

    def __init__(self, user: str, password: str, domain: str = EU) -> None:
        super().__init__(user, domain, password)


@contextmanager
def region(workdir: Path, *, overrides: Mapping[str, Mapping[str, Any]] | None = None,
           peer_port: int | None = None) -> Iterator[RegionServer]:
    """The eu region (alice and dave have accounts) as a real process, with na configured as its peer at
    ``peer_port`` (nobody listens there: tests forge na's datagrams)."""
    port, spare = free_udp_ports(2)
    merged: dict[str, dict[str, Any]] = {"timers": {"t1_s": 0.05}}
    for table, values in (overrides or {}).items():
        merged.setdefault(table, {}).update(values)
    server = RegionServer(workdir, "eu", EU, port, [(NA, peer_port or spare)], overrides=merged)
    for user, password in PASSWORDS.items():
        server.add_user(user, password)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")
