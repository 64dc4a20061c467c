"""demo_game/local: the one-command demo. Two regional servers embedded on free loopback ports, two players.

``python -m demo_game --local`` starts region eu (``eu.gamesdk.test``) and region na (``na.gamesdk.test``), each
with its policy server and a temporary SQLite database, creates the accounts, logs alice in to eu and bob in
to na, and alice invites bob: negotiation, a reservation in each region, the direct ACK, then the game over the
encrypted channel. At the end it prints the billing records both regions wrote.

Players log in over TLS (certificates made on the fly in the temporary folder) and the regions sign identities
that bind the channel keys; ``--no-tls`` uses plain UDP between players and regions.

``--access-kbps N`` shrinks alice's access network to N kbit/s and ``--latency-ms 1`` asks for a round trip no
network can give: both show a policy refusal (580 with the reason).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import gamesdk
import gamesdk.testing
from demo_game.net import GamesdkLink, invite_request_from_args
from server.certs import make_test_pki
from server.config import ServerConfig
from server.io import EmbeddedServer
from server.policy.cli_support import billing_list_text, billing_rows

__all__ = ["LocalSession", "region_mapping", "setup_local_session"]

PASSWORDS = {"alice": "alice-demo-pw", "bob": "bob-demo-pw", "op": "op-demo-pw"}


def region_mapping(name: str, peer: str, *, access_kbps: int | None = None, pki: Path | None = None) -> dict[str, Any]:
    """The demo's region config: one loopback access network, classes and a tariff (see examples/*.toml); with
    ``pki`` (certificates made by :func:`server.certs.make_test_pki`) it also listens on TLS and signs identities."""
    uplink = access_kbps if access_kbps is not None else 100_000
    domain = f"{name}.gamesdk.test"
    tls: dict[str, Any] = {}
    listen: str | list[str] = "udp:127.0.0.1:0"
    if pki is not None:
        listen = ["udp:127.0.0.1:0", "tls:127.0.0.1:0"]
        tls = {"tls": {"certificate": str(pki / f"{domain}.crt"), "key": str(pki / f"{domain}.key"),
                       "ca": str(pki / "ca.crt")}}
    return {
        **tls,
        "region": {"name": name, "domain": domain, "listen": listen, "database": f"{name}.sqlite3"},
        "peers": [{"domain": f"{peer}.gamesdk.test", "address": "udp:127.0.0.1:9"}],  # set once both run
        "access_networks": [{
            "name": f"{name}-fiber", "prefixes": ["127.0.0.0/8"], "uplink_kbps": uplink,
            "downlink_kbps": access_kbps if access_kbps is not None else 100_000,
            "rtt_ms": 5 if name == "eu" else 8, "jitter_ms": 1, "loss_ppm": 100, "max_sessions": 1000,
        }],
        "classes": [
            {"name": "action", "priority": 10, "max_share": 0.5, "default": True},
            {"name": "strategy", "priority": 5, "max_share": 0.3},
        ],
        "tariff": {"currency": "EUR", "action": {"per_minute": 0.02, "per_kbps_minute": 0.0001},
                   "strategy": {"per_minute": 0.01, "per_kbps_minute": 0.00005}},
    }


@dataclass
class LocalSession:
    """A ``SessionHandle`` owning the two embedded servers and both players' links."""

    host_link: GamesdkLink
    guest_link: GamesdkLink
    servers: dict[str, EmbeddedServer]
    workdir: Path
    #: With --web: keep the servers (and the site) up this long after the match, to read the history there.
    linger_s: float = 0.0

    def pump(self, now: float) -> None:
        """The servers run in their own threads and each link polls its own client: nothing to do here."""

    def finish(self, out: TextIO) -> None:
        """Hang up, let the BYE and the 'terminated' PUBLISHes land, stop the servers, print the billing."""
        # The host hangs up; the guest's BYE arrives at the guest and ends its side (billed bye-remote there).
        self.host_link.close("match over")
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # keep both SIP stacks answering while the teardown completes
            now = time.monotonic()
            for link in (self.host_link, self.guest_link):
                link.poll(now)
            time.sleep(0.01)
        self.guest_link.close("match over")  # a no-op unless the BYE never arrived
        for link in (self.host_link, self.guest_link):
            link.shutdown(time.monotonic())
        time.sleep(0.2)
        if self.linger_s > 0:
            out.write(f"match over: the web site stays up {self.linger_s:g} s more (match history, console)\n")
            out.flush()
            time.sleep(self.linger_s)
        for server in self.servers.values():
            server.stop_thread()
        for name, server in self.servers.items():
            rows = billing_rows(server.config.database)
            out.write(f"billing records of region {name} ({server.config.database.name}):\n")
            out.write(billing_list_text(rows) if rows else "  (none: no session was confirmed)\n")
            out.write("\n" if not billing_list_text(rows).endswith("\n") and rows else "")
        shutil.rmtree(self.workdir, ignore_errors=True)


