"""Two real regional servers (eu and na from examples/) on free loopback ports, for SDK tests."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from gamesdk import ClientConfig, GameClient
from gamesdk.lowlevel import TimerConfig
from server.config import ServerConfig, load_config
from server.io import EmbeddedServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
USERS = {"eu": {"alice": "alice-pw", "carol": "carol-pw"}, "na": {"bob": "bob-pw", "dave": "dave-pw"}}
DOMAINS = {"eu": "eu.gamesdk.test", "na": "na.gamesdk.test"}
#: Fast SIP timers so timeouts in tests take seconds, not half a minute (Timer F = 64*T1 = 3.2 s).
FAST_TIMERS = TimerConfig(t1=0.05, t2=0.4, t4=0.5)


def region_config(region: str, tmp: Path, **changes: Any) -> ServerConfig:
    config = load_config(EXAMPLES / f"{region}.toml")
    return dataclasses.replace(config, database=tmp / f"{region}.sqlite3", **changes)


@dataclasses.dataclass
class Regions:
    eu: EmbeddedServer
    na: EmbeddedServer

    def server(self, region: str) -> EmbeddedServer:
        return self.eu if region == "eu" else self.na

    def client_config(self, user: str, **changes: Any) -> ClientConfig:
        region = "eu" if user in USERS["eu"] else "na"
        password = changes.pop("password", USERS[region][user])
        return ClientConfig(
            username=user, password=password, domain=DOMAINS[region], server=self.server(region).address, **changes
        )

    def client(self, user: str, **changes: Any) -> GameClient:
        client_kwargs = {k: changes.pop(k) for k in ("channel_config", "on_invite", "simulator") if k in changes}
        return GameClient(self.client_config(user, **changes), **client_kwargs)


def add_users(eu: EmbeddedServer, na: EmbeddedServer) -> None:
    for region, server in (("eu", eu), ("na", na)):
        for name, password in USERS[region].items():
            server.add_user(name, password)


@asynccontextmanager
async def running_regions(tmp: Path, **changes: Any) -> AsyncIterator[Regions]:
    """Start eu and na (example configs, temp databases), federate them, create the test players."""
    eu = EmbeddedServer(region_config("eu", tmp, **changes.get("eu", {})), port=0)
    na = EmbeddedServer(region_config("na", tmp, **changes.get("na", {})), port=0)
    await eu.start()
    await na.start()
    try:
        eu.set_peer(DOMAINS["na"], na.address)
        na.set_peer(DOMAINS["eu"], eu.address)
        add_users(eu, na)
        yield Regions(eu=eu, na=na)
    finally:
        await eu.stop()
        await na.stop()


@contextmanager
def threaded_regions(tmp: Path) -> Iterator[tuple[EmbeddedServer, EmbeddedServer]]:
    """eu and na on their own threads (for players that do not run asyncio), federated, with the players."""
    eu = EmbeddedServer(region_config("eu", tmp), port=0)
    na = EmbeddedServer(region_config("na", tmp), port=0)
    eu.start_in_thread()
    na.start_in_thread()
    try:
        eu.set_peer(DOMAINS["na"], na.address)
        na.set_peer(DOMAINS["eu"], eu.address)
        add_users(eu, na)
        yield eu, na
    finally:
        eu.stop_thread()
        na.stop_thread()
