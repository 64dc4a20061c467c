"""The invite from the web: REFER to the player's own client, the client invites, NOTIFY progress on the page."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
from web_kit import DOMAINS, PASSWORDS, client, login, page_csrf, site_url, sse_steps, two_regions

from gamesdk import ClientConfig, GameClient, SessionError
from gamesdk.sip.message import Response
from gamesdk.sip.parser import parse_message_untrusted


def player(name: str, region: str, server: Any) -> GameClient:
    return GameClient(ClientConfig(username=name, password=PASSWORDS[name], domain=DOMAINS[region],
                                   server=server.address))


async def web_invite(url: str, http: Any, target: str, **fields: str) -> str:
    token = await page_csrf(http, url)
    data = {"csrf": token, "target": target, "format": "pong/1;tick=60", "classification": "action",
            "latency_ms": "150", "jitter_ms": "30", "loss_ppm": "20000", "bandwidth_kbps": "64", **fields}
    async with http.post(f"{url}/invite", data=data, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        return resp.headers["Location"].rsplit("/", 1)[1]


def test_invite_from_the_web_starts_the_match_and_shows_each_step(tmp_path: Path) -> None:
    async def main() -> tuple[list[dict[str, Any]], dict[str, Any], str]:
        eu, na = await two_regions(tmp_path)
        alice, bob = player("alice", "eu", eu), player("bob", "na", na)
        try:
            await alice.login()
            await bob.login()
            url = site_url(eu)
            async with client() as http:
                await login(http, url, "alice")
                async with http.get(url + "/") as lobby:
                    assert "online</span>" in await lobby.text()
                ref = await web_invite(url, http, "bob@na.gamesdk.test")
                request = await asyncio.wait_for(alice.next_invite_request(), 10)
                calling = asyncio.create_task(request.accept())
                await (await bob.next_invite()).accept()
                session = await calling
                steps = await sse_steps(http, url, ref)
                # a reconnecting EventSource gets the steps after the last one it had, not all of them again
                resumed = [await sse_steps(http, url, ref, last_event_id=last) for last in ("3", "999", "junk")]
                await session.end("game over")
                for _ in range(300):  # bounded: the STOP of the billing record, ~3 s at most
                    async with http.get(url + "/history") as page:
                        history = await page.text()
                    if "bye-local" in history:
                        break
                    await asyncio.sleep(0.01)
            got = {"peer": request.peer, "requirements": request.requirements, "by": request.referred_by}
            assert resumed == [steps[3:], [], steps], resumed
            return steps, got, history
        finally:
            await alice.close()
            await bob.close()
            await eu.stop()
            await na.stop()

    steps, request, history = asyncio.run(asyncio.wait_for(main(), 60))
    assert request == {"peer": "bob@na.gamesdk.test", "by": "sip:alice@eu.gamesdk.test", "requirements": {
        "format": "pong/1;tick=60", "classification": "action", "latency_ms": 150, "jitter_ms": 30,
        "loss_ppm": 20000, "bandwidth_kbps": 64}}
    names = [s["step"] for s in steps]
    assert names[:3] == ["sent", "accepted", "trying"] and names[-1] == "established"
    reserved = {s["region"]: s["detail"] for s in steps if s["step"] == "reserved"}
    assert set(reserved) == {"eu.gamesdk.test", "na.gamesdk.test"}
    assert "up=64" in reserved["eu.gamesdk.test"]
    assert "sip:bob@na.gamesdk.test" in history and "bye-local" in history and "eu-fiber" in history


def test_a_refused_web_invite_shows_the_reason_and_the_region(tmp_path: Path) -> None:
    async def main() -> tuple[list[dict[str, Any]], int]:
        eu, na = await two_regions(tmp_path, na_uplink_kbps=10)
        alice, bob = player("alice", "eu", eu), player("bob", "na", na)
        try:
            await alice.login()
            await bob.login()
            url = site_url(eu)
            async with client() as http:
                await login(http, url, "alice")
                ref = await web_invite(url, http, "bob@na.gamesdk.test")
                request = await asyncio.wait_for(alice.next_invite_request(), 10)
                with pytest.raises(SessionError) as info:
                    await request.accept()
                return await sse_steps(http, url, ref), info.value.status
        finally:
            await alice.close()
            await bob.close()
            await eu.stop()
            await na.stop()

    steps, status = asyncio.run(asyncio.wait_for(main(), 60))
    final = steps[-1]
    assert final["step"] == "refused" and final["status"] == status == 580
    assert final["region"] == "na.gamesdk.test" and "uplink" in final["reason"]


def test_a_refer_from_anyone_but_the_registrar_is_refused(tmp_path: Path) -> None:
    """A REFER straight to the player's SIP socket (not from its registrar) gets 403; the game never sees it."""

    async def main() -> tuple[Response, int]:
        eu, na = await two_regions(tmp_path)
        alice = player("alice", "eu", eu)
        intruder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        intruder.bind(("127.0.0.1", 0))
        intruder.setblocking(False)
        try:
            await alice.login()
            host, port = alice.local_addr
            me = intruder.getsockname()
            refer = (
                f"REFER sip:alice@{host}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{me[1]};branch=z9hG4bK-intruder-1\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:web@eu.gamesdk.test>;tag=evil\r\n"
                "To: <sip:alice@eu.gamesdk.test>\r\nCall-ID: intruder-refer-1\r\nCSeq: 1 REFER\r\n"
                f"Contact: <sip:web@127.0.0.1:{me[1]}>\r\n"
                "Refer-To: <sip:mallory@na.gamesdk.test?Gsdk-Bandwidth=100000>\r\n"
                "Referred-By: <sip:alice@eu.gamesdk.test>\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            loop = asyncio.get_running_loop()
            await loop.sock_sendto(intruder, refer, (host, port))
            data = await asyncio.wait_for(loop.sock_recv(intruder, 65535), 10)
            message = parse_message_untrusted(data)
            assert isinstance(message, Response)
            await asyncio.sleep(0.05)
            return message, alice._invite_requests.qsize()
        finally:
            intruder.close()
            await alice.close()
            await eu.stop()
            await na.stop()

    response, queued = asyncio.run(asyncio.wait_for(main(), 30))
    assert response.status == 403 and "registrar" in response.reason
    assert queued == 0
