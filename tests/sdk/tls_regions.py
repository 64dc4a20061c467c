"""eu and na listening on udp: and tls: with certificates made on the fly (a local CA in the test's folder)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from regions import DOMAINS, USERS, Regions, add_users, region_config

from gamesdk import ClientConfig
from server.certs import make_test_pki
from server.config import ListenAddress, ServerConfig
from server.io import EmbeddedServer
from server.tls_config import TlsConfig


def tls_config(region: str, tmp: Path, **tls: Any) -> ServerConfig:
    pki = tmp / "pki"
    if not (pki / "ca.crt").exists():
        make_test_pki(pki, tuple(DOMAINS.values()))
    domain = DOMAINS[region]
    settings = dataclasses.replace(TlsConfig(certificate=pki / f"{domain}.crt", key=pki / f"{domain}.key",
                                             ca=pki / "ca.crt"), **tls)
    return region_config(region, tmp, tls=settings, listen_more=(ListenAddress("tls", "127.0.0.1", 0),))


@dataclasses.dataclass
class TlsRegions(Regions):
    tmp: Path = Path()

    def client_config(self, user: str, **changes: Any) -> ClientConfig:
        region = "eu" if user in USERS["eu"] else "na"
        address = self.server(region).tls_address
        assert address is not None
        return ClientConfig(username=user, password=changes.pop("password", USERS[region][user]),
                            domain=DOMAINS[region], server=f"tls:{address[0]}:{address[1]}",
                            ca=self.tmp / "pki" / "ca.crt", **changes)


@asynccontextmanager
async def running_tls_regions(tmp: Path, **tls: Any) -> AsyncIterator[TlsRegions]:
    eu = EmbeddedServer(tls_config("eu", tmp, **tls), port=0)
    na = EmbeddedServer(tls_config("na", tmp, **tls), port=0)
    await eu.start()
    await na.start()
    try:
        eu.set_peer(DOMAINS["na"], na.address)
        na.set_peer(DOMAINS["eu"], eu.address)
        add_users(eu, na)
        yield TlsRegions(eu=eu, na=na, tmp=tmp)
    finally:
        await eu.stop()
        await na.stop()
