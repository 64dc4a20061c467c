"""A NAT lab in network namespaces, built and removed by the test (root, iproute2, nftables).

```
 home1 192.168.1.2 -- nat1 [masquerade] 198.51.100.2 --\\                       /-- 198.51.100.6 [masquerade] nat2 -- home2 192.168.2.2
                                                        pub (router; 203.0.113.10 on lo: both regions + coturn)
```

Sockets are made in a namespace by switching the calling thread into it (``setns``) for the moment of the call:
``with lab.inside("home1"): client = PollingClient(...)``. Threads started inside inherit the namespace.
Names carry the test's PID and a counter, so two runs never collide; everything goes in ``close()``.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_counter = itertools.count()

PUBLIC_SERVICE_IP = "203.0.113.10"
NAT_OUTSIDE = {"nat1": ("198.51.100.1", "198.51.100.2"), "nat2": ("198.51.100.5", "198.51.100.6")}
HOME_IP = {"home1": ("192.168.1.1", "192.168.1.2"), "home2": ("192.168.2.1", "192.168.2.2")}


def lab_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root to build network namespaces"
    for tool in ("ip", "nft", "conntrack"):
        if shutil.which(tool) is None:
            return f"needs {tool} (iproute2, nftables, conntrack)"
    return None


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class NatLab:
    tag: str = field(default_factory=lambda: f"{os.getpid() % 100000}x{next(_counter)}")
    names: dict[str, str] = field(default_factory=dict)

    def ns(self, role: str) -> str:
        return self.names[role]

    def exec(self, role: str, *argv: str) -> str:
        return _run("ip", "netns", "exec", self.ns(role), *argv)

    def build(self, *, symmetric: tuple[str, ...] = ()) -> None:
        for role in ("pub", "nat1", "nat2", "home1", "home2"):
            name = f"gl{self.tag}{role}"
            _run("ip", "netns", "add", name)
            self.names[role] = name
            self.exec(role, "ip", "link", "set", "lo", "up")
        self.exec("pub", "ip", "addr", "add", f"{PUBLIC_SERVICE_IP}/32", "dev", "lo")
        self.exec("pub", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for i, nat in enumerate(("nat1", "nat2"), start=1):
            home = f"home{i}"
            pub_ip, out_ip = NAT_OUTSIDE[nat]
            gw_ip, home_ip = HOME_IP[home]
            a, b = f"g{self.tag}p{i}", f"g{self.tag}o{i}"  # pub side, nat outside
            c, d = f"g{self.tag}i{i}", f"g{self.tag}h{i}"  # nat inside, home
            _run("ip", "link", "add", a, "netns", self.ns("pub"), "type", "veth", "peer", "name", b, "netns",
                 self.ns(nat))
            _run("ip", "link", "add", c, "netns", self.ns(nat), "type", "veth", "peer", "name", d, "netns",
                 self.ns(home))
            self.exec("pub", "ip", "addr", "add", f"{pub_ip}/30", "dev", a)
            self.exec("pub", "ip", "link", "set", a, "up")
            self.exec(nat, "ip", "addr", "add", f"{out_ip}/30", "dev", b)
            self.exec(nat, "ip", "addr", "add", f"{gw_ip}/24", "dev", c)
            self.exec(nat, "ip", "link", "set", b, "up")
            self.exec(nat, "ip", "link", "set", c, "up")
            self.exec(nat, "ip", "route", "add", "default", "via", pub_ip)
            self.exec(nat, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            self.exec(home, "ip", "addr", "add", f"{home_ip}/24", "dev", d)
            self.exec(home, "ip", "link", "set", d, "up")
            self.exec(home, "ip", "route", "add", "default", "via", gw_ip)
            mode = " fully-random" if nat in symmetric else ""
            # masquerade = endpoint-independent mapping (port-restricted cone); fully-random = symmetric.
            # Unsolicited input from outside is dropped, else its conntrack entry would make masquerade pick
            # another port (research/round2.md).
            ruleset = (
                "table ip lab {\n"
                f"  chain outnat {{ type nat hook postrouting priority srcnat; oifname \"{b}\" masquerade{mode}; }}\n"
                "  chain passing { type filter hook forward priority filter; policy accept;\n"
                f"    iifname \"{b}\" ct state established,related accept; iifname \"{b}\" drop; }}\n"
                "  chain arriving { type filter hook input priority filter; policy accept;\n"
                f"    iifname \"{b}\" ct state established,related accept; iifname \"{b}\" drop; }}\n"
                "}\n")
            subprocess.run(["ip", "netns", "exec", self.ns(nat), "nft", "-f", "-"], input=ruleset, text=True,
                           check=True, capture_output=True, timeout=20)

    def close(self) -> None:
        for name in self.names.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20, check=False)
        self.names.clear()

    @contextmanager
    def inside(self, role: str) -> Iterator[None]:
        """Run the block with this thread in the namespace (sockets made there stay there)."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/var/run/netns/{self.ns(role)}", os.O_RDONLY)
        try:
            if _libc.setns(target, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns failed")
            try:
                yield
            finally:
                if _libc.setns(own, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back failed")
        finally:
            os.close(own)
            os.close(target)


def read_pcap(path: str) -> list[tuple[str, int, str, int, bytes]]:
    """UDP/IPv4 datagrams of a ``tcpdump -i any`` capture: (src, sport, dst, dport, payload)."""
    data = open(path, "rb").read()  # noqa: SIM115 - small file
    if len(data) < 24:
        return []
    magic, = struct.unpack_from("<I", data)
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype, = struct.unpack_from(endian + "I", data, 20)
    link_len = {113: 16, 276: 20, 1: 14, 101: 0}.get(linktype & 0xFFFF, 16)
    out = []
    pos = 24
    while pos + 16 <= len(data):
        _, _, caplen, _ = struct.unpack_from(endian + "IIII", data, pos)
        frame = data[pos + 16: pos + 16 + caplen]
        pos += 16 + caplen
        ip = frame[link_len:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        src = ".".join(map(str, ip[12:16]))
        dst = ".".join(map(str, ip[16:20]))
        sport, dport = struct.unpack_from("!HH", ip, ihl)
        out.append((src, sport, dst, dport, ip[ihl + 8:]))
    return out
