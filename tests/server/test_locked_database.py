"""Another process holds the region database (``BEGIN EXCLUSIVE``, as a backup or an operator's query would): the
server keeps answering SIP while the registrations it has to write wait for the database on their own thread,
and they are written, not lost, once the lock goes."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import sqlite3
import threading
from pathlib import Path

from gamesdk import ClientConfig, GameClient
from server.config import load_config
from server.io import REGISTRATION_FLUSH_S, EmbeddedServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _options_answered(address: tuple[str, int], wait_s: float) -> bool:
    """An OPTIONS from a blocking socket (a thread of its own: a stalled server loop cannot hide it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        probe.settimeout(wait_s)
        port = probe.getsockname()[1]
        probe.sendto((f"OPTIONS sip:eu.gamesdk.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKdb1"
                      "\r\nMax-Forwards: 70\r\nFrom: <sip:probe@eu.gamesdk.test>;tag=p\r\nTo: <sip:eu.gamesdk.test>"
                      "\r\nCall-ID: db-lock-probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(), address)
        try:
            return probe.recv(4096).startswith(b"SIP/2.0 200")
        except TimeoutError:
            return False


def _registered(db: Path, aor: str) -> bool:
    conn = sqlite3.connect(db, timeout=0.1)
    try:
        return conn.execute("SELECT COUNT(*) FROM registrations WHERE aor = ?", (aor,)).fetchone()[0] > 0
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def test_a_locked_database_neither_stalls_sip_nor_loses_a_registration(tmp_path: Path) -> None:
    db = tmp_path / "eu.sqlite3"
    config = dataclasses.replace(load_config(EXAMPLES / "eu.toml"), database=db)
    results: list[bool] = []

    async def main() -> None:
        server = EmbeddedServer(config, port=0)
        await server.start()
        server.add_user("carol", "carol-pw")
        locker = sqlite3.connect(db, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        locked = True
        client = GameClient(ClientConfig(username="carol", password="carol-pw", domain="eu.gamesdk.test",
                                         server=server.address))
        try:
            await client.login()  # a new binding: the next flush has to write it into the locked database
            # Probe after a flush has surely started (a loop that waited on SQLite's busy handler would hold
            # the OPTIONS for up to 5 s), from a thread so the probe does not need the server's loop.
            probe = threading.Thread(target=lambda: (threading.Event().wait(1.5 * REGISTRATION_FLUSH_S),
                                                     results.append(_options_answered(server.address, 2.0))))
            probe.start()
            while probe.is_alive():  # bounded: the probe waits at most 1.5 x flush + 2 s
                await asyncio.sleep(0.05)
            assert not _registered(db, "sip:carol@eu.gamesdk.test")  # still locked: nothing written yet
            locker.execute("ROLLBACK")
            locked = False
            for _ in range(100):  # bounded: the writer retries with backoff (at most 2 s apart)
                if _registered(db, "sip:carol@eu.gamesdk.test"):
                    break
                await asyncio.sleep(0.05)
            results.append(_registered(db, "sip:carol@eu.gamesdk.test"))
        finally:
            if locked:
                locker.execute("ROLLBACK")
            locker.close()
            await client.close()
            await server.stop()

    asyncio.run(asyncio.wait_for(main(), 30))
    assert results == [True, True]  # OPTIONS answered during the lock; the registration written after it
