"""The developer's protocol trace: one switch logs every SIP message and channel event."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from regions import Regions, running_regions

from gamesdk import ClientConfig, GameSession


def test_trace_switch_logs_sip_and_channel_events(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(regions: Regions) -> None:
        alice = regions.client("alice", trace=True)
        bob = regions.client("bob")

        async def answer() -> GameSession:
            await bob.login()
            return await (await bob.next_invite()).accept()

        await alice.login()
        callee = asyncio.create_task(answer())
        await asyncio.sleep(0.2)
        session = await alice.invite("bob@na.gamesdk.test")
        await callee
        await session.end(linger_s=0)
        await alice.close()
        await bob.close()

    async def main() -> None:
        async with running_regions(tmp_path) as regions:
            await scenario(regions)

    with caplog.at_level(logging.INFO, logger="gamesdk.trace"):
        asyncio.run(asyncio.wait_for(main(), 20.0))
    lines = [r.getMessage() for r in caplog.records if r.name == "gamesdk.trace"]
    assert any(line.startswith("SIP -> ") and "\nREGISTER sip:" in line for line in lines)
    assert any(line.startswith("SIP <- ") and "SIP/2.0 200 OK" in line for line in lines)
    assert any(line.startswith("SIP -> ") and "\nINVITE sip:bob@na.gamesdk.test" in line for line in lines)
    assert any("ChannelClosed" in line for line in lines)


def test_the_environment_switches_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAMESDK_TRACE", "1")
    assert ClientConfig(username="a", password="p", domain="eu.gamesdk.test", server=("127.0.0.1", 5060)).trace
    monkeypatch.setenv("GAMESDK_TRACE", "0")
    assert not ClientConfig(username="a", password="p", domain="eu.gamesdk.test", server=("127.0.0.1", 5060)).trace
