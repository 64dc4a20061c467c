"""Helpers for the web tests: a region with its web site on free loopback ports, and a logged-in HTTP client."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import aiohttp

from server.config import ServerConfig
from server.io import EmbeddedServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PASSWORDS = {"alice": "alice-password", "bob": "bob-password", "op": "operator-password"}


def region_doc(name: str, tmp_path: Path) -> dict[str, Any]:
    doc = tomllib.loads((EXAMPLES / f"{name}.toml").read_text(encoding="utf-8"))
    doc["region"]["database"] = str(tmp_path / f"{name}.sqlite3")
    doc["region"]["listen"] = "udp:127.0.0.1:0"
    doc["auth"].update({"delay_step_s": 0.01, "max_delay_s": 0.02})
    doc["web"] = {"listen": "http://127.0.0.1:0", "session_ttl_s": 600, "formats": [
        {"format": "pong/1;tick=60", "classification": "action", "latency_ms": 150, "jitter_ms": 30,
         "loss_ppm": 20000, "bandwidth_kbps": 64},
        {"format": "chess/1", "classification": "strategy", "latency_ms": 2000, "jitter_ms": 500,
         "loss_ppm": 50000, "bandwidth_kbps": 8},
    ]}
    return doc


async def start_region(name: str, tmp_path: Path, doc: dict[str, Any] | None = None,
                       users: tuple[str, ...] = ("alice", "op")) -> EmbeddedServer:
    config = ServerConfig.from_mapping(doc or region_doc(name, tmp_path), tmp_path)
    server = EmbeddedServer(config, port=0)
    for user in users:
        server.accounts.add(user, PASSWORDS[user], now=0.0, admin=user == "op")  # type: ignore[attr-defined]
    await server.start()
    return server


def site_url(server: EmbeddedServer) -> str:
    assert server.web is not None
    return str(server.web.url)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def client() -> aiohttp.ClientSession:
    # unsafe=True: keep cookies of an IP-address host (the site runs on 127.0.0.1)
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def login(http: aiohttp.ClientSession, url: str, user: str, password: str | None = None) -> aiohttp.ClientResponse:
    async with http.get(f"{url}/login") as page:
        token = csrf_of(await page.text())
    return await http.post(f"{url}/login", data={"csrf": token, "user": user,
                                                 "password": PASSWORDS[user] if password is None else password},
                           allow_redirects=False)


async def page_csrf(http: aiohttp.ClientSession, url: str, path: str = "/") -> str:
    async with http.get(url + path) as page:
        assert page.status == 200, page.status
        return csrf_of(await page.text())


DOMAINS = {"eu": "eu.gamesdk.test", "na": "na.gamesdk.test"}


async def two_regions(tmp_path: Path, na_uplink_kbps: int | None = None) -> tuple[EmbeddedServer, EmbeddedServer]:
    """eu (with its web site: alice, op) and na (bob), federated on free loopback ports."""
    eu = await start_region("eu", tmp_path)
    na_doc = region_doc("na", tmp_path)
    del na_doc["web"]
    if na_uplink_kbps is not None:
        for net in na_doc["access_networks"]:
            net["uplink_kbps"] = na_uplink_kbps
    na = await start_region("na", tmp_path, na_doc, users=("bob",))
    eu.set_peer(DOMAINS["na"], na.address)
    na.set_peer(DOMAINS["eu"], eu.address)
    return eu, na


async def sse_steps(http: aiohttp.ClientSession, url: str, ref: str,
                    last_event_id: str | None = None) -> list[dict[str, Any]]:
    """Every step of a web invite from its server-sent events, until the stream ends (after ``last_event_id``
    when given, as a reconnecting EventSource asks)."""
    import json

    steps: list[dict[str, Any]] = []
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    async with http.get(f"{url}/invites/{ref}/events", headers=headers) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        event = "message"
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:") and event == "message":
                steps.append(json.loads(line.partition(":")[2]))
            elif line.startswith("data:"):
                break
            elif not line:
                event = "message"
    return steps
