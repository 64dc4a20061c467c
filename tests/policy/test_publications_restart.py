"""The players' dialog publications (RFC 3903 entity-tags) survive a restart of their region: a refresh sent with
the tag the old process gave still matches, so a session that outlives the restart is neither refused 412 nor
billed as a new publication."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gamesdk import ClientConfig, GameClient, GameSession
from server.io import EmbeddedServer
from server.policy.hooks import RegionPolicyHooks

from .test_region_hooks import DOMAINS, Region, active, hooks_for, peered_regions, region_config


def _hooks(server: EmbeddedServer) -> RegionPolicyHooks:
    assert server.node is not None and isinstance(server.node.hooks, RegionPolicyHooks)
    return server.node.hooks


def test_entity_tags_are_kept_across_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        eu_config, na_config = region_config("eu", tmp_path), region_config("na", tmp_path)
        eu, na = await peered_regions(eu_config, na_config)
        restarted: EmbeddedServer | None = None
        alice = GameClient(ClientConfig(username="alice", password="alice-pw", domain=DOMAINS["eu"],
                                        server=eu.address))
        bob = GameClient(ClientConfig(username="bob", password="bob-pw", domain=DOMAINS["na"], server=na.address))
        try:
            await alice.login()
            await bob.login()

            async def answer() -> GameSession:
                return await (await bob.next_invite()).accept()

            callee = asyncio.create_task(answer())
            session = await alice.invite("bob@na.gamesdk.test", latency_ms=80, bandwidth_kbps=64)
            await callee
            await Region(eu).until(active, "alice's confirmed reservation")
            [before] = _hooks(eu).publications.of("sip:alice@eu.gamesdk.test")
            port = eu.address[1]
            await eu.stop()  # a restart (the same database, the same port)
            restarted = EmbeddedServer(eu_config, port=port, hooks_factory=hooks_for(eu_config))
            await restarted.start()
            after = _hooks(restarted).publications.get(before.etag)
            assert after is not None and after.aor == before.aor and after.info == before.info
            await session.end("game over")
        finally:
            await alice.close()
            await bob.close()
            for server in (restarted, na):
                if server is not None:
                    await server.stop()

    asyncio.run(asyncio.wait_for(main(), 30))
