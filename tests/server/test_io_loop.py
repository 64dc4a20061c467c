"""The UDP driver reads several datagrams per wake-up and re-arms its timer once per batch, on a real socket."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path

from server_kit import EXAMPLES

from gamesdk.sip.parser import parse_message_untrusted
from server.config import load_config
from server.io import READ_BATCH, EmbeddedServer

PINGS = 40


def _options(i: int, port: int) -> bytes:
    return (f"OPTIONS sip:eu.gamesdk.test SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-batch-{i};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:probe@eu.gamesdk.test>;tag=p{i}\r\nTo: <sip:eu.gamesdk.test>\r\n"
            f"Call-ID: batch-{i}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


async def _burst(config_path: Path, tmp_path: Path) -> tuple[int, int, int]:
    config = dataclasses.replace(load_config(config_path), database=tmp_path / "eu.sqlite3")
    server = EmbeddedServer(config, port=0, policy=False)
    await server.start()
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    probe.setblocking(False)
    rearms = 0
    try:
        protocol = server.protocol
        assert protocol is not None
        original = protocol._rearm

        def counting() -> None:
            nonlocal rearms
            rearms += 1
            original()

        protocol._rearm = counting  # type: ignore[method-assign]
        # Every datagram is in the socket's queue before the loop wakes up once.
        for i in range(PINGS):
            probe.sendto(_options(i, probe.getsockname()[1]), server.address)
        answers = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while answers < PINGS and loop.time() < deadline:
            try:
                data = probe.recv(65535)
            except BlockingIOError:
                await asyncio.sleep(0.01)
                continue
            response = parse_message_untrusted(data)
            assert response.status == 200  # type: ignore[union-attr]
            answers += 1
        return answers, protocol.batched_reads, rearms
    finally:
        probe.close()
        await server.stop()


def test_a_burst_is_read_in_batches_on_the_selector_loop(tmp_path: Path) -> None:
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        answers, batched, rearms = runner.run(_burst(EXAMPLES / "eu.toml", tmp_path))
    assert answers == PINGS
    # The first datagram comes through the transport; the driver reads the rest of the burst itself.
    assert batched >= min(PINGS, READ_BATCH) - 1
    # One timer re-arm per batch, not per datagram.
    assert rearms < PINGS // 4