def _start(name: str, peer: str, workdir: Path, access_kbps: int | None, pki: Path | None,
           web_port: int | None = None) -> EmbeddedServer:
    mapping = region_mapping(name, peer, access_kbps=access_kbps, pki=pki)
    if web_port is not None:
        mapping["web"] = {"listen": f"http://127.0.0.1:{web_port}"}
    config = ServerConfig.from_mapping(mapping, base_dir=workdir)
    server = EmbeddedServer(config, port=0, host="127.0.0.1", web_port=web_port)
    server.start_in_thread()
    return server


def setup_local_session(args: argparse.Namespace, out: TextIO) -> LocalSession:
    """Start eu and na, create alice (eu) and bob (na), and return their links; alice invites bob."""
    workdir = Path(tempfile.mkdtemp(prefix="gamesdk-demo-"))
    host_user = args.user or "alice"
    guest_user = args.peer or "bob"
    # Players reach their regions over TLS with certificates made on the fly (a local CA in the work folder);
    # the regions sign identities that bind the channel keys, and the players check them (docs/security.md).
    pki: Path | None = None
    if not getattr(args, "no_tls", False):
        pki = workdir / "pki"
        make_test_pki(pki, ("eu.gamesdk.test", "na.gamesdk.test"))
    web_port = getattr(args, "web_port", 8080) if getattr(args, "web", False) else None
    servers = {
        "eu": _start("eu", "na", workdir, args.access_kbps, pki, web_port),
        "na": _start("na", "eu", workdir, None, pki),
    }
    servers["eu"].set_peer("na.gamesdk.test", servers["na"].address)
    servers["na"].set_peer("eu.gamesdk.test", servers["eu"].address)
    servers["eu"].add_user(host_user, PASSWORDS.get(host_user, f"{host_user}-demo-pw"))
    servers["na"].add_user(guest_user, PASSWORDS.get(guest_user, f"{guest_user}-demo-pw"))
    for name, server in servers.items():
        address, port = server.address
        tls_text = f", tls:{server.tls_address[0]}:{server.tls_address[1]}" if server.tls_address else ""
        out.write(f"region {name}: regional server {server.config.domain} on udp:{address}:{port}{tls_text} "
                  f"(policy embedded, database {server.config.database})\n")
    if pki is not None:
        out.write(f"players log in over TLS (RFC 5626 outbound) with certificates made on the fly in {pki}; "
                  f"the regions sign identities binding the channel keys (RFC 8224)\n")
    site = servers["eu"].web
    if site is not None:
        servers["eu"].add_user("op", PASSWORDS["op"], admin=True)
        out.write(f"web lobby of region eu: {site.url}/  log in as {host_user} / "
                  f"{PASSWORDS.get(host_user, host_user + '-demo-pw')} (operator console: op / {PASSWORDS['op']})\n"
                  f"{host_user}'s game waits: invite {guest_user}@na.gamesdk.test from the page to start the match\n")
        out.flush()

    if args.sim_latency_ms or args.sim_jitter_ms or args.sim_loss:
        out.write(f"channel simulator: each player's game packets get +{args.sim_latency_ms:g} ms one way, "
                  f"{args.sim_jitter_ms:g} ms jitter, {args.sim_loss:.1%} loss (a long-haul path; "
                  f"--sim-latency-ms 0 for bare loopback)\n")

    def client(user: str, region: str, seed: int) -> gamesdk.PollingClient:
        tls_address = servers[region].tls_address
        server: gamesdk.Address | str = servers[region].address
        if pki is not None and tls_address is not None:
            server = f"tls:{tls_address[0]}:{tls_address[1]}"
        config = gamesdk.ClientConfig(username=user, password=PASSWORDS.get(user, f"{user}-demo-pw"),
                                      domain=f"{region}.gamesdk.test", server=server,
                                      ca=pki / "ca.crt" if pki is not None else None)
        simulator = None
        if args.sim_latency_ms or args.sim_jitter_ms or args.sim_loss:
            # Each player's outgoing game packets cross their own simulated path (one-way delay, jitter, loss).
            sim = gamesdk.testing.SimulatorConfig(latency_s=args.sim_latency_ms / 1000, jitter_s=args.sim_jitter_ms / 1000,
                                          loss=args.sim_loss, seed=seed)
            simulator = (gamesdk.testing.NetworkSimulator(sim), None)
        return gamesdk.PollingClient(config, simulator=simulator)

    guest = GamesdkLink(client(guest_user, "na", args.seed * 2 + 2))
    host = GamesdkLink(
        client(host_user, "eu", args.seed * 2 + 1),
        invite=None if site is not None else invite_request_from_args(args, f"{guest_user}@na.gamesdk.test"),
        may_invite=lambda: guest.registered,
        accept_web_invites=site is not None,
    )
    return LocalSession(host_link=host, guest_link=guest, servers=servers, workdir=workdir,
                        linger_s=float(getattr(args, "web_linger_s", 0.0)) if site is not None else 0.0)
