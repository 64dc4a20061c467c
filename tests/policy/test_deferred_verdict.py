"""A region whose policy is a separate process (``[policy] url``) never waits for it on the signalling loop.

The policy process here holds its PRELIMINARY decision until the test has seen the region answer other requests
(an OPTIONS from a raw socket, a third player's digest login), so the test fails on order, not on time: a region
that blocked on the policy call could only answer them after the decision came back.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gamesdk import ClientConfig, GameClient, GameSession, SessionError
from server.policy import PolicyConfig, PolicyServer
from server.policy.cli_support import billing_rows
from server.policy.http import PolicyHttpService
from server.policy.runner import build_policy_server, policy_document

from .test_region_hooks import DOMAINS, POLICY_TOKEN, Region, region_config, run

#: Longest the policy process holds its decision: well under the client's deadline below, so a region that
#: blocked still gets its answer (and the test fails on the order of events, not on a timeout).
HOLD_S = 6.0


class HeldPreliminary:
    """A policy server whose ``preliminary`` is ``held``; everything else is the real server's."""

    def __init__(self, policy: PolicyServer, held: Callable[..., Any]) -> None:
        self._policy = policy
        self.preliminary = held

    def __getattr__(self, name: str) -> Any:
        return getattr(self._policy, name)


class _PolicyProcess:
    """A real policy HTTP service on its own loop thread; its PRELIMINARY waits for ``release`` once."""

    def __init__(self, tmp_path: Path) -> None:
        self.asked = threading.Event()
        self.release = threading.Event()
        #: Set once the held decision went back to the region.
        self.answered = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        config = region_config("eu", tmp_path)

        async def start() -> tuple[PolicyServer, PolicyHttpService, tuple[str, int]]:
            policy = build_policy_server(PolicyConfig.from_mapping(policy_document(config)),
                                         tmp_path / "eu-policy.sqlite3", region="eu")
            service = PolicyHttpService(policy, token=POLICY_TOKEN)
            return policy, service, await service.start("127.0.0.1", 0)

        self.policy, self.service, self.address = asyncio.run_coroutine_threadsafe(start(), self.loop).result(5)
        preliminary = self.policy.preliminary

        def held(request: Any, now: float, **kw: Any) -> Any:
            if not self.asked.is_set():
                self.asked.set()
                self.release.wait(HOLD_S)  # blocks the policy process only (its own thread)
                try:
                    return preliminary(request, now, **kw)
                finally:
                    self.answered.set()
            return preliminary(request, now, **kw)

        # The service asks a stand-in with the held preliminary (a compiled PolicyServer refuses instance patches).
        self.service.policy = HeldPreliminary(self.policy, held)  # type: ignore[assignment]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.address[1]}"

    def close(self) -> None:
        self.release.set()
        asyncio.run_coroutine_threadsafe(self.service.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


async def _options(address: tuple[str, int]) -> bytes:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    probe.setblocking(False)
    port = probe.getsockname()[1]
    try:
        probe.sendto((f"OPTIONS sip:eu.gamesdk.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKdv1"
                      "\r\nMax-Forwards: 70\r\nFrom: <sip:probe@eu.gamesdk.test>;tag=p\r\nTo: <sip:eu.gamesdk.test>"
                      "\r\nCall-ID: deferred-probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(), address)
        return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(probe, 4096), HOLD_S + 5)
    finally:
        probe.close()


def test_a_slow_policy_process_delays_only_the_invite_that_needs_it(tmp_path: Path) -> None:
    process = _PolicyProcess(tmp_path)
    seen_while_held: list[str] = []

    async def scenario(eu: Region, na: Region, alice: GameClient, bob: GameClient) -> None:
        async def answer() -> GameSession:
            return await (await bob.next_invite()).accept()

        callee = asyncio.create_task(answer())
        invite = asyncio.create_task(alice.invite("bob@na.gamesdk.test", latency_ms=80, bandwidth_kbps=64))
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, process.asked.wait, 10.0), "the INVITE never reached the policy"
        try:
            reply = await _options(eu.server.address)
            if not process.answered.is_set() and reply.startswith(b"SIP/2.0 200"):
                seen_while_held.append("OPTIONS")
            eu.server.add_user("carol", "carol-pw")
            carol = GameClient(ClientConfig(username="carol", password="carol-pw", domain=DOMAINS["eu"],
                                            server=eu.server.address))
            await carol.login()  # REGISTER, 401, REGISTER with digest, 200
            if not process.answered.is_set():
                seen_while_held.append("REGISTER")
            await carol.close()
        finally:
            process.release.set()
        session = await invite
        await callee
        assert {r.region for r in session.agreement.reservations} == {"eu.gamesdk.test", "na.gamesdk.test"}
        await session.end("game over")
        for _ in range(300):  # bounded wait for the terminated PUBLISH to reach the policy process
            if process.policy.is_idle():
                break
            await asyncio.sleep(0.01)
        assert process.policy.is_idle()
        assert seen_while_held == ["OPTIONS", "REGISTER"]
        assert eu.server.node is not None and eu.server.node.proxy.stats.policy_queries >= 2

    try:
        run(tmp_path, scenario, eu_policy_url=process.url, eu_policy_timeout_s=HOLD_S + 4)
    finally:
        process.close()
    assert seen_while_held == ["OPTIONS", "REGISTER"]
    [row] = billing_rows(tmp_path / "eu-policy.sqlite3")
    assert (row.side, row.end_reason) == ("orig", "bye-local")


def test_a_full_query_table_answers_503_with_retry_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Back-pressure: with no room for another policy query the INVITE is answered at once 503 + Retry-After
    (not left waiting, not refused as if the session could not fit)."""
    import server.io

    process = _PolicyProcess(tmp_path)
    process.release.set()
    monkeypatch.setattr(server.io, "MAX_POLICY_QUERIES", 0)
    refused: list[SessionError] = []

    async def scenario(eu: Region, na: Region, alice: GameClient, bob: GameClient) -> None:
        with pytest.raises(SessionError) as caught:
            await alice.invite("bob@na.gamesdk.test", latency_ms=80, bandwidth_kbps=64)
        refused.append(caught.value)

    try:
        run(tmp_path, scenario, eu_policy_url=process.url)
    finally:
        process.close()
    [error] = refused
    assert error.status == 503 and not process.asked.is_set()
